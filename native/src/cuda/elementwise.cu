// Elementwise CUDA kernels with the CPU kernels' names and semantics (cpu/elementwise.cpp):
// strided copy/cast, fill, binary ops broadcasting through stride-0 operands, unary ops and
// their fused backward, where. Math in f32 (the CPU does the same); operands and outputs in any
// of f32/f16/bf16 (copyCast and fill: every dtype but i4).
//
// Structure: one grid-stride kernel per family. A fast path, templated on the element type,
// serves the common case (all operands the same float dtype and dense); a generic path walks
// any strides with the coalesced plan of ew_common.cuh and converts per operand dtype at run
// time. The op code is a run-time switch (uniform across the grid), which keeps the number of
// instantiations, and compile time, small.
#include <math_constants.h>

#include <string>

#include "cuda/ew_common.cuh"
#include "qdm/cuda_elementwise.h"
#include "qdm/opcodes.h"

namespace qdm::cuda {
namespace {
using namespace ew;

// ---- op tables (the CPU's lambdas, in f32) -----------------------------------------------

__device__ __forceinline__ float sigmoidF(float x) { return 1.0f / (1.0f + expf(-x)); }

__device__ __forceinline__ float binop(int op, float x, float y) {
  switch (op) {
    case B_ADD: return x + y;
    case B_SUB: return x - y;
    case B_MUL: return x * y;
    case B_DIV: return x / y;
    case B_POW: return powf(x, y);
    case B_MAX: return (x != x || y != y) ? nanF() : (x > y ? x : y);
    case B_MIN: return (x != x || y != y) ? nanF() : (x < y ? x : y);
    case B_EQ: return x == y ? 1.0f : 0.0f;
    case B_NE: return x != y ? 1.0f : 0.0f;
    case B_LT: return x < y ? 1.0f : 0.0f;
    case B_LE: return x <= y ? 1.0f : 0.0f;
    case B_GT: return x > y ? 1.0f : 0.0f;
    case B_GE: return x >= y ? 1.0f : 0.0f;
    default: return nanF();
  }
}

__device__ __forceinline__ float unop(int op, float v, float p0, float p1) {
  switch (op) {
    case U_NEG: return -v;
    case U_ABS: return fabsf(v);
    case U_EXP: return expf(v);
    case U_LOG: return logf(v);
    case U_SQRT: return sqrtf(v);
    case U_RSQRT: return 1.0f / sqrtf(v);
    case U_TANH: return tanhf(v);
    case U_SIGMOID: return sigmoidF(v);
    case U_SILU: return v * sigmoidF(v);
    case U_GELU: return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
    case U_GELU_TANH: {
      const float k = 0.7978845608028654f;
      return 0.5f * v * (1.0f + tanhf(k * (v + 0.044715f * v * v * v)));
    }
    case U_RELU: return v > 0 ? v : (v != v ? v : 0.0f);
    case U_ROUND: return rintf(v);  // half to even, as std::nearbyint in the default mode
    case U_SIGN: return v > 0 ? 1.0f : (v < 0 ? -1.0f : 0.0f);
    case U_SQUARE: return v * v;
    case U_RECIP: return 1.0f / v;
    case U_CLAMP: return v != v ? v : (v < p0 ? p0 : (v > p1 ? p1 : v));
    case U_AFFINE: return p0 * v + p1;
    case U_POWS: return powf(v, p0);
    case U_SIN: return sinf(v);
    case U_COS: return cosf(v);
    case U_FLOOR: return floorf(v);
    case U_CEIL: return ceilf(v);
    case U_LOG1P: return log1pf(v);
    case U_EXPM1: return expm1f(v);
    default: return nanF();
  }
}

// d(op)/dx * d, as cpu::unaryBackward.
__device__ __forceinline__ float unopGrad(int op, float v, float d, float p0) {
  switch (op) {
    case U_NEG: return -d;
    case U_ABS: return v > 0 ? d : (v < 0 ? -d : 0.0f);
    case U_EXP: return d * expf(v);
    case U_LOG: return d / v;
    case U_SQRT: return d * 0.5f / sqrtf(v);
    case U_RSQRT: return d * -0.5f / (v * sqrtf(v));
    case U_TANH: { float t = tanhf(v); return d * (1.0f - t * t); }
    case U_SIGMOID: { float s = sigmoidF(v); return d * s * (1.0f - s); }
    case U_SILU: { float s = sigmoidF(v); return d * s * (1.0f + v * (1.0f - s)); }
    case U_GELU: {
      float cdf = 0.5f * (1.0f + erff(v * 0.70710678118654752f));
      float pdf = 0.3989422804014327f * expf(-0.5f * v * v);
      return d * (cdf + v * pdf);
    }
    case U_GELU_TANH: {
      const float k = 0.7978845608028654f;
      float u = k * (v + 0.044715f * v * v * v);
      float t = tanhf(u);
      float du = k * (1.0f + 3.0f * 0.044715f * v * v);
      return d * (0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * du);
    }
    case U_RELU: return v > 0 ? d : 0.0f;
    case U_ROUND: case U_FLOOR: case U_CEIL: case U_SIGN: return 0.0f;
    case U_SQUARE: return 2.0f * v * d;
    case U_RECIP: return -d / (v * v);
    case U_CLAMP: return nanF();  // handled by the caller (needs p1)
    case U_AFFINE: return p0 * d;
    case U_POWS: return p0 == 0 ? 0.0f : d * p0 * powf(v, p0 - 1.0f);
    case U_SIN: return d * cosf(v);
    case U_COS: return -d * sinf(v);
    case U_LOG1P: return d / (1.0f + v);
    case U_EXPM1: return d * expf(v);
    default: return nanF();
  }
}
__device__ __forceinline__ float unopGrad2(int op, float v, float d, float p0, float p1) {
  if (op == U_CLAMP) return (v >= p0 && v <= p1) ? d : 0.0f;
  return unopGrad(op, v, d, p0);
}

// ---- kernels ------------------------------------------------------------------------------

// Same-dtype copy of element size ES (bit-exact, NaN payloads kept).
template <int ES>
struct Bytes { uint8_t b[ES]; };
template <> struct Bytes<1> { uint8_t v; };
template <> struct Bytes<2> { uint16_t v; };
template <> struct Bytes<4> { uint32_t v; };
template <> struct Bytes<8> { unsigned long long v; };

template <int ES>
__global__ void copyKernel(Plan<2> p, void* dst, const void* src) {
  using W = Bytes<ES>;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < p.numel; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t off[2];
    offsetsOf(p, i, off);
    static_cast<W*>(dst)[off[0]] = static_cast<const W*>(src)[off[1]];
  }
}

__global__ void castKernel(Plan<2> p, void* dst, DType dt, const void* src, DType st) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < p.numel; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t off[2];
    offsetsOf(p, i, off);
    std_(dst, off[0], dt, ldd(src, off[1], st));
  }
}

template <typename T>
__global__ void castFastKernel(int64_t n, T* dst, const void* src, DType st) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    dst[i] = fromF<T>(ldf(src, i, st));
}

__global__ void fillKernel(Plan<1> p, void* dst, DType dt, double value) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < p.numel; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t off[1];
    offsetsOf(p, i, off);
    std_(dst, off[0], dt, value);
  }
}

template <typename T>
__global__ void binaryFast(int op, int64_t n, const T* a, const T* b, T* out) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = fromF<T>(binop(op, toF(a[i]), toF(b[i])));
}
__global__ void binaryGeneric(int op, Plan<3> p, void* out, DType ot, const void* a, DType at, const void* b, DType bt) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < p.numel; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t off[3];
    offsetsOf(p, i, off);
    stf(out, off[0], ot, binop(op, ldf(a, off[1], at), ldf(b, off[2], bt)));
  }
}

template <typename T>
__global__ void unaryFast(int op, int64_t n, const T* x, T* out, float p0, float p1) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = fromF<T>(unop(op, toF(x[i]), p0, p1));
}
__global__ void unaryGeneric(int op, Plan<2> p, void* out, DType ot, const void* x, DType xt, float p0, float p1) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < p.numel; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t off[2];
    offsetsOf(p, i, off);
    stf(out, off[0], ot, unop(op, ldf(x, off[1], xt), p0, p1));
  }
}

template <typename T>
__global__ void unaryBackwardFast(int op, int64_t n, const T* x, const T* g, T* out, float p0, float p1) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = fromF<T>(unopGrad2(op, toF(x[i]), toF(g[i]), p0, p1));
}
__global__ void unaryBackwardGeneric(int op, Plan<3> p, void* out, DType ot, const void* x, DType xt, const void* g, DType gt, float p0, float p1) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < p.numel; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t off[3];
    offsetsOf(p, i, off);
    stf(out, off[0], ot, unopGrad2(op, ldf(x, off[1], xt), ldf(g, off[2], gt), p0, p1));
  }
}

__global__ void whereKernel(Plan<4> p, void* out, DType ot, const uint8_t* c, const void* a, DType at, const void* b, DType bt) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < p.numel; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t off[4];
    offsetsOf(p, i, off);
    stf(out, off[0], ot, c[off[1]] ? ldf(a, off[2], at) : ldf(b, off[3], bt));
  }
}

// ---- host helpers -------------------------------------------------------------------------

void checkSameShape(const View& a, const View& b, const char* op) {
  bool ok = a.ndim == b.ndim;
  for (int i = 0; ok && i < a.ndim; ++i) ok = a.shape[i] == b.shape[i];
  if (!ok) throw KernelError("QDM_SHAPE_MISMATCH", std::string(op) + ": operand shapes differ");
}
void checkFloat(const View& v, const char* op, const char* what) {
  if (!isFloat3(v.dtype)) throw KernelError("QDM_DTYPE", std::string(op) + ": " + what + " must be f32, f16 or bf16 on CUDA, got " + dtypeName(v.dtype));
}
void checkNotI4(const View& v, const char* op) {
  if (v.dtype == DType::I4) throw KernelError("QDM_CUDA_UNSUPPORTED", std::string(op) + ": packed i4 views have no CUDA kernel yet (move them with .to(), which copies bytes)");
}

}  // namespace

// ---- launchers ----------------------------------------------------------------------------

void copyCast(const View& src, const View& dst) {
  checkSameShape(src, dst, "copyCast");
  checkNotI4(src, "copyCast");
  checkNotI4(dst, "copyCast");
  const View* ops[2] = {&dst, &src};
  Plan<2> p = makePlan<2>(dst, ops);
  if (p.numel == 0) return;
  const unsigned grid = gridFor(p.numel);
  if (src.dtype == dst.dtype) {
    switch (dtypeSize(src.dtype)) {
      case 1: copyKernel<1><<<grid, kThreads, 0, stream()>>>(p, dst.data, src.data); break;
      case 2: copyKernel<2><<<grid, kThreads, 0, stream()>>>(p, dst.data, src.data); break;
      case 4: copyKernel<4><<<grid, kThreads, 0, stream()>>>(p, dst.data, src.data); break;
      default: copyKernel<8><<<grid, kThreads, 0, stream()>>>(p, dst.data, src.data); break;
    }
  } else if (isFlat(p) && isFloat3(dst.dtype) && src.dtype != DType::I32 && src.dtype != DType::I64 && src.dtype != DType::F64) {
    // Dense cast into a float dtype from a float or 8-bit source: one float conversion per element is exact.
    switch (dst.dtype) {
      case DType::F32: castFastKernel<float><<<grid, kThreads, 0, stream()>>>(p.numel, static_cast<float*>(dst.data), src.data, src.dtype); break;
      case DType::F16: castFastKernel<__half><<<grid, kThreads, 0, stream()>>>(p.numel, static_cast<__half*>(dst.data), src.data, src.dtype); break;
      default: castFastKernel<__nv_bfloat16><<<grid, kThreads, 0, stream()>>>(p.numel, static_cast<__nv_bfloat16*>(dst.data), src.data, src.dtype); break;
    }
  } else {
    castKernel<<<grid, kThreads, 0, stream()>>>(p, dst.data, dst.dtype, src.data, src.dtype);
  }
  checkLaunch("copyCast");
}

void fill(const View& dst, double value) {
  checkNotI4(dst, "fill");
  const View* ops[1] = {&dst};
  Plan<1> p = makePlan<1>(dst, ops);
  if (p.numel == 0) return;
  fillKernel<<<gridFor(p.numel), kThreads, 0, stream()>>>(p, dst.data, dst.dtype, value);
  checkLaunch("fill");
}

void binary(int op, const View& a, const View& b, const View& out) {
  if (op < B_ADD || op > B_GE) throw KernelError("QDM_BAD_ARGUMENT", "binary: unknown op " + std::to_string(op));
  checkFloat(a, "binary", "a"); checkFloat(b, "binary", "b");
  if (out.dtype == DType::I4) checkNotI4(out, "binary");
  checkSameShape(a, out, "binary"); checkSameShape(b, out, "binary");
  const View* ops[3] = {&out, &a, &b};
  Plan<3> p = makePlan<3>(out, ops);
  if (p.numel == 0) return;
  const unsigned grid = gridFor(p.numel);
  if (isFlat(p) && a.dtype == out.dtype && b.dtype == out.dtype) {
    switch (out.dtype) {
      case DType::F32: binaryFast<float><<<grid, kThreads, 0, stream()>>>(op, p.numel, a.ptr<float>(), b.ptr<float>(), out.ptr<float>()); break;
      case DType::F16: binaryFast<__half><<<grid, kThreads, 0, stream()>>>(op, p.numel, a.ptr<__half>(), b.ptr<__half>(), out.ptr<__half>()); break;
      default: binaryFast<__nv_bfloat16><<<grid, kThreads, 0, stream()>>>(op, p.numel, a.ptr<__nv_bfloat16>(), b.ptr<__nv_bfloat16>(), out.ptr<__nv_bfloat16>()); break;
    }
  } else {
    binaryGeneric<<<grid, kThreads, 0, stream()>>>(op, p, out.data, out.dtype, a.data, a.dtype, b.data, b.dtype);
  }
  checkLaunch("binary");
}

void unary(int op, const View& x, const View& out, float p0, float p1) {
  if (op < U_NEG || op > U_EXPM1) throw KernelError("QDM_BAD_ARGUMENT", "unary: unknown op " + std::to_string(op));
  checkFloat(x, "unary", "x"); checkFloat(out, "unary", "out");
  checkSameShape(x, out, "unary");
  const View* ops[2] = {&out, &x};
  Plan<2> p = makePlan<2>(out, ops);
  if (p.numel == 0) return;
  const unsigned grid = gridFor(p.numel);
  if (isFlat(p) && x.dtype == out.dtype) {
    switch (out.dtype) {
      case DType::F32: unaryFast<float><<<grid, kThreads, 0, stream()>>>(op, p.numel, x.ptr<float>(), out.ptr<float>(), p0, p1); break;
      case DType::F16: unaryFast<__half><<<grid, kThreads, 0, stream()>>>(op, p.numel, x.ptr<__half>(), out.ptr<__half>(), p0, p1); break;
      default: unaryFast<__nv_bfloat16><<<grid, kThreads, 0, stream()>>>(op, p.numel, x.ptr<__nv_bfloat16>(), out.ptr<__nv_bfloat16>(), p0, p1); break;
    }
  } else {
    unaryGeneric<<<grid, kThreads, 0, stream()>>>(op, p, out.data, out.dtype, x.data, x.dtype, p0, p1);
  }
  checkLaunch("unary");
}

void unaryBackward(int op, const View& x, const View& g, const View& out, float p0, float p1) {
  if (op < U_NEG || op > U_EXPM1) throw KernelError("QDM_BAD_ARGUMENT", "unaryBackward: unknown op " + std::to_string(op));
  checkFloat(x, "unaryBackward", "x"); checkFloat(g, "unaryBackward", "grad"); checkFloat(out, "unaryBackward", "out");
  checkSameShape(x, out, "unaryBackward"); checkSameShape(g, out, "unaryBackward");
  const View* ops[3] = {&out, &x, &g};
  Plan<3> p = makePlan<3>(out, ops);
  if (p.numel == 0) return;
  const unsigned grid = gridFor(p.numel);
  if (isFlat(p) && x.dtype == out.dtype && g.dtype == out.dtype) {
    switch (out.dtype) {
      case DType::F32: unaryBackwardFast<float><<<grid, kThreads, 0, stream()>>>(op, p.numel, x.ptr<float>(), g.ptr<float>(), out.ptr<float>(), p0, p1); break;
      case DType::F16: unaryBackwardFast<__half><<<grid, kThreads, 0, stream()>>>(op, p.numel, x.ptr<__half>(), g.ptr<__half>(), out.ptr<__half>(), p0, p1); break;
      default: unaryBackwardFast<__nv_bfloat16><<<grid, kThreads, 0, stream()>>>(op, p.numel, x.ptr<__nv_bfloat16>(), g.ptr<__nv_bfloat16>(), out.ptr<__nv_bfloat16>(), p0, p1); break;
    }
  } else {
    unaryBackwardGeneric<<<grid, kThreads, 0, stream()>>>(op, p, out.data, out.dtype, x.data, x.dtype, g.data, g.dtype, p0, p1);
  }
  checkLaunch("unaryBackward");
}

void where(const View& cond, const View& a, const View& b, const View& out) {
  if (cond.dtype != DType::U8) throw KernelError("QDM_DTYPE", "where: condition must be u8 (bool)");
  checkFloat(a, "where", "a"); checkFloat(b, "where", "b"); checkFloat(out, "where", "out");
  checkSameShape(cond, out, "where"); checkSameShape(a, out, "where"); checkSameShape(b, out, "where");
  const View* ops[4] = {&out, &cond, &a, &b};
  Plan<4> p = makePlan<4>(out, ops);
  if (p.numel == 0) return;
  whereKernel<<<gridFor(p.numel), kThreads, 0, stream()>>>(p, out.data, out.dtype, cond.ptr<uint8_t>(), a.data, a.dtype, b.data, b.dtype);
  checkLaunch("where");
}

}  // namespace qdm::cuda
