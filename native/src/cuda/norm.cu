// Group norm (plus the fused GroupNorm + SiLU forward) and layer norm on CUDA, forward and
// backward, with the CPU kernels' semantics (cpu/nn_norm.cpp): biased variance, rstd =
// 1/sqrt(var + eps), mean/rstd written per (sample, group) / row.
//
// Design:
// - GroupNorm forward: a group is Cg*S contiguous elements, cut into P chunks (P chosen from
//   the shape and SM count so that a batch-1 U-Net's 32 groups still fill the GPU). Kernel 1
//   gives each (group, chunk) a block computing the chunk's mean and sum of squared deviations
//   in two passes (no E[x^2] - mean^2 cancellation; the chunk is re-read from L1/L2); kernel 2
//   merges the P chunk statistics in order (Chan's formula; deterministic), writes mean/rstd and
//   normalises its chunk, applying SiLU in the same pass for groupNormSiluForward. x is read
//   from DRAM about twice. Loads are 4-wide when S % 4 == 0 and the pointers align.
// - GroupNorm backward: one 512-thread block per (sample, group).
// - LayerNorm: one warp per row for D <= 1024, one 256-thread block per row above; same passes.
// - Backward: gx per (sample, group) / row from the two sums sum(gy*w) and sum(gy*w*xhat).
//   Weight/bias gradients are reduced deterministically without atomics: GroupNorm has one block
//   per channel summing over (n, s) in a fixed order; LayerNorm writes per-chunk column partials
//   (256 rows a chunk) to a workspace and a second kernel adds the chunks in order.
// Every operand may be f32, f16 or bf16 (loads switch on the dtype; all math in f32).
#include <algorithm>
#include <string>

#include "cuda/nn_common.cuh"
#include "qdm/cuda_nn.h"

namespace qdm::cuda {
namespace {
using namespace nn;

constexpr int kGnThreads = 512;

__device__ __forceinline__ float siluF(float y) { return y / (1.0f + __expf(-y)); }

struct GnArgs {
  const void* x; const void* w; const void* b; void* y; void* mean; void* rstd;
  DType xt, wt, bt, yt, mt, rt;
  int64_t C, S, G;
  int64_t chunk;  // elements per chunk of a group (a multiple of 4); P = ceil(len / chunk) chunks
  int P;
  float eps;
  bool silu, vec;
};
constexpr int kGnStatThreads = 256;

// Pass 1, per (group, chunk): the chunk's count, mean and sum of squared deviations (two passes
// over the chunk, which stays in L1/L2), to part[(group * P + chunk) * 2 + {0, 1}].
__global__ void __launch_bounds__(kGnStatThreads) groupNormStatsKernel(GnArgs a, float* part) {
  __shared__ float sh[kGnStatThreads / 32];
  const int64_t t = blockIdx.x, n = t / a.G, g = t % a.G, Cg = a.C / a.G, len = Cg * a.S;
  const int64_t c0 = static_cast<int64_t>(blockIdx.y) * a.chunk;
  const int64_t cl = c0 + a.chunk < len ? a.chunk : len - c0;  // >= 1: the launcher sizes P so
  const int64_t base = (n * a.C + g * Cg) * a.S + c0;
  const int tid = threadIdx.x;
  float s = 0.0f;
  forRow(a.x, a.xt, base, cl, a.vec && cl % 4 == 0, tid, kGnStatThreads, [&](int64_t, float v) { s += v; });
  const float mu = groupSum<kGnStatThreads / 32>(s, sh) / static_cast<float>(cl);
  float q = 0.0f;
  forRow(a.x, a.xt, base, cl, a.vec && cl % 4 == 0, tid, kGnStatThreads, [&](int64_t, float v) { const float d = v - mu; q += d * d; });
  q = groupSum<kGnStatThreads / 32>(q, sh);
  if (tid == 0) {
    part[(t * a.P + blockIdx.y) * 2] = mu;
    part[(t * a.P + blockIdx.y) * 2 + 1] = q;
  }
}

// Pass 2, per (group, chunk): every thread combines the group's P chunk statistics in chunk
// order (Chan et al.: exact merging of means and squared deviations, deterministic), chunk 0
// writes mean/rstd, and the block normalises its chunk (+ SiLU when fused).
__global__ void __launch_bounds__(kGnStatThreads) groupNormApplyKernel(GnArgs a, const float* part) {
  const int64_t t = blockIdx.x, n = t / a.G, g = t % a.G, Cg = a.C / a.G, len = Cg * a.S;
  float cnt = 0.0f, mu = 0.0f, m2 = 0.0f;
  for (int c = 0; c < a.P; ++c) {
    const int64_t lo = c * a.chunk;
    const float nb = static_cast<float>(lo + a.chunk < len ? a.chunk : len - lo);
    const float mb = part[(t * a.P + c) * 2], qb = part[(t * a.P + c) * 2 + 1];
    const float tot = cnt + nb, delta = mb - mu;
    mu += delta * (nb / tot);
    m2 += qb + delta * delta * (cnt * nb / tot);
    cnt = tot;
  }
  const float r = 1.0f / sqrtf(m2 / static_cast<float>(len) + a.eps);
  if (blockIdx.y == 0 && threadIdx.x == 0) { stf(a.mean, t, a.mt, mu); stf(a.rstd, t, a.rt, r); }
  const int64_t c0 = static_cast<int64_t>(blockIdx.y) * a.chunk;
  const int64_t cl = c0 + a.chunk < len ? a.chunk : len - c0;
  const int64_t gbase = (n * a.C + g * Cg) * a.S;
  const unsigned S32 = static_cast<unsigned>(a.S);
  if (a.vec && cl % 4 == 0) {
    // S % 4 == 0 and chunk starts at multiples of 4: the 4 elements of a vector share a channel.
    for (int64_t i = c0 + 4 * static_cast<int64_t>(threadIdx.x); i < c0 + cl; i += 4 * kGnStatThreads) {
      const float4 v = ld4(a.x, gbase + i, a.xt);
      const int64_t ch = g * Cg + static_cast<unsigned>(i) / S32;
      const float sc = r * (a.w ? ldf(a.w, ch, a.wt) : 1.0f);
      const float sf = (a.b ? ldf(a.b, ch, a.bt) : 0.0f) - mu * sc;
      float4 o = make_float4(v.x * sc + sf, v.y * sc + sf, v.z * sc + sf, v.w * sc + sf);
      if (a.silu) { o.x = siluF(o.x); o.y = siluF(o.y); o.z = siluF(o.z); o.w = siluF(o.w); }
      st4(a.y, gbase + i, a.yt, o);
    }
  } else {
    for (int64_t i = c0 + threadIdx.x; i < c0 + cl; i += kGnStatThreads) {
      const int64_t ch = g * Cg + static_cast<unsigned>(i) / S32;
      const float sc = r * (a.w ? ldf(a.w, ch, a.wt) : 1.0f);
      const float sf = (a.b ? ldf(a.b, ch, a.bt) : 0.0f) - mu * sc;
      const float y = ldf(a.x, gbase + i, a.xt) * sc + sf;
      stf(a.y, gbase + i, a.yt, a.silu ? siluF(y) : y);
    }
  }
}

struct GnBwdArgs {
  const void* x; const void* gy; const void* w; const void* mean; const void* rstd; void* gx; void* gw; void* gb;
  DType xt, gyt, wt, mt, rt, gxt, gwt, gbt;
  int64_t N, C, S, G;
  bool vec;
};

// gx for one (sample, group): r * (gy*w - mean(gy*w) - xhat * mean(gy*w*xhat)).
__global__ void __launch_bounds__(kGnThreads) groupNormBackwardKernel(GnBwdArgs a) {
  __shared__ float sh[kGnThreads / 32];
  const int64_t t = blockIdx.x, n = t / a.G, g = t % a.G, Cg = a.C / a.G, len = Cg * a.S;
  const int64_t base = (n * a.C + g * Cg) * a.S;
  const unsigned S32 = static_cast<unsigned>(a.S);
  const float mu = ldf(a.mean, t, a.mt), r = ldf(a.rstd, t, a.rt);
  const int tid = threadIdx.x;
  float s1 = 0.0f, s2 = 0.0f;
  for (int64_t i = tid; i < len; i += kGnThreads) {
    const float wc = a.w ? ldf(a.w, g * Cg + static_cast<unsigned>(i) / S32, a.wt) : 1.0f;
    const float d = ldf(a.gy, base + i, a.gyt) * wc;
    s1 += d;
    s2 += d * (ldf(a.x, base + i, a.xt) - mu) * r;
  }
  const float m1 = groupSum<kGnThreads / 32>(s1, sh) / static_cast<float>(len);
  const float m2 = groupSum<kGnThreads / 32>(s2, sh) / static_cast<float>(len);
  for (int64_t i = tid; i < len; i += kGnThreads) {
    const float wc = a.w ? ldf(a.w, g * Cg + static_cast<unsigned>(i) / S32, a.wt) : 1.0f;
    const float xh = (ldf(a.x, base + i, a.xt) - mu) * r;
    stf(a.gx, base + i, a.gxt, r * (ldf(a.gy, base + i, a.gyt) * wc - m1 - xh * m2));
  }
}

// gw[c] = sum_{n,s} gy * xhat, gb[c] = sum_{n,s} gy: one block per channel, fixed order.
constexpr int kParamThreads = 256;
__global__ void __launch_bounds__(kParamThreads) groupNormParamGradKernel(GnBwdArgs a) {
  __shared__ float sh[kParamThreads / 32];
  const int64_t c = blockIdx.x, Cg = a.C / a.G, g = c / Cg, total = a.N * a.S;
  float sw = 0.0f, sb = 0.0f;
  for (int64_t j = threadIdx.x; j < total; j += kParamThreads) {
    const int64_t n = j / a.S, i = j - n * a.S, off = (n * a.C + c) * a.S + i;
    const float gyv = ldf(a.gy, off, a.gyt);
    const float mu = ldf(a.mean, n * a.G + g, a.mt), r = ldf(a.rstd, n * a.G + g, a.rt);
    sw += gyv * (ldf(a.x, off, a.xt) - mu) * r;
    sb += gyv;
  }
  sw = groupSum<kParamThreads / 32>(sw, sh);
  sb = groupSum<kParamThreads / 32>(sb, sh);
  if (threadIdx.x == 0) {
    if (a.gw) stf(a.gw, c, a.gwt, sw);
    if (a.gb) stf(a.gb, c, a.gbt, sb);
  }
}

// ---- layer norm --------------------------------------------------------------------------
struct LnArgs {
  const void* x; const void* w; const void* b; void* y; void* mean; void* rstd;
  const void* gy; void* gx;
  DType xt, wt, bt, yt, mt, rt, gyt, gxt;
  int64_t M, D;
  float eps;
  bool vec;
};

// W warps per row: W == 1 packs 8 rows into a 256-thread block, W == 8 gives each row a block.
template <int W>
__global__ void __launch_bounds__(256) layerNormForwardKernel(LnArgs a) {
  __shared__ float sh[8];
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (8 / W) + threadIdx.x / (32 * W);
  if (row >= a.M) return;  // W == 1 only (W == 8: one row per block, always in range)
  const int tid = threadIdx.x % (32 * W), nt = 32 * W;
  const int64_t base = row * a.D;
  float s = 0.0f;
  forRow(a.x, a.xt, base, a.D, a.vec, tid, nt, [&](int64_t, float v) { s += v; });
  const float mu = groupSum<W>(s, sh) / static_cast<float>(a.D);
  float q = 0.0f;
  forRow(a.x, a.xt, base, a.D, a.vec, tid, nt, [&](int64_t, float v) { const float d = v - mu; q += d * d; });
  const float r = 1.0f / sqrtf(groupSum<W>(q, sh) / static_cast<float>(a.D) + a.eps);
  if (tid == 0) { stf(a.mean, row, a.mt, mu); stf(a.rstd, row, a.rt, r); }
  if (a.vec) {
    for (int64_t i = 4 * static_cast<int64_t>(tid); i < a.D; i += 4 * nt) {
      const float4 v = ld4(a.x, base + i, a.xt);
      float4 w = a.w ? ld4(a.w, i, a.wt) : make_float4(1.f, 1.f, 1.f, 1.f);
      float4 b = a.b ? ld4(a.b, i, a.bt) : make_float4(0.f, 0.f, 0.f, 0.f);
      st4(a.y, base + i, a.yt, make_float4((v.x - mu) * r * w.x + b.x, (v.y - mu) * r * w.y + b.y, (v.z - mu) * r * w.z + b.z, (v.w - mu) * r * w.w + b.w));
    }
  } else {
    for (int64_t i = tid; i < a.D; i += nt) {
      const float v = ldf(a.x, base + i, a.xt);
      stf(a.y, base + i, a.yt, (v - mu) * r * (a.w ? ldf(a.w, i, a.wt) : 1.0f) + (a.b ? ldf(a.b, i, a.bt) : 0.0f));
    }
  }
}

template <int W>
__global__ void __launch_bounds__(256) layerNormBackwardKernel(LnArgs a) {
  __shared__ float sh[8];
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (8 / W) + threadIdx.x / (32 * W);
  if (row >= a.M) return;
  const int tid = threadIdx.x % (32 * W), nt = 32 * W;
  const int64_t base = row * a.D;
  const float mu = ldf(a.mean, row, a.mt), r = ldf(a.rstd, row, a.rt);
  float s1 = 0.0f, s2 = 0.0f;
  for (int64_t i = tid; i < a.D; i += nt) {
    const float d = ldf(a.gy, base + i, a.gyt) * (a.w ? ldf(a.w, i, a.wt) : 1.0f);
    s1 += d;
    s2 += d * (ldf(a.x, base + i, a.xt) - mu) * r;
  }
  const float m1 = groupSum<W>(s1, sh) / static_cast<float>(a.D);
  const float m2 = groupSum<W>(s2, sh) / static_cast<float>(a.D);
  for (int64_t i = tid; i < a.D; i += nt) {
    const float xh = (ldf(a.x, base + i, a.xt) - mu) * r;
    const float d = ldf(a.gy, base + i, a.gyt) * (a.w ? ldf(a.w, i, a.wt) : 1.0f);
    stf(a.gx, base + i, a.gxt, r * (d - m1 - xh * m2));
  }
}

// Column partials of gw/gb over chunks of rowsPerChunk rows: block (32 columns) x (8 row lanes).
constexpr int kLnChunk = 256;
__global__ void __launch_bounds__(256) layerNormParamPartialKernel(LnArgs a, int64_t rowsPerChunk, float* pw, float* pb) {
  __shared__ float shw[8][33], shb[8][33];
  const int tx = threadIdx.x & 31, ty = threadIdx.x >> 5;
  const int64_t col = static_cast<int64_t>(blockIdx.x) * 32 + tx, chunk = blockIdx.y;
  const int64_t r0 = chunk * rowsPerChunk, r1 = r0 + rowsPerChunk < a.M ? r0 + rowsPerChunk : a.M;
  float sw = 0.0f, sb = 0.0f;
  if (col < a.D) {
    for (int64_t m = r0 + ty; m < r1; m += 8) {
      const float gyv = ldf(a.gy, m * a.D + col, a.gyt);
      sw += gyv * (ldf(a.x, m * a.D + col, a.xt) - ldf(a.mean, m, a.mt)) * ldf(a.rstd, m, a.rt);
      sb += gyv;
    }
  }
  shw[ty][tx] = sw; shb[ty][tx] = sb;
  __syncthreads();
  if (ty == 0 && col < a.D) {
    float tw = 0.0f, tb = 0.0f;
#pragma unroll
    for (int i = 0; i < 8; ++i) { tw += shw[i][tx]; tb += shb[i][tx]; }
    pw[chunk * a.D + col] = tw;
    pb[chunk * a.D + col] = tb;
  }
}
__global__ void layerNormParamFinalKernel(const float* pw, const float* pb, int64_t chunks, int64_t D, void* gw, DType gwt, void* gb, DType gbt) {
  const int64_t col = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (col >= D) return;
  float tw = 0.0f, tb = 0.0f;
  for (int64_t k = 0; k < chunks; ++k) { tw += pw[k * D + col]; tb += pb[k * D + col]; }
  if (gw) stf(gw, col, gwt, tw);
  if (gb) stf(gb, col, gbt, tb);
}

void checkGroupLen(int64_t len, int64_t S, const char* what) {
  if (len >= (int64_t(1) << 31) || S >= (int64_t(1) << 31))
    throw KernelError("QDM_BAD_ARGUMENT", std::string(what) + ": a group of 2^31 or more elements is not supported on CUDA");
}
}  // namespace

void groupNormForward(const View& x, const View& w, const View& b, const View& y, const View& mean, const View& rstd, int64_t G, float eps, bool silu) {
  const int64_t N = x.shape[0], C = x.shape[1], S = x.shape[2];
  if (N * G == 0 || C * S == 0) return;
  const char* what = silu ? "groupNormSiluForward" : "groupNormForward";
  const int64_t len = C / G * S;
  checkGroupLen(len, S, what);
  // Chunks per group: enough blocks for ~4 waves over the SMs (a U-Net at batch 1-2 has only
  // 32-64 groups), each chunk at least 4096 elements, at most 64 chunks. The split depends on
  // the shape and the SM count only.
  const int64_t groups = N * G, sms = std::max(1, smCount());
  int64_t P = std::min<int64_t>({(4 * sms + groups - 1) / groups, (len + 4095) / 4096, 64});
  P = std::max<int64_t>(P, 1);
  int64_t chunk = (len + P - 1) / P;
  chunk = (chunk + 3) / 4 * 4;
  P = (len + chunk - 1) / chunk;  // every chunk non-empty
  if (groups > 0x7fffffff) throw KernelError("QDM_BAD_ARGUMENT", std::string(what) + ": too many groups for the CUDA grid");
  GnArgs a{x.data, w.data, b.data, y.data, mean.data, rstd.data, x.dtype, w.dtype, b.dtype, y.dtype, mean.dtype, rstd.dtype,
           C, S, G, chunk, static_cast<int>(P), eps, silu, false};
  a.vec = S % 4 == 0 && vec4Aligned(x) && vec4Aligned(y);
  float* part = static_cast<float*>(allocDevice(static_cast<size_t>(groups * P * 2) * sizeof(float)));
  const dim3 grid(static_cast<unsigned>(groups), static_cast<unsigned>(P));
  groupNormStatsKernel<<<grid, kGnStatThreads, 0, stream()>>>(a, part);
  checkLaunch(what);
  groupNormApplyKernel<<<grid, kGnStatThreads, 0, stream()>>>(a, part);
  checkLaunch(what);
  freeDevice(part);
}

void groupNormBackward(const View& x, const View& gy, const View& w, const View& mean, const View& rstd, const View& gx, const View& gw, const View& gb, int64_t G) {
  const int64_t N = x.shape[0], C = x.shape[1], S = x.shape[2];
  if (C * S > 0) checkGroupLen(C / G * S, S, "groupNormBackward");
  GnBwdArgs a{x.data, gy.data, w.data, mean.data, rstd.data, gx.data, gw.data, gb.data,
              x.dtype, gy.dtype, w.dtype, mean.dtype, rstd.dtype, gx.dtype, gw.dtype, gb.dtype, N, C, S, G, false};
  if (N * G > 0 && C * S > 0) {
    groupNormBackwardKernel<<<static_cast<unsigned>(N * G), kGnThreads, 0, stream()>>>(a);
    checkLaunch("groupNormBackward");
  }
  if ((gw.data || gb.data) && C > 0) {
    // N * S == 0 still writes zeros (the sums over nothing), as the CPU does.
    groupNormParamGradKernel<<<static_cast<unsigned>(C), kParamThreads, 0, stream()>>>(a);
    checkLaunch("groupNormBackward (weight/bias)");
  }
}

void layerNormForward(const View& x, const View& w, const View& b, const View& y, const View& mean, const View& rstd, float eps) {
  const int64_t M = x.shape[0], D = x.shape[1];
  if (M == 0 || D == 0) return;
  LnArgs a{x.data, w.data, b.data, y.data, mean.data, rstd.data, nullptr, nullptr,
           x.dtype, w.dtype, b.dtype, y.dtype, mean.dtype, rstd.dtype, DType::F32, DType::F32, M, D, eps, false};
  a.vec = D % 4 == 0 && vec4Aligned(x) && vec4Aligned(y) && vec4Aligned(w) && vec4Aligned(b);
  if (D <= 1024) layerNormForwardKernel<1><<<static_cast<unsigned>((M + 7) / 8), 256, 0, stream()>>>(a);
  else layerNormForwardKernel<8><<<static_cast<unsigned>(M), 256, 0, stream()>>>(a);
  checkLaunch("layerNormForward");
}

void layerNormBackward(const View& x, const View& gy, const View& w, const View& mean, const View& rstd, const View& gx, const View& gw, const View& gb) {
  const int64_t M = x.shape[0], D = x.shape[1];
  if (D == 0) return;
  LnArgs a{x.data, w.data, nullptr, nullptr, const_cast<void*>(mean.data), const_cast<void*>(rstd.data), gy.data, gx.data,
           x.dtype, w.dtype, DType::F32, DType::F32, mean.dtype, rstd.dtype, gy.dtype, gx.dtype, M, D, 0.0f, false};
  if (M > 0) {
    if (D <= 1024) layerNormBackwardKernel<1><<<static_cast<unsigned>((M + 7) / 8), 256, 0, stream()>>>(a);
    else layerNormBackwardKernel<8><<<static_cast<unsigned>(M), 256, 0, stream()>>>(a);
    checkLaunch("layerNormBackward");
  }
  if (!gw.data && !gb.data) return;
  // kLnChunk rows a chunk (more when that would exceed the grid's 65535 y-blocks).
  const int64_t rowsPerChunk = std::max<int64_t>(kLnChunk, (M + 65534) / 65535);
  const int64_t chunks = std::max<int64_t>(1, (M + rowsPerChunk - 1) / rowsPerChunk);
  float* part = static_cast<float*>(allocDevice(static_cast<size_t>(2 * chunks * D) * sizeof(float)));
  float *pw = part, *pb = part + chunks * D;
  if (M > 0) {
    layerNormParamPartialKernel<<<dim3(static_cast<unsigned>((D + 31) / 32), static_cast<unsigned>(chunks)), 256, 0, stream()>>>(a, rowsPerChunk, pw, pb);
    checkLaunch("layerNormBackward (weight/bias partials)");
  } else {
    cudaMemsetAsync(part, 0, static_cast<size_t>(2 * chunks * D) * sizeof(float), stream());
  }
  layerNormParamFinalKernel<<<static_cast<unsigned>((D + 255) / 256), 256, 0, stream()>>>(pw, pb, chunks, D, gw.data, gw.dtype, gb.data, gb.dtype);
  checkLaunch("layerNormBackward (weight/bias)");
  freeDevice(part);
}

}  // namespace qdm::cuda
