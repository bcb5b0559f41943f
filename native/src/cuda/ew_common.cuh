// Device helpers shared by the elementwise-family kernels (elementwise.cu, reduce.cu,
// indexing.cu, random.cu): typed loads/stores by runtime dtype with the CPU kernels' conversion
// rules, and strided iteration plans with the CPU's dim coalescing.
//
// Loads and stores switch on the operand's dtype at run time: these kernels are memory-bound,
// the switch is uniform across a warp, and one kernel serves every dtype mix (the op files add
// compile-time fast paths for the common all-same-dtype contiguous case).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "qdm/cuda_device.h"
#include "qdm/view.h"

namespace qdm::cuda::ew {

constexpr int kThreads = 256;

inline cudaStream_t stream() { return static_cast<cudaStream_t>(currentStream()); }

// Grid for a grid-stride loop over n items: enough blocks to fill the GPU, no more.
inline unsigned gridFor(int64_t n, int threads = kThreads) {
  static int cap = 0;
  if (cap == 0) cap = smCount() * 16 > 0 ? smCount() * 16 : 1024;
  int64_t b = (n + threads - 1) / threads;
  if (b > cap) b = cap;
  return static_cast<unsigned>(b < 1 ? 1 : b);
}

__device__ __forceinline__ float nanF() { return __int_as_float(0x7fc00000); }

__device__ __forceinline__ float fp8ToFloat(uint8_t v) {
  __half_raw h = __nv_cvt_fp8_to_halfraw(static_cast<__nv_fp8_storage_t>(v), __NV_E4M3);
  return __half2float(__half(h));
}
__device__ __forceinline__ uint8_t floatToFp8(float f) {
  // Saturating (448), NaN -> 0x7f: the CPU's floatToFp8e4m3.
  return static_cast<uint8_t>(__nv_cvt_float_to_fp8(f, __NV_SATFINITE, __NV_E4M3));
}

// Float-valued load of any dtype but i4 (the callers reject i4).
__device__ __forceinline__ float ldf(const void* base, int64_t off, DType dt) {
  switch (dt) {
    case DType::F32: return static_cast<const float*>(base)[off];
    case DType::F16: return __half2float(static_cast<const __half*>(base)[off]);
    case DType::BF16: return __bfloat162float(static_cast<const __nv_bfloat16*>(base)[off]);
    case DType::I8: return static_cast<float>(static_cast<const int8_t*>(base)[off]);
    case DType::U8: return static_cast<float>(static_cast<const uint8_t*>(base)[off]);
    case DType::I32: return static_cast<float>(static_cast<const int32_t*>(base)[off]);
    case DType::I64: return static_cast<float>(static_cast<const long long*>(base)[off]);
    case DType::F8E4M3: return fp8ToFloat(static_cast<const uint8_t*>(base)[off]);
    case DType::F64: return static_cast<float>(static_cast<const double*>(base)[off]);
    default: return nanF();
  }
}
// Double-valued load (copyCast, like the CPU's loadAs: exact for every integer up to 2^53).
__device__ __forceinline__ double ldd(const void* base, int64_t off, DType dt) {
  switch (dt) {
    case DType::I32: return static_cast<double>(static_cast<const int32_t*>(base)[off]);
    case DType::I64: return static_cast<double>(static_cast<const long long*>(base)[off]);
    case DType::F64: return static_cast<const double*>(base)[off];
    default: return static_cast<double>(ldf(base, off, dt));
  }
}

template <typename I>
__device__ __forceinline__ I saturateTrunc(double x, double lo, double hi) {
  if (x != x) return 0;
  x = trunc(x);
  return static_cast<I>(x < lo ? lo : (x > hi ? hi : x));
}

// Store with the CPU's storeAs rules: floats round to nearest even, integers truncate toward
// zero and saturate, NaN -> 0.
__device__ __forceinline__ void std_(void* base, int64_t off, DType dt, double x) {
  switch (dt) {
    case DType::F32: static_cast<float*>(base)[off] = static_cast<float>(x); break;
    case DType::F16: static_cast<__half*>(base)[off] = __float2half_rn(static_cast<float>(x)); break;
    case DType::BF16: static_cast<__nv_bfloat16*>(base)[off] = __float2bfloat16_rn(static_cast<float>(x)); break;
    case DType::I8: static_cast<int8_t*>(base)[off] = saturateTrunc<int8_t>(x, -128.0, 127.0); break;
    case DType::U8: static_cast<uint8_t*>(base)[off] = saturateTrunc<uint8_t>(x, 0.0, 255.0); break;
    case DType::I32: static_cast<int32_t*>(base)[off] = saturateTrunc<int32_t>(x, -2147483648.0, 2147483647.0); break;
    case DType::I64: static_cast<long long*>(base)[off] = saturateTrunc<long long>(x, -9223372036854775808.0, 9223372036854774784.0); break;
    case DType::F8E4M3: static_cast<uint8_t*>(base)[off] = floatToFp8(static_cast<float>(x)); break;
    case DType::F64: static_cast<double*>(base)[off] = x; break;
    default: break;
  }
}
// Float store: the float dtypes directly, the rest through std_.
__device__ __forceinline__ void stf(void* base, int64_t off, DType dt, float v) {
  switch (dt) {
    case DType::F32: static_cast<float*>(base)[off] = v; break;
    case DType::F16: static_cast<__half*>(base)[off] = __float2half_rn(v); break;
    case DType::BF16: static_cast<__nv_bfloat16*>(base)[off] = __float2bfloat16_rn(v); break;
    default: std_(base, off, dt, static_cast<double>(v));
  }
}

// Typed access for the compile-time fast paths.
template <typename T> __device__ __forceinline__ float toF(T v);
template <> __device__ __forceinline__ float toF<float>(float v) { return v; }
template <> __device__ __forceinline__ float toF<__half>(__half v) { return __half2float(v); }
template <> __device__ __forceinline__ float toF<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T> __device__ __forceinline__ T fromF(float v);
template <> __device__ __forceinline__ float fromF<float>(float v) { return v; }
template <> __device__ __forceinline__ __half fromF<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 fromF<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

inline bool isFloat3(DType d) { return d == DType::F32 || d == DType::F16 || d == DType::BF16; }

// ---- strided plans --------------------------------------------------------------------------

// N operands of one shape; size-1 dims dropped and adjacent dims merged where every operand
// allows it, so contiguous (or uniformly broadcast) operands become one flat run.
template <int N>
struct Plan {
  int ndim = 0;
  int64_t numel = 0;
  int64_t shape[kMaxDims] = {0};
  int64_t strides[N][kMaxDims] = {{0}};
};

template <int N>
Plan<N> makePlan(const View& shapeOf, const View* const (&ops)[N]) {
  Plan<N> p;
  p.numel = shapeOf.numel();
  int nd = 0;
  for (int i = 0; i < shapeOf.ndim; ++i) {
    if (shapeOf.shape[i] == 1) continue;
    p.shape[nd] = shapeOf.shape[i];
    for (int j = 0; j < N; ++j) p.strides[j][nd] = ops[j]->strides[i];
    ++nd;
  }
  int m = 0;
  for (int i = 0; i < nd; ++i) {
    bool merge = m > 0;
    for (int j = 0; merge && j < N; ++j) merge = p.strides[j][m - 1] == p.strides[j][i] * p.shape[i];
    if (merge) {
      p.shape[m - 1] *= p.shape[i];
      for (int j = 0; j < N; ++j) p.strides[j][m - 1] = p.strides[j][i];
    } else {
      p.shape[m] = p.shape[i];
      for (int j = 0; j < N; ++j) p.strides[j][m] = p.strides[j][i];
      ++m;
    }
  }
  p.ndim = m;
  return p;
}

// True when every operand walks memory densely (offset == linear index).
template <int N>
bool isFlat(const Plan<N>& p) {
  if (p.ndim == 0) return true;
  if (p.ndim != 1) return false;
  for (int j = 0; j < N; ++j) if (p.strides[j][0] != 1) return false;
  return true;
}

// Element offsets of linear index i (row-major over the plan's shape) for every operand.
template <int N>
__device__ __forceinline__ void offsetsOf(const Plan<N>& p, int64_t i, int64_t (&off)[N]) {
#pragma unroll
  for (int j = 0; j < N; ++j) off[j] = 0;
#pragma unroll
  for (int d = kMaxDims - 1; d >= 0; --d) {
    if (d >= p.ndim) continue;
    int64_t s = p.shape[d];
    int64_t q = i / s;
    int64_t r = i - q * s;
    i = q;
#pragma unroll
    for (int j = 0; j < N; ++j) off[j] += r * p.strides[j][d];
  }
}

}  // namespace qdm::cuda::ew
