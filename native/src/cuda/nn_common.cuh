// Device helpers shared by the normalisation and softmax kernels (norm.cu, softmax.cu):
// vectorised 4-element loads/stores for any float dtype, and deterministic warp / row-group sums.
//
// Rows are reduced by a fixed set of threads in a fixed order (shuffle trees, then warps in
// index order through shared memory), so a result depends only on the shape and on whether the
// vectorised path was taken (which depends only on the shape and the pointers' alignment).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/ew_common.cuh"

namespace qdm::cuda::nn {

using ew::ldf;
using ew::stf;

inline cudaStream_t stream() { return static_cast<cudaStream_t>(currentStream()); }

inline bool isFloatDtype(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16; }

// Whether 4-element vectors starting at every multiple of 4 elements are aligned for this view.
inline bool vec4Aligned(const View& v) {
  if (!v.data) return true;
  const uintptr_t a = reinterpret_cast<uintptr_t>(v.data);
  return a % (4 * dtypeSize(v.dtype)) == 0;
}

// Loads elements off..off+3 (off a multiple of 4, pointer 4-element aligned) as floats.
__device__ __forceinline__ float4 ld4(const void* base, int64_t off, DType dt) {
  if (dt == DType::F32) return *reinterpret_cast<const float4*>(static_cast<const float*>(base) + off);
  const uint2 raw = *reinterpret_cast<const uint2*>(static_cast<const uint16_t*>(base) + off);
  float2 lo, hi;
  if (dt == DType::F16) {
    lo = __half22float2(*reinterpret_cast<const __half2*>(&raw.x));
    hi = __half22float2(*reinterpret_cast<const __half2*>(&raw.y));
  } else {
    lo = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&raw.x));
    hi = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&raw.y));
  }
  return make_float4(lo.x, lo.y, hi.x, hi.y);
}
__device__ __forceinline__ void st4(void* base, int64_t off, DType dt, float4 v) {
  if (dt == DType::F32) { *reinterpret_cast<float4*>(static_cast<float*>(base) + off) = v; return; }
  uint2 raw;
  if (dt == DType::F16) {
    __half2 a = __floats2half2_rn(v.x, v.y), b = __floats2half2_rn(v.z, v.w);
    raw.x = *reinterpret_cast<uint32_t*>(&a); raw.y = *reinterpret_cast<uint32_t*>(&b);
  } else {
    __nv_bfloat162 a = __floats2bfloat162_rn(v.x, v.y), b = __floats2bfloat162_rn(v.z, v.w);
    raw.x = *reinterpret_cast<uint32_t*>(&a); raw.y = *reinterpret_cast<uint32_t*>(&b);
  }
  *reinterpret_cast<uint2*>(static_cast<uint16_t*>(base) + off) = raw;
}

__device__ __forceinline__ float warpSum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warpMax(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum (or max) over a row group of W warps (W == 1: one warp; otherwise the whole block is one
// group and every thread must call this). `sh` holds at least W floats. Every thread gets the
// result; the warps' partials are combined in index order.
template <int W>
__device__ __forceinline__ float groupSum(float v, float* sh) {
  v = warpSum(v);
  if constexpr (W == 1) {
    return v;
  } else {
    __syncthreads();  // sh may still be read by a previous call
    if ((threadIdx.x & 31) == 0) sh[threadIdx.x >> 5] = v;
    __syncthreads();
    float t = 0.0f;
#pragma unroll
    for (int i = 0; i < W; ++i) t += sh[i];
    return t;
  }
}
template <int W>
__device__ __forceinline__ float groupMax(float v, float* sh) {
  v = warpMax(v);
  if constexpr (W == 1) {
    return v;
  } else {
    __syncthreads();
    if ((threadIdx.x & 31) == 0) sh[threadIdx.x >> 5] = v;
    __syncthreads();
    float t = sh[0];
#pragma unroll
    for (int i = 1; i < W; ++i) t = fmaxf(t, sh[i]);
    return t;
  }
}

// Visits the elements [base, base + len) owned by thread `tid` of `nt`: f(i, value) with i
// relative to base. vec: len % 4 == 0, base % 4 == 0 and an aligned pointer (4 at a time).
template <typename F>
__device__ __forceinline__ void forRow(const void* p, DType dt, int64_t base, int64_t len, bool vec, int tid, int nt, F&& f) {
  if (vec) {
    for (int64_t i = 4 * static_cast<int64_t>(tid); i < len; i += 4 * static_cast<int64_t>(nt)) {
      const float4 v = ld4(p, base + i, dt);
      f(i, v.x); f(i + 1, v.y); f(i + 2, v.z); f(i + 3, v.w);
    }
  } else {
    for (int64_t i = tid; i < len; i += nt) f(i, ldf(p, base + i, dt));
  }
}

}  // namespace qdm::cuda::nn
