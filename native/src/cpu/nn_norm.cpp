// Group norm, layer norm and softmax, forward and backward. Statistics use double
// accumulators in a fixed order; parameter gradients are reduced over fixed row chunks and
// summed in order, so every result is independent of the thread count.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "qdm/nn.h"
#include "qdm/parallel.h"

namespace qdm::cpu {

void groupNormForward(const float* x, const float* w, const float* b, float* y, float* mean, float* rstd, int64_t N, int64_t C, int64_t S, int64_t G, float eps) {
  const int64_t Cg = C / G, len = Cg * S;
  parallelFor(N * G, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t n = t / G, g = t % G;
      const float* xs = x + (n * C + g * Cg) * S;
      double s = 0;
      for (int64_t i = 0; i < len; ++i) s += xs[i];
      double mu = s / len, v = 0;
      for (int64_t i = 0; i < len; ++i) { double d = xs[i] - mu; v += d * d; }
      double r = 1.0 / std::sqrt(v / len + eps);
      mean[t] = static_cast<float>(mu); rstd[t] = static_cast<float>(r);
      float* ys = y + (n * C + g * Cg) * S;
      for (int64_t c = 0; c < Cg; ++c) {
        const int64_t ch = g * Cg + c;
        const float a = static_cast<float>(r) * (w ? w[ch] : 1.0f);
        const float sh = (b ? b[ch] : 0.0f) - static_cast<float>(mu) * a;
        const float* xr = xs + c * S; float* yr = ys + c * S;
        for (int64_t i = 0; i < S; ++i) yr[i] = xr[i] * a + sh;
      }
    }
  });
}

void groupNormBackward(const float* x, const float* gy, const float* w, const float* mean, const float* rstd, float* gx, float* gw, float* gb, int64_t N, int64_t C, int64_t S, int64_t G) {
  const int64_t Cg = C / G, len = Cg * S;
  parallelFor(N * G, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t n = t / G, g = t % G;
      const float mu = mean[t], r = rstd[t];
      const float* xs = x + (n * C + g * Cg) * S;
      const float* gs = gy + (n * C + g * Cg) * S;
      double sum1 = 0, sum2 = 0;  // sum(dxhat), sum(dxhat * xhat)
      for (int64_t c = 0; c < Cg; ++c) {
        const float wc = w ? w[g * Cg + c] : 1.0f;
        for (int64_t i = 0; i < S; ++i) {
          double dxh = gs[c * S + i] * wc;
          sum1 += dxh; sum2 += dxh * (xs[c * S + i] - mu) * r;
        }
      }
      const double m1 = sum1 / len, m2 = sum2 / len;
      float* out = gx + (n * C + g * Cg) * S;
      for (int64_t c = 0; c < Cg; ++c) {
        const float wc = w ? w[g * Cg + c] : 1.0f;
        for (int64_t i = 0; i < S; ++i) {
          double xh = (xs[c * S + i] - mu) * r;
          out[c * S + i] = static_cast<float>(r * (gs[c * S + i] * wc - m1 - xh * m2));
        }
      }
    }
  });
  if (!gw && !gb) return;
  parallelFor(C, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t g = c / Cg;
      double sw = 0, sb = 0;
      for (int64_t n = 0; n < N; ++n) {
        const float mu = mean[n * G + g], r = rstd[n * G + g];
        const float* xr = x + (n * C + c) * S; const float* gr = gy + (n * C + c) * S;
        for (int64_t i = 0; i < S; ++i) { sw += gr[i] * (xr[i] - mu) * r; sb += gr[i]; }
      }
      if (gw) gw[c] = static_cast<float>(sw);
      if (gb) gb[c] = static_cast<float>(sb);
    }
  });
}

void layerNormForward(const float* x, const float* w, const float* b, float* y, float* mean, float* rstd, int64_t M, int64_t D, float eps) {
  parallelFor(M, std::max<int64_t>(1, 16384 / std::max<int64_t>(D, 1)), [&](int64_t m0, int64_t m1) {
    for (int64_t m = m0; m < m1; ++m) {
      const float* xr = x + m * D;
      double s = 0; for (int64_t i = 0; i < D; ++i) s += xr[i];
      double mu = s / D, v = 0;
      for (int64_t i = 0; i < D; ++i) { double d = xr[i] - mu; v += d * d; }
      float r = static_cast<float>(1.0 / std::sqrt(v / D + eps)), fm = static_cast<float>(mu);
      mean[m] = fm; rstd[m] = r;
      float* yr = y + m * D;
      for (int64_t i = 0; i < D; ++i) yr[i] = (xr[i] - fm) * r * (w ? w[i] : 1.0f) + (b ? b[i] : 0.0f);
    }
  });
}

void layerNormBackward(const float* x, const float* gy, const float* w, const float* mean, const float* rstd, float* gx, float* gw, float* gb, int64_t M, int64_t D) {
  parallelFor(M, std::max<int64_t>(1, 16384 / std::max<int64_t>(D, 1)), [&](int64_t m0, int64_t m1) {
    for (int64_t m = m0; m < m1; ++m) {
      const float* xr = x + m * D; const float* gr = gy + m * D;
      const float mu = mean[m], r = rstd[m];
      double s1 = 0, s2 = 0;
      for (int64_t i = 0; i < D; ++i) { double d = gr[i] * (w ? w[i] : 1.0f); s1 += d; s2 += d * (xr[i] - mu) * r; }
      const double m1 = s1 / D, m2 = s2 / D;
      float* o = gx + m * D;
      for (int64_t i = 0; i < D; ++i) { double xh = (xr[i] - mu) * r; o[i] = static_cast<float>(r * (gr[i] * (w ? w[i] : 1.0f) - m1 - xh * m2)); }
    }
  });
  if (!gw && !gb) return;
  const int64_t chunk = 256, nchunks = (M + chunk - 1) / chunk;
  std::vector<double> pw(gw ? nchunks * D : 0), pb(gb ? nchunks * D : 0);
  parallelFor(nchunks, 1, [&](int64_t k0, int64_t k1) {
    for (int64_t k = k0; k < k1; ++k)
      for (int64_t m = k * chunk; m < std::min(M, (k + 1) * chunk); ++m) {
        const float* xr = x + m * D; const float* gr = gy + m * D;
        const float mu = mean[m], r = rstd[m];
        for (int64_t i = 0; i < D; ++i) {
          if (gw) pw[k * D + i] += gr[i] * (xr[i] - mu) * r;
          if (gb) pb[k * D + i] += gr[i];
        }
      }
  });
  for (int64_t i = 0; i < D; ++i) {
    double sw = 0, sb = 0;
    for (int64_t k = 0; k < nchunks; ++k) { if (gw) sw += pw[k * D + i]; if (gb) sb += pb[k * D + i]; }
    if (gw) gw[i] = static_cast<float>(sw);
    if (gb) gb[i] = static_cast<float>(sb);
  }
}

void softmaxForward(const float* x, float* y, int64_t M, int64_t D, bool log) {
  parallelFor(M, std::max<int64_t>(1, 16384 / std::max<int64_t>(D, 1)), [&](int64_t m0, int64_t m1) {
    for (int64_t m = m0; m < m1; ++m) {
      const float* xr = x + m * D; float* yr = y + m * D;
      float mx = -INFINITY;
      for (int64_t i = 0; i < D; ++i) mx = std::max(mx, xr[i]);
      if (mx == -INFINITY) mx = 0;  // a fully masked row gives NaN below, as in PyTorch
      double s = 0;
      for (int64_t i = 0; i < D; ++i) { float e = std::exp(xr[i] - mx); yr[i] = e; s += e; }
      if (log) { float ls = static_cast<float>(std::log(s)); for (int64_t i = 0; i < D; ++i) yr[i] = xr[i] - mx - ls; }
      else { float inv = static_cast<float>(1.0 / s); for (int64_t i = 0; i < D; ++i) yr[i] *= inv; }
    }
  });
}

void softmaxBackward(const float* y, const float* gy, float* gx, int64_t M, int64_t D, bool log) {
  parallelFor(M, std::max<int64_t>(1, 16384 / std::max<int64_t>(D, 1)), [&](int64_t m0, int64_t m1) {
    for (int64_t m = m0; m < m1; ++m) {
      const float* yr = y + m * D; const float* gr = gy + m * D; float* o = gx + m * D;
      double s = 0;
      if (log) { for (int64_t i = 0; i < D; ++i) s += gr[i]; for (int64_t i = 0; i < D; ++i) o[i] = static_cast<float>(gr[i] - std::exp(yr[i]) * s); }
      else { for (int64_t i = 0; i < D; ++i) s += static_cast<double>(gr[i]) * yr[i]; for (int64_t i = 0; i < D; ++i) o[i] = static_cast<float>(yr[i] * (gr[i] - s)); }
    }
  });
}

}  // namespace qdm::cpu
