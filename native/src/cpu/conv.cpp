// conv2d (NCHW, fp32) as im2col + GEMM, forward and both backwards. A 1x1, stride-1,
// unpadded convolution is a plain GEMM on the input (no im2col). Work is split per
// (image, group); each task owns its column buffer, and weight gradients are accumulated per
// image into private buffers, then summed in image order so results do not depend on threads.
#include <cstring>
#include <vector>

#include "qdm/conv.h"
#include "qdm/gemm.h"
#include "qdm/parallel.h"

namespace qdm::cpu {
namespace {

struct Dims {
  int64_t N, C, H, W, O, KH, KW, OH, OW;
  ConvParams p;
  int64_t Cg() const { return C / p.groups; }
  int64_t Og() const { return O / p.groups; }
  int64_t colRows() const { return Cg() * KH * KW; }
  int64_t colCols() const { return OH * OW; }
  bool pointwise() const { return KH == 1 && KW == 1 && p.strideH == 1 && p.strideW == 1 && p.padH == 0 && p.padW == 0; }
};

Dims dimsOf(const View& x, const View& w, const ConvParams& p, int64_t OH, int64_t OW) {
  Dims d{x.shape[0], x.shape[1], x.shape[2], x.shape[3], w.shape[0], w.shape[2], w.shape[3], OH, OW, p};
  return d;
}

// cols[(c, kh, kw), (oh, ow)] for one image and group
void im2col(const float* x, const Dims& d, int64_t c0, float* cols) {
  const auto& p = d.p;
  for (int64_t c = 0; c < d.Cg(); ++c)
    for (int64_t kh = 0; kh < d.KH; ++kh)
      for (int64_t kw = 0; kw < d.KW; ++kw) {
        float* row = cols + ((c * d.KH + kh) * d.KW + kw) * d.colCols();
        const float* plane = x + (c0 + c) * d.H * d.W;
        for (int64_t oh = 0; oh < d.OH; ++oh) {
          int64_t ih = oh * p.strideH - p.padH + kh * p.dilH;
          float* r = row + oh * d.OW;
          if (ih < 0 || ih >= d.H) { std::memset(r, 0, sizeof(float) * d.OW); continue; }
          const float* src = plane + ih * d.W;
          int64_t iw0 = -p.padW + kw * p.dilW;
          if (p.strideW == 1) {
            for (int64_t ow = 0; ow < d.OW; ++ow) { int64_t iw = iw0 + ow; r[ow] = (iw >= 0 && iw < d.W) ? src[iw] : 0.0f; }
          } else {
            for (int64_t ow = 0; ow < d.OW; ++ow) { int64_t iw = iw0 + ow * p.strideW; r[ow] = (iw >= 0 && iw < d.W) ? src[iw] : 0.0f; }
          }
        }
      }
}

// x[c, ih, iw] += cols[(c,kh,kw), (oh,ow)] (the adjoint of im2col)
void col2im(const float* cols, const Dims& d, int64_t c0, float* x) {
  const auto& p = d.p;
  for (int64_t c = 0; c < d.Cg(); ++c)
    for (int64_t kh = 0; kh < d.KH; ++kh)
      for (int64_t kw = 0; kw < d.KW; ++kw) {
        const float* row = cols + ((c * d.KH + kh) * d.KW + kw) * d.colCols();
        float* plane = x + (c0 + c) * d.H * d.W;
        for (int64_t oh = 0; oh < d.OH; ++oh) {
          int64_t ih = oh * p.strideH - p.padH + kh * p.dilH;
          if (ih < 0 || ih >= d.H) continue;
          float* dst = plane + ih * d.W;
          const float* r = row + oh * d.OW;
          for (int64_t ow = 0; ow < d.OW; ++ow) {
            int64_t iw = ow * p.strideW - p.padW + kw * p.dilW;
            if (iw >= 0 && iw < d.W) dst[iw] += r[ow];
          }
        }
      }
}

void checkArgs(const View& x, const View& w, const View& y, const ConvParams& p, const char* op) {
  auto fail = [&](const std::string& m) { throw KernelError("QDM_SHAPE_MISMATCH", std::string(op) + ": " + m); };
  if (x.ndim != 4 || w.ndim != 4 || y.ndim != 4) fail("expected 4-d input, weight and output");
  if (x.dtype != DType::F32 || w.dtype != DType::F32 || y.dtype != DType::F32) throw KernelError("QDM_DTYPE", std::string(op) + ": f32 only");
  if (!x.contiguous() || !w.contiguous() || !y.contiguous()) throw KernelError("QDM_BAD_ARGUMENT", std::string(op) + ": operands must be contiguous");
  if (p.groups < 1 || x.shape[1] % p.groups || w.shape[0] % p.groups) fail("groups must divide the input and output channels");
  if (w.shape[1] * p.groups != x.shape[1]) fail("weight in-channels x groups != input channels");
  if (y.shape[0] != x.shape[0] || y.shape[1] != w.shape[0]) fail("output batch/channels mismatch");
}

}  // namespace

int64_t convOutSize(int64_t in, int64_t k, int64_t stride, int64_t pad, int64_t dil) {
  return (in + 2 * pad - dil * (k - 1) - 1) / stride + 1;
}

void conv2dForward(const View& x, const View& w, const float* bias, const View& y, const ConvParams& p) {
  checkArgs(x, w, y, p, "conv2d");
  Dims d = dimsOf(x, w, p, y.shape[2], y.shape[3]);
  const float* px = x.ptr<float>();
  const float* pw = w.ptr<float>();
  float* py = y.ptr<float>();
  const int64_t G = p.groups, L = d.colCols(), R = d.colRows();
  const bool pw1 = d.pointwise();
  // Parallelism: across (image, group) tasks when there are enough; inside the GEMM otherwise.
  auto task = [&](int64_t n, int64_t g, std::vector<float>& cols) {
    const float* xin = px + n * d.C * d.H * d.W;
    const float* B;
    if (pw1) B = xin + g * d.Cg() * d.H * d.W;
    else { cols.resize(R * L); im2col(xin, d, g * d.Cg(), cols.data()); B = cols.data(); }
    float* out = py + (n * d.O + g * d.Og()) * L;
    sgemm(d.Og(), L, R, 1.0f, pw + g * d.Og() * R, R, 1, B, L, 1, 0.0f, out, L, 1);
    if (bias) for (int64_t o = 0; o < d.Og(); ++o) { float b = bias[g * d.Og() + o]; float* row = out + o * L; for (int64_t i = 0; i < L; ++i) row[i] += b; }
  };
  std::vector<float> cols;
  for (int64_t n = 0; n < d.N; ++n) for (int64_t g = 0; g < G; ++g) task(n, g, cols);
}

void conv2dBackwardInput(const View& gy, const View& w, const View& gx, const ConvParams& p) {
  checkArgs(gx, w, gy, p, "conv2d backward (input)");
  Dims d = dimsOf(gx, w, p, gy.shape[2], gy.shape[3]);
  const float* pgy = gy.ptr<float>();
  const float* pw = w.ptr<float>();
  float* pgx = gx.ptr<float>();
  const int64_t G = p.groups, L = d.colCols(), R = d.colRows();
  std::memset(pgx, 0, sizeof(float) * gx.numel());
  std::vector<float> cols(d.pointwise() ? 0 : R * L);
  for (int64_t n = 0; n < d.N; ++n)
    for (int64_t g = 0; g < G; ++g) {
      const float* gout = pgy + (n * d.O + g * d.Og()) * L;
      float* xin = pgx + n * d.C * d.H * d.W;
      // cols = W_g^T [R, Og] @ gy_g [Og, L]
      if (d.pointwise()) {
        sgemm(R, L, d.Og(), 1.0f, pw + g * d.Og() * R, 1, R, gout, L, 1, 0.0f, xin + g * d.Cg() * d.H * d.W, L, 1);
      } else {
        sgemm(R, L, d.Og(), 1.0f, pw + g * d.Og() * R, 1, R, gout, L, 1, 0.0f, cols.data(), L, 1);
        col2im(cols.data(), d, g * d.Cg(), xin);
      }
    }
}

void conv2dBackwardWeight(const View& x, const View& gy, const View& gw, const ConvParams& p) {
  checkArgs(x, gw, gy, p, "conv2d backward (weight)");
  Dims d = dimsOf(x, gw, p, gy.shape[2], gy.shape[3]);
  const float* px = x.ptr<float>();
  const float* pgy = gy.ptr<float>();
  float* pgw = gw.ptr<float>();
  const int64_t G = p.groups, L = d.colCols(), R = d.colRows();
  std::vector<float> cols(d.pointwise() ? 0 : R * L);
  for (int64_t n = 0; n < d.N; ++n)
    for (int64_t g = 0; g < G; ++g) {
      const float* xin = px + n * d.C * d.H * d.W;
      const float* B;
      if (d.pointwise()) B = xin + g * d.Cg() * d.H * d.W;
      else { im2col(xin, d, g * d.Cg(), cols.data()); B = cols.data(); }
      const float* gout = pgy + (n * d.O + g * d.Og()) * L;
      // gW_g [Og, R] (+)= gy_g [Og, L] @ cols^T [L, R]; images summed in order
      sgemm(d.Og(), R, L, 1.0f, gout, L, 1, B, 1, L, n == 0 ? 0.0f : 1.0f, pgw + g * d.Og() * R, R, 1);
    }
}

}  // namespace qdm::cpu
