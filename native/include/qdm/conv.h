// Convolution kernels (NCHW, fp32, contiguous operands).
#pragma once
#include <cstdint>

#include "qdm/view.h"

namespace qdm::cpu {
struct ConvParams { int64_t strideH = 1, strideW = 1, padH = 0, padW = 0, dilH = 1, dilW = 1, groups = 1; };
int64_t convOutSize(int64_t in, int64_t k, int64_t stride, int64_t pad, int64_t dil);
void conv2dForward(const View& x, const View& w, const float* bias, const View& y, const ConvParams& p);
void conv2dBackwardInput(const View& gy, const View& w, const View& gx, const ConvParams& p);
void conv2dBackwardWeight(const View& x, const View& gy, const View& gw, const ConvParams& p);
}  // namespace qdm::cpu
