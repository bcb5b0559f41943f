// Reductions over any set of dims (cpu/reduce.cpp semantics), deterministic: every output is
// reduced by a fixed group of threads in a fixed order, so a result never depends on timing.
//
// Layout: K outputs (kept dims), R reduced elements each (reduced dims, row-major, coalesced
// where strides allow). A group of TPO threads owns one output (TPO = 32 for R <= 1024, else
// 256): lane l accumulates elements l, l + TPO, ... in f32, then a shared-memory tree combines
// the lanes. When there are few outputs but long reductions (K < 64, R > 65536), R is cut into
// C fixed chunks (C depends only on R), partial results go to a workspace and a second kernel
// combines them in order: still deterministic. Max/min/argmax/argmin keep the CPU's rules:
// NaN wins, ties go to the lowest index (combined explicitly, not by position).
#include <algorithm>
#include <string>

#include "cuda/ew_common.cuh"
#include "qdm/cuda_elementwise.h"
#include "qdm/opcodes.h"

namespace qdm::cuda {
namespace {
using namespace ew;

struct Acc {
  float v;
  long long idx;  // arg ops and max/min: index of the best element (-1: none yet); prod/sum: unused
};

struct ReducePlan {
  int nk = 0, nr = 0;
  int64_t K = 1, R = 1;
  int64_t keptShape[kMaxDims] = {0}, keptStrides[kMaxDims] = {0}, outStrides[kMaxDims] = {0};
  int64_t redShape[kMaxDims] = {0}, redStrides[kMaxDims] = {0};
};

__device__ __forceinline__ bool isMax(int op) { return op == R_MAX || op == R_ARGMAX; }

__device__ __forceinline__ Acc identity(int op) {
  Acc a;
  a.v = op == R_PROD ? 1.0f : 0.0f;
  a.idx = -1;
  return a;
}

// Deterministic combination: independent of which side is "first" for the extremum ops.
__device__ __forceinline__ Acc combine(int op, Acc a, Acc b) {
  switch (op) {
    case R_SUM: case R_MEAN: case R_SUMSQ: a.v += b.v; return a;
    case R_PROD: a.v *= b.v; return a;
    default: {
      if (b.idx < 0) return a;
      if (a.idx < 0) return b;
      bool an = a.v != a.v, bn = b.v != b.v;
      if (an || bn) {
        if (an && bn) return a.idx <= b.idx ? a : b;
        return an ? a : b;
      }
      bool bBetter = isMax(op) ? b.v > a.v : b.v < a.v;
      if (bBetter || (b.v == a.v && b.idx < a.idx)) return b;
      return a;
    }
  }
}

__device__ __forceinline__ Acc element(int op, float v, long long r) {
  Acc e;
  e.v = op == R_SUMSQ ? v * v : v;
  e.idx = r;
  return e;
}

__device__ __forceinline__ int64_t redOffset(const ReducePlan& p, int64_t r) {
  int64_t off = 0;
#pragma unroll
  for (int i = kMaxDims - 1; i >= 0; --i) {
    if (i >= p.nr) continue;
    int64_t s = p.redShape[i];
    int64_t q = r / s;
    off += (r - q * s) * p.redStrides[i];
    r = q;
  }
  return off;
}
__device__ __forceinline__ void keptOffsets(const ReducePlan& p, int64_t k, int64_t& inOff, int64_t& outOff) {
  inOff = 0;
  outOff = 0;
#pragma unroll
  for (int i = kMaxDims - 1; i >= 0; --i) {
    if (i >= p.nk) continue;
    int64_t s = p.keptShape[i];
    int64_t q = k / s;
    int64_t idx = k - q * s;
    inOff += idx * p.keptStrides[i];
    outOff += idx * p.outStrides[i];
    k = q;
  }
}

__device__ __forceinline__ void finish(int op, Acc a, int64_t R, void* out, DType ot, int64_t outOff) {
  if (op == R_ARGMAX || op == R_ARGMIN) { static_cast<long long*>(out)[outOff] = a.idx; return; }
  float v = a.v;
  if (op == R_MEAN) v = R ? a.v / static_cast<float>(R) : nanF();
  stf(out, outOff, ot, v);
}

// Tree over the TPO lanes of each group (shared memory, fixed shape). All threads of the block
// take part in every __syncthreads (groups of one block share TPO).
template <int TPO>
__device__ __forceinline__ Acc groupReduce(int op, Acc a, Acc* sh) {
  const int lane = threadIdx.x % TPO, base = threadIdx.x - lane;
  sh[threadIdx.x] = a;
  __syncthreads();
#pragma unroll
  for (int s = TPO / 2; s > 0; s >>= 1) {
    if (lane < s) sh[base + lane] = combine(op, sh[base + lane], sh[base + lane + s]);
    __syncthreads();
  }
  return sh[base];
}

// Groups g in [0, K*C): output k = g / C, chunk c = g % C covering [c*chunk, min(R, (c+1)*chunk)).
// C == 1 with parts == nullptr writes the final result; otherwise partials go to parts[g].
template <int TPO>
__global__ void __launch_bounds__(kThreads) reduceKernel(int op, ReducePlan p, const void* x, DType xt, int64_t C, int64_t chunk,
                                                         Acc* parts, void* out, DType ot) {
  __shared__ Acc sh[kThreads];
  constexpr int G = kThreads / TPO;
  const int64_t groups = p.K * C;
  // Every thread runs the same number of iterations, so the __syncthreads inside stay uniform.
  for (int64_t g0 = int64_t(blockIdx.x) * G; g0 < groups; g0 += int64_t(gridDim.x) * G) {
    const int64_t g = g0 + threadIdx.x / TPO;
    const int lane = threadIdx.x % TPO;
    Acc a = identity(op);
    int64_t outOff = 0;
    if (g < groups) {
      const int64_t k = g / C, c = g - k * C;
      int64_t inOff;
      keptOffsets(p, k, inOff, outOff);
      const int64_t r0 = c * chunk, r1 = r0 + chunk < p.R ? r0 + chunk : p.R;
      for (int64_t r = r0 + lane; r < r1; r += TPO) a = combine(op, a, element(op, ldf(x, inOff + redOffset(p, r), xt), r));
    }
    a = groupReduce<TPO>(op, a, sh);
    if (g < groups && lane == 0) {
      if (parts) parts[g] = a;
      else finish(op, a, p.R, out, ot, outOff);
    }
    __syncthreads();  // sh is reused by the next round
  }
}

// Combines the C partials of each output in a fixed tree (TPO = 32).
__global__ void __launch_bounds__(kThreads) combinePartials(int op, ReducePlan p, int64_t C, const Acc* parts, void* out, DType ot) {
  __shared__ Acc sh[kThreads];
  constexpr int TPO = 32, G = kThreads / TPO;
  for (int64_t k0 = int64_t(blockIdx.x) * G; k0 < p.K; k0 += int64_t(gridDim.x) * G) {
    const int64_t k = k0 + threadIdx.x / TPO;
    const int lane = threadIdx.x % TPO;
    Acc a = identity(op);
    if (k < p.K)
      for (int64_t c = lane; c < C; c += TPO) a = combine(op, a, parts[k * C + c]);
    a = groupReduce<TPO>(op, a, sh);
    if (k < p.K && lane == 0) {
      int64_t inOff, outOff;
      keptOffsets(p, k, inOff, outOff);
      finish(op, a, p.R, out, ot, outOff);
    }
    __syncthreads();
  }
}

// Merges consecutive dims of a list where the outer stride equals inner stride * inner size.
void coalesce(int& n, int64_t* shape, int64_t* strides, int64_t* strides2) {
  int m = 0;
  for (int i = 0; i < n; ++i) {
    if (shape[i] == 1) continue;
    bool merge = m > 0 && strides[m - 1] == strides[i] * shape[i] && (!strides2 || strides2[m - 1] == strides2[i] * shape[i]);
    if (merge) {
      shape[m - 1] *= shape[i];
      strides[m - 1] = strides[i];
      if (strides2) strides2[m - 1] = strides2[i];
    } else {
      shape[m] = shape[i];
      strides[m] = strides[i];
      if (strides2) strides2[m] = strides2[i];
      ++m;
    }
  }
  n = m;
}

}  // namespace

void reduce(int op, const View& x, const bool* reduced, const View& out) {
  if (op < R_SUM || op > R_PROD) throw KernelError("QDM_BAD_ARGUMENT", "reduce: unknown op " + std::to_string(op));
  if (!isFloat3(x.dtype)) throw KernelError("QDM_DTYPE", std::string("reduce: expected f32, f16 or bf16, got ") + dtypeName(x.dtype));
  const bool argOut = op == R_ARGMAX || op == R_ARGMIN;
  if (argOut ? out.dtype != DType::I64 : !isFloat3(out.dtype)) throw KernelError("QDM_DTYPE", "reduce: wrong output dtype");
  ReducePlan p;
  for (int i = 0; i < x.ndim; ++i) {
    if (reduced[i]) { p.redShape[p.nr] = x.shape[i]; p.redStrides[p.nr] = x.strides[i]; ++p.nr; }
    else { p.keptShape[p.nk] = x.shape[i]; p.keptStrides[p.nk] = x.strides[i]; ++p.nk; }
  }
  if (out.ndim != p.nk) throw KernelError("QDM_SHAPE_MISMATCH", "reduce: output rank must equal the number of kept dims");
  for (int i = 0; i < p.nk; ++i) {
    if (out.shape[i] != p.keptShape[i]) throw KernelError("QDM_SHAPE_MISMATCH", "reduce: output shape differs from kept dims");
    p.outStrides[i] = out.strides[i];
  }
  for (int i = 0; i < p.nk; ++i) p.K *= p.keptShape[i];
  for (int i = 0; i < p.nr; ++i) p.R *= p.redShape[i];
  if (p.R == 0 && (op == R_MAX || op == R_MIN || argOut)) throw KernelError("QDM_BAD_ARGUMENT", "reduce: max/min/argmax over an empty dimension");
  if (p.K == 0) return;
  // Coalescing keeps the row-major order of the reduced index r (arg ops report r).
  coalesce(p.nr, p.redShape, p.redStrides, nullptr);
  coalesce(p.nk, p.keptShape, p.keptStrides, p.outStrides);

  const int64_t chunkTarget = 32768;
  const int64_t C = (p.K < 64 && p.R > 65536) ? std::min<int64_t>((p.R + chunkTarget - 1) / chunkTarget, 512) : 1;
  const int64_t chunk = C == 1 ? (p.R > 0 ? p.R : 1) : (p.R + C - 1) / C;
  Acc* parts = nullptr;
  if (C > 1) parts = static_cast<Acc*>(allocDevice(sizeof(Acc) * static_cast<size_t>(p.K * C)));
  const int64_t groups = p.K * C;
  if (C == 1 && p.R <= 1024) {
    unsigned grid = gridFor(groups, kThreads / 32);
    reduceKernel<32><<<grid, kThreads, 0, stream()>>>(op, p, x.data, x.dtype, C, chunk, parts, out.data, out.dtype);
  } else {
    unsigned grid = gridFor(groups, 1);
    reduceKernel<256><<<grid, kThreads, 0, stream()>>>(op, p, x.data, x.dtype, C, chunk, parts, out.data, out.dtype);
  }
  try {
    checkLaunch("reduce");
    if (parts) {
      combinePartials<<<gridFor(p.K, kThreads / 32), kThreads, 0, stream()>>>(op, p, C, parts, out.data, out.dtype);
      checkLaunch("reduce (combine)");
    }
  } catch (...) {
    freeDevice(parts);
    throw;
  }
  freeDevice(parts);  // stream-ordered: reused only by later work
}

}  // namespace qdm::cuda
