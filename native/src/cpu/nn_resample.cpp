// Nearest and bilinear resampling (PyTorch's interpolate semantics), forward and the adjoint.
// Backward accumulates per plane, and planes are independent, so it is deterministic.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "qdm/nn.h"
#include "qdm/parallel.h"

namespace qdm::cpu {

void upsampleNearest(const float* x, float* y, int64_t P, int64_t H, int64_t W, int64_t OH, int64_t OW, double scaleH, double scaleW, bool backward) {
  // forward: y[p, oh, ow] = x[p, min(floor(oh * scaleH), H-1), ...]; backward: x is the output grad (OH x OW), y the input grad (H x W)
  parallelFor(P, 1, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      if (!backward) {
        const float* xp = x + p * H * W; float* yp = y + p * OH * OW;
        for (int64_t oh = 0; oh < OH; ++oh) {
          int64_t ih = std::min<int64_t>(static_cast<int64_t>(std::floor(oh * scaleH)), H - 1);
          for (int64_t ow = 0; ow < OW; ++ow) yp[oh * OW + ow] = xp[ih * W + std::min<int64_t>(static_cast<int64_t>(std::floor(ow * scaleW)), W - 1)];
        }
      } else {
        const float* gp = x + p * OH * OW; float* gi = y + p * H * W;
        std::memset(gi, 0, sizeof(float) * H * W);
        for (int64_t oh = 0; oh < OH; ++oh) {
          int64_t ih = std::min<int64_t>(static_cast<int64_t>(std::floor(oh * scaleH)), H - 1);
          for (int64_t ow = 0; ow < OW; ++ow) gi[ih * W + std::min<int64_t>(static_cast<int64_t>(std::floor(ow * scaleW)), W - 1)] += gp[oh * OW + ow];
        }
      }
    }
  });
}

namespace {
inline void srcIndex(int64_t dst, int64_t in, double scale, bool align, int64_t& i0, int64_t& i1, float& l1) {
  double s = align ? dst * scale : std::max(0.0, (dst + 0.5) * scale - 0.5);
  i0 = std::min<int64_t>(static_cast<int64_t>(s), in - 1);
  i1 = std::min<int64_t>(i0 + 1, in - 1);
  l1 = static_cast<float>(s - i0);
}
}  // namespace

void upsampleBilinear(const float* x, float* y, int64_t P, int64_t H, int64_t W, int64_t OH, int64_t OW, double scaleH, double scaleW, bool align, bool backward) {
  parallelFor(P, 1, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      if (backward) std::memset(y + p * H * W, 0, sizeof(float) * H * W);
      for (int64_t oh = 0; oh < OH; ++oh) {
        int64_t h0, h1; float lh; srcIndex(oh, H, scaleH, align, h0, h1, lh);
        for (int64_t ow = 0; ow < OW; ++ow) {
          int64_t w0, w1; float lw; srcIndex(ow, W, scaleW, align, w0, w1, lw);
          const float a = (1 - lh) * (1 - lw), b = (1 - lh) * lw, c = lh * (1 - lw), d = lh * lw;
          if (!backward) {
            const float* xp = x + p * H * W;
            y[p * OH * OW + oh * OW + ow] = a * xp[h0 * W + w0] + b * xp[h0 * W + w1] + c * xp[h1 * W + w0] + d * xp[h1 * W + w1];
          } else {
            const float g = x[p * OH * OW + oh * OW + ow];
            float* gp = y + p * H * W;
            gp[h0 * W + w0] += a * g; gp[h0 * W + w1] += b * g; gp[h1 * W + w0] += c * g; gp[h1 * W + w1] += d * g;
          }
        }
      }
    }
  });
}

}  // namespace qdm::cpu
