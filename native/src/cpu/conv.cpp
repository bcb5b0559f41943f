// conv2d (NCHW, fp32) as im2col + GEMM, forward and both backwards. A 1x1, stride-1,
// unpadded convolution is a plain GEMM on the input (no im2col). Results never depend on the
// thread count: every output element is produced by one GEMM with a fixed reduction order.
#include <algorithm>
#include <cstring>
#include <vector>

#include "qdm/conv.h"
#include "qdm/gemm.h"
#include "qdm/parallel.h"
#include "cpu/gemm_internal.h"

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

// Parallel over images when there are enough of them (each task runs its own single-threaded
// GEMM on its own column buffer); otherwise one image at a time with the threaded GEMM. Both
// paths give identical bits (sgemmSerial == sgemm), so thread counts never change results.
static bool perImage(int64_t tasks) { return tasks >= 2 * numThreads() || (tasks >= numThreads() && numThreads() > 1); }

// task(n, g, cols) for every (image, group): in parallel with a column buffer per thread, or in order with one.
template <class Task>
static void forEachImageGroup(bool split, int64_t N, int64_t G, Task&& task) {
  if (split) {
    parallelTasks(N * G, [&](int64_t t) { thread_local std::vector<float> cols; task(t / G, t % G, cols); });
  } else {
    std::vector<float> cols;
    for (int64_t n = 0; n < N; ++n) for (int64_t g = 0; g < G; ++g) task(n, g, cols);
  }
}

void conv2dForward(const View& x, const View& w, const float* bias, const View& y, const ConvParams& p) {
  checkArgs(x, w, y, p, "conv2d");
  Dims d = dimsOf(x, w, p, y.shape[2], y.shape[3]);
  const float* px = x.ptr<float>();
  const float* pw = w.ptr<float>();
  float* py = y.ptr<float>();
  const int64_t G = p.groups, L = d.colCols(), R = d.colRows();
  const bool pw1 = d.pointwise();
  const bool split = perImage(d.N * G);
  auto task = [&](int64_t n, int64_t g, std::vector<float>& cols) {
    const float* xin = px + n * d.C * d.H * d.W;
    const float* B;
    if (pw1) B = xin + g * d.Cg() * d.H * d.W;
    else { cols.resize(R * L); im2col(xin, d, g * d.Cg(), cols.data()); B = cols.data(); }
    float* out = py + (n * d.O + g * d.Og()) * L;
    if (split) gemm::sgemmSerial(d.Og(), L, R, 1.0f, pw + g * d.Og() * R, R, 1, B, L, 1, 0.0f, out, L, 1);
    else sgemm(d.Og(), L, R, 1.0f, pw + g * d.Og() * R, R, 1, B, L, 1, 0.0f, out, L, 1);
    if (bias) for (int64_t o = 0; o < d.Og(); ++o) { float b = bias[g * d.Og() + o]; float* row = out + o * L; for (int64_t i = 0; i < L; ++i) row[i] += b; }
  };
  forEachImageGroup(split, d.N, G, task);
}

void conv2dBackwardInput(const View& gy, const View& w, const View& gx, const ConvParams& p) {
  checkArgs(gx, w, gy, p, "conv2d backward (input)");
  Dims d = dimsOf(gx, w, p, gy.shape[2], gy.shape[3]);
  const float* pgy = gy.ptr<float>();
  const float* pw = w.ptr<float>();
  float* pgx = gx.ptr<float>();
  const int64_t G = p.groups, L = d.colCols(), R = d.colRows();
  const bool split = perImage(d.N * G);
  std::memset(pgx, 0, sizeof(float) * gx.numel());
  // cols = W_g^T [R, Og] @ gy_g [Og, L], folded back into the image; each (image, group) owns its slice.
  auto task = [&](int64_t n, int64_t g, std::vector<float>& cols) {
    const float* gout = pgy + (n * d.O + g * d.Og()) * L;
    float* xin = pgx + n * d.C * d.H * d.W;
    const bool direct = d.pointwise();
    if (!direct) cols.resize(R * L);
    float* dst = direct ? xin + g * d.Cg() * d.H * d.W : cols.data();
    if (split) gemm::sgemmSerial(R, L, d.Og(), 1.0f, pw + g * d.Og() * R, 1, R, gout, L, 1, 0.0f, dst, L, 1);
    else sgemm(R, L, d.Og(), 1.0f, pw + g * d.Og() * R, 1, R, gout, L, 1, 0.0f, dst, L, 1);
    if (!direct) col2im(cols.data(), d, g * d.Cg(), xin);
  };
  forEachImageGroup(split, d.N, G, task);
}

// gW_g [Og, R] = sum over images of gy_g [Og, L] @ cols^T [L, R]. Images go in fixed chunks of
// kImagesPerChunk (independent of the thread count): each chunk's columns side by side form one
// reduction of length chunk x L for a single-threaded GEMM into the chunk's partial sum; the
// partials are then added in chunk order. Same bits whatever the thread count.
void conv2dBackwardWeight(const View& x, const View& gy, const View& gw, const ConvParams& p) {
  checkArgs(x, gw, gy, p, "conv2d backward (weight)");
  Dims d = dimsOf(x, gw, p, gy.shape[2], gy.shape[3]);
  const float* px = x.ptr<float>();
  const float* pgy = gy.ptr<float>();
  float* pgw = gw.ptr<float>();
  const int64_t G = p.groups, L = d.colCols(), R = d.colRows(), Og = d.Og();
  constexpr int64_t kImagesPerChunk = 4;
  const int64_t chunks = (d.N + kImagesPerChunk - 1) / kImagesPerChunk;
  std::vector<float> partial(static_cast<size_t>(chunks * G * Og * R));
  parallelTasks(chunks * G, [&](int64_t t) {
    const int64_t c = t / G, g = t % G;
    const int64_t n0 = c * kImagesPerChunk, nb = std::min(kImagesPerChunk, d.N - n0), K = nb * L;
    thread_local std::vector<float> cols, gys, tmp;
    cols.resize(R * K); gys.resize(Og * K);
    for (int64_t i = 0; i < nb; ++i) {
      const float* xin = px + (n0 + i) * d.C * d.H * d.W;
      const float* src;
      if (d.pointwise()) src = xin + g * d.Cg() * d.H * d.W;
      else { tmp.resize(R * L); im2col(xin, d, g * d.Cg(), tmp.data()); src = tmp.data(); }
      for (int64_t r = 0; r < R; ++r) std::memcpy(cols.data() + r * K + i * L, src + r * L, sizeof(float) * L);
      const float* gout = pgy + ((n0 + i) * d.O + g * Og) * L;
      for (int64_t o = 0; o < Og; ++o) std::memcpy(gys.data() + o * K + i * L, gout + o * L, sizeof(float) * L);
    }
    gemm::sgemmSerial(Og, R, K, 1.0f, gys.data(), K, 1, cols.data(), 1, K, 0.0f, partial.data() + t * Og * R, R, 1);
  });
  const int64_t per = Og * R;
  parallelFor(G * per, 4096, [&](int64_t e0, int64_t e1) {
    for (int64_t e = e0; e < e1; ++e) {
      const int64_t g = e / per, i = e % per;
      float acc = 0.0f;
      for (int64_t c = 0; c < chunks; ++c) acc += partial[(c * G + g) * per + i];
      pgw[e] = acc;
    }
  });
}

}  // namespace qdm::cpu
