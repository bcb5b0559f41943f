// Row softmax / log-softmax on CUDA, forward and backward, with the CPU kernels' semantics
// (cpu/nn_norm.cpp): y = exp(x - max) / sum, log: x - max - log(sum); a row whose every entry is
// -inf gives NaN, as in PyTorch and on the CPU. Backward: gx = y (gy - sum(gy y)), log:
// gx = gy - exp(y) sum(gy).
//
// One warp per row for D <= 1024 (8 rows per 256-thread block), one block per row above. Three
// passes over the row (max, sum of exponentials, write); the row is re-read from L1/L2, not kept
// in registers, so any D works with one kernel. Loads are 4-wide when D % 4 == 0 and aligned.
// Reductions are fixed shuffle trees: deterministic.
#include <string>

#include "cuda/nn_common.cuh"
#include "qdm/cuda_nn.h"

namespace qdm::cuda {
namespace {
using namespace nn;

struct SmArgs {
  const void* x; void* y; const void* gy; void* gx;
  DType xt, yt, gyt, gxt;
  int64_t M, D;
  bool log, vec;
};

template <int W>
__global__ void __launch_bounds__(256) softmaxForwardKernel(SmArgs a) {
  __shared__ float sh[8];
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (8 / W) + threadIdx.x / (32 * W);
  if (row >= a.M) return;  // W == 1 only
  const int tid = threadIdx.x % (32 * W), nt = 32 * W;
  const int64_t base = row * a.D;
  float mx = -INFINITY;
  forRow(a.x, a.xt, base, a.D, a.vec, tid, nt, [&](int64_t, float v) { mx = fmaxf(mx, v); });
  mx = groupMax<W>(mx, sh);
  if (mx == -INFINITY) mx = 0.0f;  // fully masked row: 0/0 = NaN below, as on the CPU
  float s = 0.0f;
  forRow(a.x, a.xt, base, a.D, a.vec, tid, nt, [&](int64_t, float v) { s += __expf(v - mx); });
  s = groupSum<W>(s, sh);
  const float inv = 1.0f / s, ls = __logf(s);
  auto f = [&](float v) { return a.log ? v - mx - ls : __expf(v - mx) * inv; };
  if (a.vec) {
    for (int64_t i = 4 * static_cast<int64_t>(tid); i < a.D; i += 4 * nt) {
      const float4 v = ld4(a.x, base + i, a.xt);
      st4(a.y, base + i, a.yt, make_float4(f(v.x), f(v.y), f(v.z), f(v.w)));
    }
  } else {
    for (int64_t i = tid; i < a.D; i += nt) stf(a.y, base + i, a.yt, f(ldf(a.x, base + i, a.xt)));
  }
}

template <int W>
__global__ void __launch_bounds__(256) softmaxBackwardKernel(SmArgs a) {
  __shared__ float sh[8];
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (8 / W) + threadIdx.x / (32 * W);
  if (row >= a.M) return;
  const int tid = threadIdx.x % (32 * W), nt = 32 * W;
  const int64_t base = row * a.D;
  // a.x is y here (the forward's output), a.gy the incoming gradient.
  float s = 0.0f;
  if (a.log) {
    forRow(a.gy, a.gyt, base, a.D, a.vec, tid, nt, [&](int64_t, float g) { s += g; });
  } else {
    for (int64_t i = tid; i < a.D; i += nt) s += ldf(a.gy, base + i, a.gyt) * ldf(a.x, base + i, a.xt);
  }
  s = groupSum<W>(s, sh);
  for (int64_t i = tid; i < a.D; i += nt) {
    const float y = ldf(a.x, base + i, a.xt), g = ldf(a.gy, base + i, a.gyt);
    stf(a.gx, base + i, a.gxt, a.log ? g - __expf(y) * s : y * (g - s));
  }
}

void launch(bool backward, const SmArgs& a, const char* what) {
  if (a.D <= 1024) {
    const unsigned blocks = static_cast<unsigned>((a.M + 7) / 8);
    if (backward) softmaxBackwardKernel<1><<<blocks, 256, 0, stream()>>>(a);
    else softmaxForwardKernel<1><<<blocks, 256, 0, stream()>>>(a);
  } else {
    const unsigned blocks = static_cast<unsigned>(a.M);
    if (backward) softmaxBackwardKernel<8><<<blocks, 256, 0, stream()>>>(a);
    else softmaxForwardKernel<8><<<blocks, 256, 0, stream()>>>(a);
  }
  checkLaunch(what);
}
}  // namespace

void softmaxForward(const View& x, const View& y, bool log) {
  const int64_t M = x.shape[0], D = x.shape[1];
  if (M == 0 || D == 0) return;
  SmArgs a{x.data, y.data, nullptr, nullptr, x.dtype, y.dtype, DType::F32, DType::F32, M, D, log, false};
  a.vec = D % 4 == 0 && vec4Aligned(x) && vec4Aligned(y);
  launch(false, a, "softmaxForward");
}

void softmaxBackward(const View& y, const View& gy, const View& gx, bool log) {
  const int64_t M = y.shape[0], D = y.shape[1];
  if (M == 0 || D == 0) return;
  SmArgs a{y.data, nullptr, gy.data, gx.data, y.dtype, DType::F32, gy.dtype, gx.dtype, M, D, log, false};
  a.vec = D % 4 == 0 && vec4Aligned(gy);
  launch(true, a, "softmaxBackward");
}

}  // namespace qdm::cuda
