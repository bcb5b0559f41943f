// CUDA matmul: the strided, batched GEMM of the CPU binding (bind_gemm.cpp) on tensor cores.
//
// Dispatch (runGemm):
//   - same-dtype f16/bf16 operands -> mma.sync m16n8k16, f32 operands -> TF32 m16n8k8
//     (gemm_core.cuh); 128x128x(64 B) tiles with 8 warps, or 64x64 with 4 warps when the big
//     tiles would not fill the GPU (fewer tiles than SMs) or M or N is at most 64;
//   - each operand is used in place when it is K-contiguous or M/N-contiguous (the transposed
//     views matmul's backward and linear produce) with a 16-byte aligned base and leading and
//     batch strides; anything else is first packed K-major into an allocDevice workspace (the
//     CPU GEMM packs every operand, so the contract "any strides" is kept);
//   - operands of different dtypes are both computed in f32 (TF32; the non-f32 one is widened
//     while packed), as the CPU computes everything in f32;
//   - K == 0 and GemmMode::Simt run an exact-fp32 SIMT kernel that reads any strides directly.
// The output may be f32, f16 or bf16 with any strides; alpha/beta are applied in fp32 in the
// epilogue, and beta == 0 never reads the output (NaNs there are not propagated, as on the CPU).
#include <algorithm>
#include <cstring>
#include <string>

#include "gemm_core.cuh"
#include "gemm_internal.cuh"
#include "qdm/cuda_device.h"
#include "qdm/cuda_gemm.h"

namespace qdm::cuda {
namespace {
GemmMode gMode = GemmMode::Auto;
cudaStream_t stream() { return static_cast<cudaStream_t>(currentStream()); }
}  // namespace
void setGemmMode(GemmMode m) { gMode = m; }
GemmMode gemmMode() { return gMode; }
}  // namespace qdm::cuda

namespace qdm::cuda::gemm {
namespace {

// ---- exact fp32 SIMT kernel (any strides, any float dtypes) --------------------------------
// 64x64 output tile, 256 threads each owning a 4x4 block (rows ty + 16i, cols tx + 16j), K in
// slices of 16 through shared memory.
struct SimtArgs {
  int M, N, K;
  const void* a; DType at; int64_t bsa, rsa, csa;
  const void* b; DType bt; int64_t bsb, rsb, csb;
  void* c; DType ct; int64_t bsc, rsc, csc;
  float alpha, beta;
};
__global__ void __launch_bounds__(256) simtGemm(SimtArgs p, int64_t z0) {
  __shared__ float As[16][64 + 1], Bs[16][64 + 1];
  const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
  const int m0 = blockIdx.y * 64, n0 = blockIdx.x * 64;
  const int64_t z = z0 + blockIdx.z;
  const int64_t aoff = z * p.bsa, boff = z * p.bsb;
  float acc[4][4] = {};
  for (int k0 = 0; k0 < p.K; k0 += 16) {
    for (int e = threadIdx.x; e < 16 * 64; e += 256) {
      const int kk = e >> 6, r = e & 63;  // consecutive threads walk m (resp. n)
      const int m = m0 + r, n = n0 + r, k = k0 + kk;
      As[kk][r] = (m < p.M && k < p.K) ? loadAsFloat(p.a, p.at, aoff + m * p.rsa + k * p.csa) : 0.0f;
      Bs[kk][r] = (n < p.N && k < p.K) ? loadAsFloat(p.b, p.bt, boff + k * p.rsb + n * p.csb) : 0.0f;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < 16; ++kk) {
      float av[4], bv[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) { av[i] = As[kk][ty + 16 * i]; bv[i] = Bs[kk][tx + 16 * i]; }
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int m = m0 + ty + 16 * i, n = n0 + tx + 16 * j;
      if (m >= p.M || n >= p.N) continue;
      const int64_t ci = z * p.bsc + m * p.rsc + n * p.csc;
      float v = p.alpha * acc[i][j];
      if (p.beta != 0.0f) v += p.beta * loadAsFloat(p.c, p.ct, ci);
      storeFromFloat(p.c, p.ct, ci, v);
    }
}

// ---- packing -----------------------------------------------------------------------------
// dst[z][r][k] (row length ld) = src[z*bs + r*rs + k*cs]; elements copied bit for bit.
template <class W>
__global__ void packKMajor(const W* src, int64_t bs, int64_t rs, int64_t cs, W* dst, int64_t R, int64_t K, int64_t ld, int64_t total) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total; i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t k = i % K, r = (i / K) % R, z = i / (K * R);
    dst[(z * R + r) * ld + k] = src[z * bs + r * rs + k * cs];
  }
}
// Same, converting any float dtype to f32 (operands of mixed dtypes are multiplied in TF32).
__global__ void packWidenKMajor(const void* src, DType t, int64_t bs, int64_t rs, int64_t cs, float* dst, int64_t R, int64_t K, int64_t ld, int64_t total) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total; i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t k = i % K, r = (i / K) % R, z = i / (K * R);
    dst[(z * R + r) * ld + k] = loadAsFloat(src, t, z * bs + r * rs + k * cs);
  }
}
int gridFor(int64_t total, int threads) { return static_cast<int>(std::min<int64_t>((total + threads - 1) / threads, 65535LL * 8)); }

// ---- tensor-core problem: dense A and B, alpha/beta epilogue -------------------------------
struct DenseEpilogue {
  void* c; DType ct; int64_t bsc, rsc, csc;
  int M, N;
  float alpha, beta;
  bool pairs;  // csc == 1 and every (m, even n) pair is aligned for one vector store
  __device__ __forceinline__ void store2(int64_t z, int m, int n, float v0, float v1) const {
    if (m >= M || n >= N) return;
    const int64_t i = z * bsc + m * rsc + static_cast<int64_t>(n) * csc;
    v0 *= alpha; v1 *= alpha;
    const bool two = n + 1 < N;
    if (beta != 0.0f) {
      v0 += beta * loadAsFloat(c, ct, i);
      if (two) v1 += beta * loadAsFloat(c, ct, i + csc);
    }
    if (pairs && two) {
      if (ct == DType::F32) *reinterpret_cast<float2*>(static_cast<float*>(c) + i) = make_float2(v0, v1);
      else if (ct == DType::F16) *reinterpret_cast<__half2*>(static_cast<__half*>(c) + i) = __floats2half2_rn(v0, v1);
      else *reinterpret_cast<__nv_bfloat162*>(static_cast<__nv_bfloat16*>(c) + i) = __floats2bfloat162_rn(v0, v1);
      return;
    }
    storeFromFloat(c, ct, i, v0);
    if (two) storeFromFloat(c, ct, i + csc, v1);
  }
};

template <class T, class Cfg, bool AK, bool BK>
struct DenseProblem {
  int M, N, K;
  const T* a; int64_t bsa, lda;
  const T* b; int64_t bsb, ldb;
  int64_t z0;  // first batch index of this launch
  DenseEpilogue epi;
  __device__ __forceinline__ DenseLoader<T, Cfg::BM, Cfg::THREADS, AK> aLoader(int z, int tid) const {
    return {a + (z0 + z) * bsa, lda, M, K, tid};
  }
  __device__ __forceinline__ DenseLoader<T, Cfg::BN, Cfg::THREADS, BK> bLoader(int z, int, int tid) const {
    return {b + (z0 + z) * bsb, ldb, N, K, tid};
  }
  __device__ __forceinline__ void store2(int z, int m, int n, float v0, float v1) const { epi.store2(z0 + z, m, n, v0, v1); }
};

// One operand as the tensor-core kernel sees it.
struct Operand {
  const void* ptr; int64_t bs, ld;
  bool kMajor;
};

template <class T, class Cfg, bool AK, bool BK>
void launchDense(const GemmDesc& d, const Operand& A, const Operand& B, const DenseEpilogue& epi) {
  using P = DenseProblem<T, Cfg, AK, BK>;
  auto kern = tensorCoreGemm<T, Cfg, AK, BK, P>;
  static bool smemSet = false;
  if (!smemSet) { allowSmem(kern, Cfg::SMEM_BYTES); smemSet = true; }
  const dim3 grid(static_cast<unsigned>((d.N + Cfg::BN - 1) / Cfg::BN), static_cast<unsigned>((d.M + Cfg::BM - 1) / Cfg::BM), 1);
  for (int64_t z0 = 0; z0 < d.batch; z0 += 65535) {
    P p{static_cast<int>(d.M), static_cast<int>(d.N), static_cast<int>(d.K),
        static_cast<const T*>(A.ptr), A.bs, A.ld, static_cast<const T*>(B.ptr), B.bs, B.ld, z0, epi};
    dim3 g = grid;
    g.z = static_cast<unsigned>(std::min<int64_t>(65535, d.batch - z0));
    kern<<<g, Cfg::THREADS, Cfg::SMEM_BYTES, stream()>>>(p);
    checkLaunch("matmul (tensor cores)");
  }
}

template <class T, class Cfg>
void launchLayouts(const GemmDesc& d, const Operand& A, const Operand& B, const DenseEpilogue& epi) {
  if (A.kMajor && B.kMajor) launchDense<T, Cfg, true, true>(d, A, B, epi);
  else if (A.kMajor) launchDense<T, Cfg, true, false>(d, A, B, epi);
  else if (B.kMajor) launchDense<T, Cfg, false, true>(d, A, B, epi);
  else launchDense<T, Cfg, false, false>(d, A, B, epi);
}

template <class T>
void launchTensorCore(const GemmDesc& d, const Operand& A, const Operand& B, const DenseEpilogue& epi) {
  const int64_t bigTiles = ((d.M + 127) / 128) * ((d.N + 127) / 128) * d.batch;
  if (d.M <= 64 || d.N <= 64 || bigTiles < smCount()) launchLayouts<T, SmallTile>(d, A, B, epi);
  else launchLayouts<T, BigTile>(d, A, B, epi);
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

// Uses the operand (R rows, reduction K; row stride rs, k stride cs, batch stride bs) in place
// when one of its two dims is contiguous and everything is 16-byte aligned; otherwise packs it
// K-major into `work` (the caller frees it after the launch).
// `target` is the dtype the kernel runs in: an operand of another dtype is always packed, widened to f32.
Operand prepare(const void* ptr, DType t, DType target, int64_t batch, int64_t R, int64_t K, int64_t bs, int64_t rs, int64_t cs, void*& work) {
  if (t != target) {
    const int64_t ld = (K + 3) / 4 * 4, nb = bs == 0 ? 1 : batch, total = nb * R * K;
    work = allocDevice(static_cast<size_t>(nb * R * ld) * sizeof(float));
    packWidenKMajor<<<gridFor(total, 256), 256, 0, stream()>>>(ptr, t, bs, rs, cs, static_cast<float*>(work), R, K, ld, total);
    checkLaunch("matmul (widen operand)");
    return {work, bs == 0 ? 0 : R * ld, ld, true};
  }
  const int64_t es = static_cast<int64_t>(dtypeSize(t)), epc = 16 / es;
  const bool batchOk = bs % epc == 0;
  if (aligned16(ptr) && batchOk) {
    if ((cs == 1 || K == 1) && (rs % epc == 0 || R == 1)) return {ptr, bs, R == 1 ? epc : rs, true};
    if ((rs == 1 || R == 1) && (cs % epc == 0 || K == 1)) return {ptr, bs, K == 1 ? epc : cs, false};
  }
  const int64_t ld = (K + epc - 1) / epc * epc;
  const int64_t nb = bs == 0 ? 1 : batch;  // a broadcast operand is packed once
  work = allocDevice(static_cast<size_t>(nb * R * ld * es));
  const int64_t total = nb * R * K;
  if (es == 2)
    packKMajor<uint16_t><<<gridFor(total, 256), 256, 0, stream()>>>(static_cast<const uint16_t*>(ptr), bs, rs, cs, static_cast<uint16_t*>(work), R, K, ld, total);
  else
    packKMajor<uint32_t><<<gridFor(total, 256), 256, 0, stream()>>>(static_cast<const uint32_t*>(ptr), bs, rs, cs, static_cast<uint32_t*>(work), R, K, ld, total);
  checkLaunch("matmul (pack operand)");
  return {work, bs == 0 ? 0 : R * ld, ld, true};
}

void runSimt(const GemmDesc& d) {
  SimtArgs p{static_cast<int>(d.M), static_cast<int>(d.N), static_cast<int>(d.K), d.a, d.at, d.bsa, d.rsa, d.csa,
             d.b, d.bt, d.bsb, d.rsb, d.csb, d.c, d.ct, d.bsc, d.rsc, d.csc, d.alpha, d.beta};
  const dim3 grid(static_cast<unsigned>((d.N + 63) / 64), static_cast<unsigned>((d.M + 63) / 64), 1);
  for (int64_t z0 = 0; z0 < d.batch; z0 += 65535) {
    dim3 g = grid;
    g.z = static_cast<unsigned>(std::min<int64_t>(65535, d.batch - z0));
    simtGemm<<<g, 256, 0, stream()>>>(p, z0);
    checkLaunch("matmul (simt)");
  }
}
}  // namespace

void runGemm(const GemmDesc& d) {
  if (d.batch <= 0 || d.M <= 0 || d.N <= 0) return;
  if (d.M > INT32_MAX || d.N > INT32_MAX || d.K > INT32_MAX || (d.M + 63) / 64 > 65535)
    throw KernelError("QDM_BAD_ARGUMENT", "matmul: a dimension is too large for the CUDA GEMM");
  if (d.K == 0 || gemmMode() == GemmMode::Simt) { runSimt(d); return; }
  const DType run = d.at == d.bt ? d.at : DType::F32;  // mixed dtypes: both in f32 (TF32)
  void* wa = nullptr;
  void* wb = nullptr;
  // A is [M, K]; B^T is [N, K] (row stride csb, k stride rsb).
  const Operand A = prepare(d.a, d.at, run, d.batch, d.M, d.K, d.bsa, d.rsa, d.csa, wa);
  const Operand B = prepare(d.b, d.bt, run, d.batch, d.N, d.K, d.bsb, d.csb, d.rsb, wb);
  const int64_t ces = static_cast<int64_t>(dtypeSize(d.ct));
  const bool pairs = d.csc == 1 && d.rsc % 2 == 0 && d.bsc % 2 == 0 && (reinterpret_cast<uintptr_t>(d.c) % (2 * ces)) == 0;
  const DenseEpilogue epi{d.c, d.ct, d.bsc, d.rsc, d.csc, static_cast<int>(d.M), static_cast<int>(d.N), d.alpha, d.beta, pairs};
  if (run == DType::F16) launchTensorCore<__half>(d, A, B, epi);
  else if (run == DType::BF16) launchTensorCore<__nv_bfloat16>(d, A, B, epi);
  else launchTensorCore<float>(d, A, B, epi);
  if (wa) freeDevice(wa);  // stream-ordered: safe right after the enqueue
  if (wb) freeDevice(wb);
}
}  // namespace qdm::cuda::gemm

namespace qdm::cuda {
void matmul(const View& a, const View& b, const View& out, float alpha, float beta) {
  gemm::GemmDesc d;
  d.batch = out.shape[0]; d.M = out.shape[1]; d.N = out.shape[2]; d.K = a.shape[2];
  d.a = a.data; d.at = a.dtype; d.bsa = a.strides[0]; d.rsa = a.strides[1]; d.csa = a.strides[2];
  d.b = b.data; d.bt = b.dtype; d.bsb = b.strides[0]; d.rsb = b.strides[1]; d.csb = b.strides[2];
  d.c = out.data; d.ct = out.dtype; d.bsc = out.strides[0]; d.rsc = out.strides[1]; d.csc = out.strides[2];
  d.alpha = alpha; d.beta = beta;
  gemm::runGemm(d);
}
}  // namespace qdm::cuda
