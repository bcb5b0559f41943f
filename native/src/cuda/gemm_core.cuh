// Tensor-core GEMM core shared by the matmul and conv launchers (gemm.cu, conv.cu).
//
// One kernel template, mma.sync on Ampere-class tensor cores (also runs on Ada and Hopper):
//   - f16/bf16 operands: m16n8k16 with fp32 accumulation, fragments read by ldmatrix
//     (ldmatrix.trans when the tile is stored M/N-major);
//   - f32 operands: TF32 m16n8k8 (cvt.rna to tf32, fp32 accumulation; relative error of a
//     product about 2^-11 per operand, so ~3e-4 on a GEMM), fragments read by 32-bit LDS.
// Global -> shared copies are 16-byte cp.async with zero fill for the ragged edges, in a
// STAGES-deep ring (one commit group per k-tile). A k-tile is always 64 bytes along K
// (32 halves or 16 floats), so a K-major tile row is four 16-byte chunks and an M/N-major tile
// holds BK rows of R elements; both are XOR-swizzled at chunk granularity so ldmatrix and the
// cp.async stores are free of bank conflicts without padding.
//
// The kernel is generic over a Problem supplying the A loader (always a dense operand), the B
// loader (dense for matmul, an on-the-fly im2col gather for conv) and the epilogue (alpha/beta
// into a strided output for matmul, bias + NCHW scatter for conv).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "qdm/view.h"

namespace qdm::cuda::gemm {

template <int BM_, int BN_, int WM_, int WN_, int STAGES_, int MIN_BLOCKS_>
struct TileCfg {
  static constexpr int BM = BM_, BN = BN_, WM = WM_, WN = WN_, STAGES = STAGES_;
  static constexpr int MIN_BLOCKS = MIN_BLOCKS_;  // resident blocks per SM the register budget must allow
  static constexpr int THREADS = WM * WN * 32;
  static constexpr int WTM = BM / WM, WTN = BN / WN;  // warp tile
  static constexpr int MI = WTM / 16, NI = WTN / 8;  // mma tiles per warp
  static constexpr int A_BYTES = BM * 64, B_BYTES = BN * 64, STAGE_BYTES = A_BYTES + B_BYTES;
  static constexpr int SMEM_BYTES = STAGES * STAGE_BYTES;
  static_assert(NI % 2 == 0, "B fragments are loaded two n8 tiles at a time");
};
// 128x128 block, 8 warps as 2x4 (warp tile 64x32), 4 stages: 64 KiB of shared memory, 2 blocks per SM.
using BigTile = TileCfg<128, 128, 2, 4, 4, 2>;
// 64x64 block, 4 warps as 2x2 (warp tile 32x32), 4 stages: 32 KiB, 4 blocks per SM; for small or skinny problems.
using SmallTile = TileCfg<64, 64, 2, 2, 4, 4>;

// ---- element helpers ---------------------------------------------------------------------
__device__ __forceinline__ float loadAsFloat(const void* p, DType t, int64_t i) {
  switch (t) {
    case DType::F16: return __half2float(static_cast<const __half*>(p)[i]);
    case DType::BF16: return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    default: return static_cast<const float*>(p)[i];
  }
}
__device__ __forceinline__ void storeFromFloat(void* p, DType t, int64_t i, float v) {
  switch (t) {
    case DType::F16: static_cast<__half*>(p)[i] = __float2half_rn(v); break;
    case DType::BF16: static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v); break;
    default: static_cast<float*>(p)[i] = v; break;
  }
}

// ---- PTX wrappers ------------------------------------------------------------------------
__device__ __forceinline__ uint32_t smemAddr(const void* p) { return static_cast<uint32_t>(__cvta_generic_to_shared(p)); }

// 16-byte async copy; bytes < 16 reads only `bytes` and zero-fills the rest of the chunk.
__device__ __forceinline__ void cpAsync16(uint32_t dst, const void* src, int bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(bytes));
}
__device__ __forceinline__ void cpAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cpAsyncWait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

__device__ __forceinline__ void ldsm4(uint32_t* r, uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}
__device__ __forceinline__ void ldsm4t(uint32_t* r, uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}

template <class T> __device__ __forceinline__ void mma16816(float* c, const uint32_t* a, const uint32_t* b);
template <>
__device__ __forceinline__ void mma16816<__half>(float* c, const uint32_t* a, const uint32_t* b) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
template <>
__device__ __forceinline__ void mma16816<__nv_bfloat16>(float* c, const uint32_t* a, const uint32_t* b) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
__device__ __forceinline__ void mmaTf32(float* c, const uint32_t* a, const uint32_t* b) {
  asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
__device__ __forceinline__ uint32_t toTf32(float x) {
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(x));
  return r;
}

// ---- shared-memory tile layouts (byte offsets) -------------------------------------------
// K-major tile: R rows of 64 bytes (four 16-byte chunks). ldmatrix reads 8 consecutive rows at
// one chunk column; rows 2j and 2j+1 share a 128-byte line, so XOR-ing the chunk with (row/2)%4
// spreads the 8 rows over all 32 banks.
__device__ __forceinline__ int offK(int row, int chunk) { return row * 64 + ((chunk ^ ((row >> 1) & 3)) << 4); }
// M/N-major tile: BK rows (one per k) of R elements, ROW_BYTES = R * sizeof(T) >= 128; the
// chunk is XOR-ed with k%8 so 8 consecutive k rows at one chunk column hit 8 distinct chunks.
template <int ROW_BYTES>
__device__ __forceinline__ int offMN(int krow, int chunk) { return krow * ROW_BYTES + ((chunk ^ (krow & 7)) << 4); }

// ---- dense operand loader ----------------------------------------------------------------
// Operand X with R tile rows (M for A, N for B) and reduction K. K-major: X(r, k) at
// base[r * ld + k]; MN-major: X(r, k) at base[k * ld + r]. Requires base 16-byte aligned and
// ld a multiple of 16 / sizeof(T) (the launcher packs operands that are not).
template <class T, int R, int THREADS, bool KMAJOR>
struct DenseLoader {
  static constexpr int ES = sizeof(T), EPC = 16 / ES, BK = 64 / ES;
  static constexpr int CHUNKS = R * 4;
  static_assert(CHUNKS % THREADS == 0, "whole chunks per thread");
  const T* base;
  int64_t ld;
  int rows, K, tid;

  __device__ __forceinline__ void issue(unsigned char* s, int r0, int k0) const {
    const uint32_t sb = smemAddr(s);
#pragma unroll
    for (int i = 0; i < CHUNKS / THREADS; ++i) {
      const int id = tid + i * THREADS;
      if constexpr (KMAJOR) {
        const int row = id >> 2, ch = id & 3;
        const int r = r0 + row, k = k0 + ch * EPC;
        int valid = r < rows ? min(EPC, K - k) : 0;
        valid = max(valid, 0);
        const T* src = valid > 0 ? base + static_cast<int64_t>(r) * ld + k : base;
        cpAsync16(sb + offK(row, ch), src, valid * ES);
      } else {
        constexpr int CPR = R * ES / 16;  // chunks per k row
        const int krow = id / CPR, ch = id % CPR;
        const int k = k0 + krow, r = r0 + ch * EPC;
        int valid = k < K ? min(EPC, rows - r) : 0;
        valid = max(valid, 0);
        const T* src = valid > 0 ? base + static_cast<int64_t>(k) * ld + r : base;
        cpAsync16(sb + offMN<R * ES>(krow, ch), src, valid * ES);
      }
    }
  }
  __device__ __forceinline__ void finish(unsigned char*) const {}
};

// ---- the kernel --------------------------------------------------------------------------
// Problem must provide: int M, N, K; aLoader(z, tid) -> loader with issue(smem, m0, k0);
// bLoader(z, n0, tid) -> loader with issue(smem, n0, k0) and finish(smem) (a register-staged
// loader stores in finish, after the compute of the current tile); store2(z, m, n, v0, v1) for
// the output pair (m, n), (m, n + 1).
// 16-bit tiles are held to the register budget of MIN_BLOCKS resident blocks per SM (at 128
// registers: no spills on sm_90a, a 4-byte one in two conv instances on sm_80); the TF32 path
// loads fragments with more address arithmetic and would spill there, so it keeps the
// compiler's choice.
template <class T, class Cfg, bool A_KMAJOR, bool B_KMAJOR, class Problem>
__global__ void __launch_bounds__(Cfg::THREADS, sizeof(T) == 2 ? Cfg::MIN_BLOCKS : 1) tensorCoreGemm(Problem p) {
  constexpr int ES = sizeof(T), BK = 64 / ES, S = Cfg::STAGES;
  constexpr int MI = Cfg::MI, NI = Cfg::NI;
  extern __shared__ __align__(128) unsigned char smem[];

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wm = warp / Cfg::WN, wn = warp % Cfg::WN;
  // Grouped rasterisation (a bijection of the grid): consecutive blocks walk GROUP tile rows
  // down one tile column before moving right, so GROUP A panels and a few B panels are what the
  // blocks resident at one time read, and they stay in L2.
  constexpr int64_t GROUP = 8;
  const int64_t tilesN = gridDim.x, tilesM = gridDim.y;
  const int64_t id = static_cast<int64_t>(blockIdx.y) * tilesN + blockIdx.x;
  const int64_t firstM = id / (GROUP * tilesN) * GROUP, local = id % (GROUP * tilesN);
  const int64_t groupRows = tilesM - firstM < GROUP ? tilesM - firstM : GROUP;
  const int m0 = static_cast<int>((firstM + local % groupRows) * Cfg::BM);
  const int n0 = static_cast<int>((local / groupRows) * Cfg::BN);
  const int z = blockIdx.z;
  const auto A = p.aLoader(z, tid);
  auto B = p.bLoader(z, n0, tid);
  const int kTiles = (p.K + BK - 1) / BK;

  float acc[MI][NI][4];
#pragma unroll
  for (int i = 0; i < MI; ++i)
#pragma unroll
    for (int j = 0; j < NI; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;

#pragma unroll
  for (int s = 0; s < S - 1; ++s) {
    if (s < kTiles) {
      unsigned char* st = smem + s * Cfg::STAGE_BYTES;
      A.issue(st, m0, s * BK);
      B.issue(st + Cfg::A_BYTES, n0, s * BK);
      B.finish(st + Cfg::A_BYTES);
    }
    cpAsyncCommit();
  }

  for (int kt = 0; kt < kTiles; ++kt) {
    cpAsyncWait<S - 2>();  // tile kt has landed (this thread's copies) ...
    __syncthreads();       // ... and everyone's; everyone is also done reading tile kt-1
    const int nk = kt + S - 1;
    const bool prefetch = nk < kTiles;
    unsigned char* ns = smem + (nk % S) * Cfg::STAGE_BYTES;  // held tile kt-1: free now
    if (prefetch) {
      A.issue(ns, m0, nk * BK);
      B.issue(ns + Cfg::A_BYTES, n0, nk * BK);
    }
    cpAsyncCommit();

    const unsigned char* sA = smem + (kt % S) * Cfg::STAGE_BYTES;
    const unsigned char* sB = sA + Cfg::A_BYTES;
    if constexpr (ES == 2) {
      const uint32_t aBase = smemAddr(sA), bBase = smemAddr(sB);
#pragma unroll
      for (int ks = 0; ks < BK / 16; ++ks) {
        uint32_t af[MI][4], bf[NI][2];
#pragma unroll
        for (int mi = 0; mi < MI; ++mi) {
          const int mb = wm * Cfg::WTM + mi * 16;
          if constexpr (A_KMAJOR) {
            // matrices: (rows 0-7, k 0-7), (rows 8-15, k 0-7), (rows 0-7, k 8-15), (rows 8-15, k 8-15)
            const int row = mb + (lane & 7) + (((lane >> 3) & 1) << 3);
            ldsm4(af[mi], aBase + offK(row, ks * 2 + (lane >> 4)));
          } else {
            // stored [k][m]: the same four matrices, read transposed
            const int k = ks * 16 + (lane & 7) + ((lane >> 4) << 3);
            const int m = mb + (((lane >> 3) & 1) << 3);
            ldsm4t(af[mi], aBase + offMN<Cfg::BM * 2>(k, m >> 3));
          }
        }
#pragma unroll
        for (int pr = 0; pr < NI / 2; ++pr) {
          const int nb = wn * Cfg::WTN + pr * 16;
          uint32_t r[4];
          if constexpr (B_KMAJOR) {
            // stored [n][k]: (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, k 0-7), (n 8-15, k 8-15)
            const int n = nb + (lane & 7) + ((lane >> 4) << 3);
            ldsm4(r, bBase + offK(n, ks * 2 + ((lane >> 3) & 1)));
          } else {
            // stored [k][n]: (k 0-7, n 0-7), (k 8-15, n 0-7), (k 0-7, n 8-15), (k 8-15, n 8-15)
            const int k = ks * 16 + (lane & 7) + (((lane >> 3) & 1) << 3);
            const int n = nb + ((lane >> 4) << 3);
            ldsm4t(r, bBase + offMN<Cfg::BN * 2>(k, n >> 3));
          }
          bf[2 * pr][0] = r[0]; bf[2 * pr][1] = r[1];
          bf[2 * pr + 1][0] = r[2]; bf[2 * pr + 1][1] = r[3];
        }
#pragma unroll
        for (int mi = 0; mi < MI; ++mi)
#pragma unroll
          for (int ni = 0; ni < NI; ++ni) mma16816<T>(acc[mi][ni], af[mi], bf[ni]);
      }
    } else {
      // TF32: fragments gathered with 32-bit shared loads (ldmatrix has no 32-bit transpose).
      const int g = lane >> 2, t = lane & 3;
      auto ldA = [&](int m, int k) -> uint32_t {
        const float* q;
        if constexpr (A_KMAJOR) q = reinterpret_cast<const float*>(sA + offK(m, k >> 2) + ((k & 3) << 2));
        else q = reinterpret_cast<const float*>(sA + offMN<Cfg::BM * 4>(k, m >> 2) + ((m & 3) << 2));
        return toTf32(*q);
      };
      auto ldB = [&](int n, int k) -> uint32_t {
        const float* q;
        if constexpr (B_KMAJOR) q = reinterpret_cast<const float*>(sB + offK(n, k >> 2) + ((k & 3) << 2));
        else q = reinterpret_cast<const float*>(sB + offMN<Cfg::BN * 4>(k, n >> 2) + ((n & 3) << 2));
        return toTf32(*q);
      };
#pragma unroll
      for (int ks = 0; ks < BK / 8; ++ks) {
        const int kb = ks * 8;
        uint32_t af[MI][4], bf[NI][2];
#pragma unroll
        for (int mi = 0; mi < MI; ++mi) {
          const int m = wm * Cfg::WTM + mi * 16 + g;
          af[mi][0] = ldA(m, kb + t);
          af[mi][1] = ldA(m + 8, kb + t);
          af[mi][2] = ldA(m, kb + t + 4);
          af[mi][3] = ldA(m + 8, kb + t + 4);
        }
#pragma unroll
        for (int ni = 0; ni < NI; ++ni) {
          const int n = wn * Cfg::WTN + ni * 8 + g;
          bf[ni][0] = ldB(n, kb + t);
          bf[ni][1] = ldB(n, kb + t + 4);
        }
#pragma unroll
        for (int mi = 0; mi < MI; ++mi)
#pragma unroll
          for (int ni = 0; ni < NI; ++ni) mmaTf32(acc[mi][ni], af[mi], bf[ni]);
      }
    }
    if (prefetch) B.finish(ns + Cfg::A_BYTES);  // register-staged loaders store now
  }
  cpAsyncWait<0>();

  // Accumulator (mi, ni): c0,c1 at row g, cols 2t, 2t+1; c2,c3 at row g+8.
  const int g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int mi = 0; mi < MI; ++mi)
#pragma unroll
    for (int ni = 0; ni < NI; ++ni) {
      const int m = m0 + wm * Cfg::WTM + mi * 16 + g;
      const int n = n0 + wn * Cfg::WTN + ni * 8 + 2 * t;
      p.store2(z, m, n, acc[mi][ni][0], acc[mi][ni][1]);
      p.store2(z, m + 8, n, acc[mi][ni][2], acc[mi][ni][3]);
    }
}

// Opts a kernel into more than 48 KiB of dynamic shared memory (once per instantiation).
template <class Kernel>
inline void allowSmem(Kernel k, int bytes) {
  if (bytes > 48 * 1024) cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
}

}  // namespace qdm::cuda::gemm
