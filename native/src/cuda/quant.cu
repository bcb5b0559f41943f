// CUDA fake quantization with LSQ gradients, integer packing and dequantization: the CUDA
// twins of src/cpu/quant.cpp, with the same element math so the codes match bit for bit.
//
// The build uses --use_fast_math, which would turn x / s into an approximate division and let
// the compiler contract multiply-adds; the element math therefore spells every rounding step
// with the IEEE intrinsics (__fdiv_rn, __fadd_rn, __fsub_rn, __fmul_rn) and rintf (round half to
// even), exactly the operations the CPU kernel performs in fp32.
//
// Gradient reductions are deterministic: a first kernel writes one double partial per (parameter,
// slice) from a fixed partition of that parameter's elements with a fixed shared-memory tree, a
// second kernel sums each parameter's partials in order. No float atomics, so a run reproduces
// itself bit for bit; sums are in double like the CPU's (the order differs, so the two agree to
// rounding, ~1e-7 relative). Operand dtypes (f32/f16/bf16) are a runtime switch in the load and
// store helpers rather than template parameters: these kernels are memory bound and it keeps
// the compile to one instantiation each.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <string>

#include "qdm/cuda_device.h"
#include "qdm/cuda_quant.h"

namespace qdm::cuda {
namespace {

constexpr int kThreads = 256;

inline cudaStream_t stream() { return static_cast<cudaStream_t>(currentStream()); }

struct DevLayout {
  int mode;
  int64_t n, channels, inner, groupSize, cols;
};

__device__ __forceinline__ float loadF(const void* p, int dt, int64_t i) {
  if (dt == static_cast<int>(DType::F16)) return __half2float(static_cast<const __half*>(p)[i]);
  if (dt == static_cast<int>(DType::BF16)) return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
  return static_cast<const float*>(p)[i];
}
__device__ __forceinline__ void storeF(void* p, int dt, int64_t i, float v) {
  if (dt == static_cast<int>(DType::F16)) static_cast<__half*>(p)[i] = __float2half_rn(v);
  else if (dt == static_cast<int>(DType::BF16)) static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v);
  else static_cast<float*>(p)[i] = v;
}

__device__ __forceinline__ int64_t paramOf(const DevLayout& L, int64_t i) {
  switch (L.mode) {
    case 1: return (i / L.inner) % L.channels;
    case 2: return i / L.groupSize;
    case 3: return i / L.cols;
    default: return 0;
  }
}
__device__ __forceinline__ float scaleAt(const DevLayout& L, const float* scale, const float* col, int64_t i, int64_t p) {
  return L.mode == 3 ? __fmul_rn(scale[p], col[i % L.cols]) : scale[p];
}
// std::min(std::max(v, qmin), qmax) with the std semantics (a NaN stays NaN).
__device__ __forceinline__ float clampStd(float v, float qmin, float qmax) {
  const float a = (v < qmin) ? qmin : v;
  return (qmax < a) ? qmax : a;
}
__device__ __forceinline__ float quantCode(float x, float s, float z, float qmin, float qmax) {
  return clampStd(__fadd_rn(rintf(__fdiv_rn(x, s)), z), qmin, qmax);
}
struct Partials { float dx, ds, dz; };
__device__ __forceinline__ Partials partials(float x, float s, float z, float qmin, float qmax) {
  const float v = __fdiv_rn(x, s);
  const float r = rintf(v);
  const float q = __fadd_rn(r, z);
  if (q < qmin) return {0.0f, __fsub_rn(qmin, z), -s};
  if (q > qmax) return {0.0f, __fsub_rn(qmax, z), -s};
  return {1.0f, __fsub_rn(r, v), 0.0f};
}

DevLayout devLayout(const FakeQuantLayout& L) { return {L.mode, L.n, L.channels, L.inner, L.groupSize, L.cols}; }
int gridFor(int64_t n) { return static_cast<int>(std::min<int64_t>((n + kThreads - 1) / kThreads, 65535LL * 8)); }

__global__ void fqForwardKernel(const void* x, int xdt, const float* scale, const float* col, const float* zero, void* out, int odt,
                                DevLayout L, float qmin, float qmax) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < L.n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t p = paramOf(L, i);
    const float s = scaleAt(L, scale, col, i, p), z = zero[p];
    storeF(out, odt, i, __fmul_rn(__fsub_rn(quantCode(loadF(x, xdt, i), s, z, qmin, qmax), z), s));
  }
}

__global__ void fqGradXKernel(const void* x, int xdt, const float* scale, const float* col, const float* zero, const void* g, int gdt,
                              void* gx, int gxdt, DevLayout L, float qmin, float qmax) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < L.n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t p = paramOf(L, i);
    const Partials d = partials(loadF(x, xdt, i), scaleAt(L, scale, col, i, p), zero[p], qmin, qmax);
    storeF(gx, gxdt, i, __fmul_rn(loadF(g, gdt, i), d.dx));
  }
}

// Fixed-shape shared-memory tree over kThreads values (deterministic).
__device__ __forceinline__ double2 blockSum(double2 v, double2* sh) {
  sh[threadIdx.x] = v;
  __syncthreads();
  for (int w = kThreads / 2; w > 0; w >>= 1) {
    if (threadIdx.x < w) { sh[threadIdx.x].x += sh[threadIdx.x + w].x; sh[threadIdx.x].y += sh[threadIdx.x + w].y; }
    __syncthreads();
  }
  return sh[0];
}

// Parameter p = blockIdx.x owns the elements (o * C + p) * inner + k, o < outer, k < inner (tensor:
// C = 1, inner = n; channel: C = channels; group / separable rows: C = P, outer = 1, inner = the
// segment). Slice blockIdx.y of `splits` takes a fixed contiguous range of them. Writes
// (sum g*ds [* col for separable], sum g*dz) to partial[p * splits + slice].
__global__ void fqParamPartialKernel(const void* x, int xdt, const float* scale, const float* col, const float* zero, const void* g, int gdt,
                                     DevLayout L, float qmin, float qmax, int64_t C, int64_t outer, int64_t inner, int splits, double2* partial) {
  __shared__ double2 sh[kThreads];
  const int64_t p = blockIdx.x;
  const int64_t per = outer * inner, chunk = (per + splits - 1) / splits;
  const int64_t j0 = blockIdx.y * chunk, j1 = min(per, j0 + chunk);
  const bool sep = L.mode == 3;
  double s = 0.0, z = 0.0;
  for (int64_t j = j0 + threadIdx.x; j < j1; j += kThreads) {
    const int64_t o = j / inner, k = j - o * inner;
    const int64_t i = (o * C + p) * inner + k;
    const float sc = sep ? __fmul_rn(scale[p], col[i % L.cols]) : scale[p];
    const Partials d = partials(loadF(x, xdt, i), sc, zero[p], qmin, qmax);
    const double gi = loadF(g, gdt, i);
    const double gs = __dmul_rn(gi, double(d.ds));
    s += sep ? __dmul_rn(gs, double(col[i % L.cols])) : gs;
    z += __dmul_rn(gi, double(d.dz));
  }
  const double2 r = blockSum(make_double2(s, z), sh);
  if (threadIdx.x == 0) partial[p * splits + blockIdx.y] = r;
}

// Separable column factor: gradCol_j = sum_r g*ds*row_r. Block (32 columns) x (8 row lanes);
// slice blockIdx.y of the rows; lanes combined in order; partial[j * splits + slice].
__global__ void fqColPartialKernel(const void* x, int xdt, const float* scale, const float* col, const float* zero, const void* g, int gdt,
                                   DevLayout L, float qmin, float qmax, int64_t R, int splits, double2* partial) {
  __shared__ double sh[8][32];
  const int64_t K = L.cols;
  const int64_t j = blockIdx.x * 32LL + threadIdx.x;
  const int64_t chunk = (R + splits - 1) / splits, r0 = blockIdx.y * chunk, r1 = min(R, r0 + chunk);
  double acc = 0.0;
  if (j < K) {
    for (int64_t r = r0 + threadIdx.y; r < r1; r += 8) {
      const int64_t i = r * K + j;
      const Partials d = partials(loadF(x, xdt, i), __fmul_rn(scale[r], col[j]), zero[r], qmin, qmax);
      acc += __dmul_rn(__dmul_rn(double(loadF(g, gdt, i)), double(d.ds)), double(scale[r]));
    }
  }
  sh[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && j < K) {
    double s = 0.0;
    for (int l = 0; l < 8; ++l) s += sh[l][threadIdx.x];
    partial[j * splits + blockIdx.y] = make_double2(s, 0.0);
  }
}

// out[p] = sum over the partials of parameter p, in slice order.
__global__ void fqFinishKernel(const double2* partial, int64_t P, int splits, float* outS, float* outZ) {
  const int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (p >= P) return;
  double s = 0.0, z = 0.0;
  for (int k = 0; k < splits; ++k) { const double2 v = partial[p * splits + k]; s += v.x; z += v.y; }
  if (outS) outS[p] = static_cast<float>(s);
  if (outZ) outZ[p] = static_cast<float>(z);
}

__global__ void quantizeI8Kernel(const void* x, int xdt, const float* scale, const float* col, const float* zero, void* codes, bool isU8,
                                 DevLayout L, float qmin, float qmax) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < L.n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t p = paramOf(L, i);
    const int c = static_cast<int>(quantCode(loadF(x, xdt, i), scaleAt(L, scale, col, i, p), zero[p], qmin, qmax));
    if (isU8) static_cast<uint8_t*>(codes)[i] = static_cast<uint8_t>(c);
    else static_cast<int8_t*>(codes)[i] = static_cast<int8_t>(c);
  }
}

__global__ void quantizeI4Kernel(const void* x, int xdt, const float* scale, const float* col, const float* zero, uint8_t* codes,
                                 DevLayout L, float qmin, float qmax) {
  const int64_t bytes = (L.n + 1) / 2;
  for (int64_t b = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; b < bytes; b += int64_t(gridDim.x) * blockDim.x) {
    int nib[2] = {0, 0};
    for (int h = 0; h < 2; ++h) {
      const int64_t i = 2 * b + h;
      if (i >= L.n) break;
      const int64_t p = paramOf(L, i);
      nib[h] = static_cast<int>(quantCode(loadF(x, xdt, i), scaleAt(L, scale, col, i, p), zero[p], qmin, qmax)) & 0xF;
    }
    codes[b] = static_cast<uint8_t>(nib[0] | (nib[1] << 4));
  }
}

__global__ void dequantizeKernel(const uint8_t* raw, int cdt, const float* scale, const float* col, const float* zero, void* out, int odt, DevLayout L) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < L.n; i += int64_t(gridDim.x) * blockDim.x) {
    float q;
    if (cdt == static_cast<int>(DType::I8)) q = static_cast<float>(reinterpret_cast<const int8_t*>(raw)[i]);
    else if (cdt == static_cast<int>(DType::U8)) q = static_cast<float>(raw[i]);
    else { const int nib = (raw[i >> 1] >> ((i & 1) * 4)) & 0xF; q = static_cast<float>(nib >= 8 ? nib - 16 : nib); }
    const int64_t p = paramOf(L, i);
    const float s = scaleAt(L, scale, col, i, p);
    storeF(out, odt, i, __fmul_rn(__fsub_rn(q, zero[p]), s));
  }
}

void needFloat(const View& v, const char* what) {
  if (v.dtype != DType::F32 && v.dtype != DType::F16 && v.dtype != DType::BF16)
    throw KernelError("QDM_BAD_DTYPE", std::string(what) + ": f32, f16 or bf16 expected, got " + dtypeName(v.dtype));
}

// Splits of one parameter's `per` elements: about 8192 elements a block, at most 1024 slices.
int splitsFor(int64_t per) { return static_cast<int>(std::clamp<int64_t>((per + 8191) / 8192, 1, 1024)); }

}  // namespace

int64_t FakeQuantLayout::params() const {
  switch (mode) {
    case 1: return channels;
    case 2: return groupSize > 0 ? n / groupSize : 0;
    case 3: return cols > 0 ? n / cols : 0;
    default: return 1;
  }
}

void fakeQuantForward(const View& x, const float* scale, const float* colScale, const float* zero, const View& out, const FakeQuantLayout& L,
                      float qmin, float qmax) {
  needFloat(x, "fakeQuantForward x");
  needFloat(out, "fakeQuantForward out");
  if (L.n == 0) return;
  fqForwardKernel<<<gridFor(L.n), kThreads, 0, stream()>>>(x.data, int(x.dtype), scale, colScale, zero, out.data, int(out.dtype), devLayout(L), qmin, qmax);
  checkLaunch("fakeQuantForward");
}

void fakeQuantBackward(const View& x, const float* scale, const float* colScale, const float* zero, const View& g, const View& gradX,
                       float* gradScale, float* gradColScale, float* gradZero, const FakeQuantLayout& L, float qmin, float qmax) {
  needFloat(x, "fakeQuantBackward x");
  needFloat(g, "fakeQuantBackward gradOut");
  if (L.n == 0) return;
  const DevLayout D = devLayout(L);
  if (gradX.data) {
    needFloat(gradX, "fakeQuantBackward gradX");
    fqGradXKernel<<<gridFor(L.n), kThreads, 0, stream()>>>(x.data, int(x.dtype), scale, colScale, zero, g.data, int(g.dtype), gradX.data,
                                                           int(gradX.dtype), D, qmin, qmax);
    checkLaunch("fakeQuantBackward gradX");
  }
  if (gradScale || gradZero) {
    const int64_t P = L.params();
    int64_t C = P, outer = 1, inner = P > 0 ? L.n / P : 0;
    if (L.mode == 0) { C = 1; inner = L.n; }
    if (L.mode == 1) { C = L.channels; inner = L.inner; outer = L.n / (L.channels * L.inner); }
    const int splits = splitsFor(outer * inner);
    if (P > 0 && P <= 0x7fffffffLL) {
      auto* partial = static_cast<double2*>(allocDevice(sizeof(double2) * size_t(P) * splits));
      fqParamPartialKernel<<<dim3(unsigned(P), unsigned(splits)), kThreads, 0, stream()>>>(x.data, int(x.dtype), scale, colScale, zero, g.data,
                                                                                          int(g.dtype), D, qmin, qmax, C, outer, inner, splits, partial);
      checkLaunch("fakeQuantBackward scale partials");
      fqFinishKernel<<<unsigned((P + kThreads - 1) / kThreads), kThreads, 0, stream()>>>(partial, P, splits, gradScale, gradZero);
      checkLaunch("fakeQuantBackward scale sums");
      freeDevice(partial);
    }
  }
  if (L.mode == 3 && gradColScale) {
    const int64_t K = L.cols, R = L.n / L.cols;
    const int splits = static_cast<int>(std::clamp<int64_t>((R + 255) / 256, 1, 256));
    auto* partial = static_cast<double2*>(allocDevice(sizeof(double2) * size_t(K) * splits));
    fqColPartialKernel<<<dim3(unsigned((K + 31) / 32), unsigned(splits)), dim3(32, 8), 0, stream()>>>(x.data, int(x.dtype), scale, colScale, zero,
                                                                                                     g.data, int(g.dtype), D, qmin, qmax, R, splits, partial);
    checkLaunch("fakeQuantBackward column partials");
    fqFinishKernel<<<unsigned((K + kThreads - 1) / kThreads), kThreads, 0, stream()>>>(partial, K, splits, gradColScale, nullptr);
    checkLaunch("fakeQuantBackward column sums");
    freeDevice(partial);
  }
}

void quantizePack(const View& x, const float* scale, const float* colScale, const float* zero, const View& codes, const FakeQuantLayout& L,
                  float qmin, float qmax) {
  needFloat(x, "quantizePack x");
  const DevLayout D = devLayout(L);
  switch (codes.dtype) {
    case DType::I8:
    case DType::U8: {
      const bool u8 = codes.dtype == DType::U8;
      if (u8 ? (qmin < 0 || qmax > 255) : (qmin < -128 || qmax > 127))
        throw KernelError("QDM_BAD_ARGUMENT", "quantizePack: range [" + std::to_string(qmin) + ", " + std::to_string(qmax) + "] does not fit " + (u8 ? "u8" : "i8"));
      if (L.n == 0) return;
      quantizeI8Kernel<<<gridFor(L.n), kThreads, 0, stream()>>>(x.data, int(x.dtype), scale, colScale, zero, codes.data, u8, D, qmin, qmax);
      break;
    }
    case DType::I4: {
      if (qmin < -8 || qmax > 7)
        throw KernelError("QDM_BAD_ARGUMENT", "quantizePack: range [" + std::to_string(qmin) + ", " + std::to_string(qmax) + "] does not fit i4 (shift the zero point for unsigned codes)");
      if (L.n == 0) return;
      quantizeI4Kernel<<<gridFor((L.n + 1) / 2), kThreads, 0, stream()>>>(x.data, int(x.dtype), scale, colScale, zero, codes.ptr<uint8_t>(), D, qmin, qmax);
      break;
    }
    default: throw KernelError("QDM_BAD_DTYPE", std::string("quantizePack: codes must be i8, u8 or i4, got ") + dtypeName(codes.dtype));
  }
  checkLaunch("quantizePack");
}

void dequantize(const View& codes, const float* scale, const float* colScale, const float* zero, const View& out, const FakeQuantLayout& L) {
  const DType dt = codes.dtype;
  if (dt != DType::I8 && dt != DType::U8 && dt != DType::I4) throw KernelError("QDM_BAD_DTYPE", std::string("dequantize: codes must be i8, u8 or i4, got ") + dtypeName(dt));
  needFloat(out, "dequantize out");
  if (L.n == 0) return;
  dequantizeKernel<<<gridFor(L.n), kThreads, 0, stream()>>>(codes.ptr<uint8_t>(), int(dt), scale, colScale, zero, out.data, int(out.dtype), devLayout(L));
  checkLaunch("dequantize");
}

}  // namespace qdm::cuda
