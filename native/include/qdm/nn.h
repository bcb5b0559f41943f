// Normalisation, softmax, resampling and row-indexing kernels (fp32, contiguous operands).
#pragma once
#include <cstdint>

#include "qdm/view.h"

namespace qdm::cpu {
// x, y: [N, C, S]; weight/bias [C] or null; mean/rstd: [N, G] (written)
void groupNormForward(const float* x, const float* w, const float* b, float* y, float* mean, float* rstd, int64_t N, int64_t C, int64_t S, int64_t G, float eps);
// gx: [N, C, S]; gw/gb: [C] or null
void groupNormBackward(const float* x, const float* gy, const float* w, const float* mean, const float* rstd, float* gx, float* gw, float* gb, int64_t N, int64_t C, int64_t S, int64_t G);
// rows of length D
void layerNormForward(const float* x, const float* w, const float* b, float* y, float* mean, float* rstd, int64_t M, int64_t D, float eps);
void layerNormBackward(const float* x, const float* gy, const float* w, const float* mean, const float* rstd, float* gx, float* gw, float* gb, int64_t M, int64_t D);
void softmaxForward(const float* x, float* y, int64_t M, int64_t D, bool log);
void softmaxBackward(const float* y, const float* gy, float* gx, int64_t M, int64_t D, bool log);
// planes [P, H, W] -> [P, OH, OW]; scale = source pixels per output pixel
void upsampleNearest(const float* x, float* y, int64_t P, int64_t H, int64_t W, int64_t OH, int64_t OW, double scaleH, double scaleW, bool backward);
void upsampleBilinear(const float* x, float* y, int64_t P, int64_t H, int64_t W, int64_t OH, int64_t OW, double scaleH, double scaleW, bool alignCorners, bool backward);
// out[k, :] = src[idx[k], :]; backward: out[idx[k], :] += src[k, :]
void indexRows(const View& src, const View& idx, const View& out, int64_t rows);
void indexAddRows(const View& src, const View& idx, const View& out, int64_t rows);
}  // namespace qdm::cpu
