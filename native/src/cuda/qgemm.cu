// 8-bit tensor-core GEMM with a fused epilogue: W8A8 int8, W4A8 (int4 weights unpacked to int8 in
// registers), fp8 e4m3 and W4 -> e4m3, all on mma.sync.m16n8k32 (s8: sm_80+, e4m3: sm_89+).
//
//   out[t, o] = sa[t] * sw[o] * sum_k (qa[t,k] - za[t]) (qw[o,k] - zw[o]) + (XA B)[t, o] + bias[o]
//
// Design (see /work/shared/PERFORMANCE.md):
// - Weights are packed once (qgemmPackWeights) in the order the mma B fragments are consumed:
//   panels of 128 output rows x 64-byte k tiles, each made of 16 blocks of 8 rows; in a block,
//   lane l holds its two k32 steps' fragments {b0, b1, b0', b1'} as 16 contiguous bytes (8 bytes
//   of nibbles for 4-bit). One k tile of a panel is one contiguous 8 KiB (4 KiB) run, streamed to
//   shared memory with 16-byte cp.async and read back with one conflict-free LDS.128 (LDS.64) per
//   fragment: no ldmatrix, no swizzle needed for B.
// - Activations [M, K] (K contiguous, rows 16-byte aligned) go through a 4-stage cp.async
//   pipeline into an XOR-swizzled tile (16-byte chunk c of row r at c ^ ((r >> 1) & 3), so the
//   eight 16-byte rows an ldmatrix phase reads fall in distinct banks) and into A fragments with
//   ldmatrix.x4.
// - int4 weights are stored as unsigned nibbles (code + 8); one AND, one ADD and one XOR per
//   four weights give signed int8 ((u + 0x78) ^ 0x80 = u - 8 per byte, no carries) for the s8
//   mma, or two PRMT table lookups the e4m3 codes of -8..7 (exact in e4m3) for the fp8 mma.
//   Hopper has no 4-bit MMA worth issuing, so there is none.
// - Scales, zero-point corrections (outer products of precomputed code sums), the optional
//   low-rank term and bias are applied in the epilogue, which writes f16/bf16/f32 directly
//   (never int32).
// Tiles: 128x128 (8 warps of 64x32) or 128x64 (4 warps of 64x32) for narrow N; 64-byte k tiles.
// Kernels instantiated: {int8, fp8} x {W8, W4} x {128x128, 128x64} = 8.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>

#include "cuda/qgemm_layout.h"
#include "qdm/cuda_device.h"
#include "qdm/cuda_quant.h"

namespace qdm::cuda {
namespace {

inline cudaStream_t stream() { return static_cast<cudaStream_t>(currentStream()); }
constexpr int kStages = 4;
constexpr int kBK = kQgTileK;  // 64 bytes of k per stage = two mma k-steps

__device__ __forceinline__ float loadF(const void* p, int dt, int64_t i) {
  if (dt == static_cast<int>(DType::F16)) return __half2float(static_cast<const __half*>(p)[i]);
  if (dt == static_cast<int>(DType::BF16)) return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
  return static_cast<const float*>(p)[i];
}

// ---- PTX wrappers --------------------------------------------------------------------------
__device__ __forceinline__ uint32_t smemAddr(const void* p) { return static_cast<uint32_t>(__cvta_generic_to_shared(p)); }
__device__ __forceinline__ void cpAsync16(uint32_t dst, const void* src, int srcBytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(srcBytes));
}
__device__ __forceinline__ void cpAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cpAsyncWait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }
__device__ __forceinline__ void ldmatrixX4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void mmaS8(int (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
               : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ void mmaE4m3(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
  asm volatile("mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
  // The launcher refuses fp8 below sm_89 (QDM_UNSUPPORTED); reaching this is a bug.
  __trap();
#endif
}

// Four unsigned nibbles (one per byte, code + 8) -> four signed int8 codes.
__device__ __forceinline__ uint32_t nibblesToS8(uint32_t u) { return (u + 0x78787878u) ^ 0x80808080u; }
// Four unsigned nibbles -> the e4m3 encodings of (u - 8), by table: u < 8 from (lo0, lo1), else (hi0, hi1).
__device__ __forceinline__ uint32_t nibblesToE4m3(uint32_t u) {
  constexpr uint32_t lo0 = 0xCACCCED0u, lo1 = 0xB8C0C4C8u;  // -8 -7 -6 -5 | -4 -3 -2 -1
  constexpr uint32_t hi0 = 0x44403800u, hi1 = 0x4E4C4A48u;  //  0  1  2  3 |  4  5  6  7
  const uint32_t t = u & 0x07070707u;
  const uint32_t a = t | (t >> 4);
  const uint32_t sel = (a & 0xFFu) | ((a >> 8) & 0xFF00u);
  const uint32_t lo = __byte_perm(lo0, lo1, sel), hi = __byte_perm(hi0, hi1, sel);
  const uint32_t m = ((u >> 3) & 0x01010101u) * 0xFFu;
  return (hi & m) | (lo & ~m);
}

// ---- main kernel ---------------------------------------------------------------------------
struct KParams {
  const uint8_t* a;
  int64_t M, N, K, lda;
  int KT;  // k tiles (packed)
  const uint8_t* packed;
  const int32_t* wRowSums;
  const int32_t* aRowSums;
  const float* aScale;
  const float* aZero;
  int64_t aScaleStride;
  const float* wScale;
  const float* wZero;
  const void* bias;
  int biasDt;
  const void* lowXA;
  const void* lowB;
  int lowXADt, lowBDt;
  int64_t lowR;
  void* out;
  int outDt;
  int64_t ldc;
  bool pairStore;
};

template <int BM, int BN>
struct Tile {
  static constexpr int kWM = 64, kWN = 32;  // warp tile
  static constexpr int kWarpsN = BN / kWN, kWarpsM = BM / kWM;
  static constexpr int kThreads = kWarpsM * kWarpsN * 32;
  // One CTA per SM guaranteed (no register cap): at a 128-register cap the epilogue spills.
  static constexpr int kMinBlocks = 1;
  static constexpr int kMT = kWM / 16, kNT = kWN / 8;
  static constexpr int kABytes = BM * kBK;
  template <int WBITS>
  static constexpr int bBytes() { return BN * kBK * WBITS / 8; }
  template <int WBITS>
  static constexpr int smemBytes() {
    constexpr int pipe = kStages * (kABytes + bBytes<WBITS>());
    constexpr int lowRank = (BM * 33 + 32 * BN) * 4;
    return pipe > lowRank ? pipe : lowRank;
  }
};

__device__ __forceinline__ void storeOut(const KParams& p, int64_t row, int64_t col, float v0, float v1) {
  if (row >= p.M || col >= p.N) return;
  const int64_t i = row * p.ldc + col;
  const bool two = col + 1 < p.N;
  if (p.outDt == static_cast<int>(DType::F16)) {
    __half* o = static_cast<__half*>(p.out) + i;
    if (two && p.pairStore) *reinterpret_cast<__half2*>(o) = __floats2half2_rn(v0, v1);
    else { o[0] = __float2half_rn(v0); if (two) o[1] = __float2half_rn(v1); }
  } else if (p.outDt == static_cast<int>(DType::BF16)) {
    __nv_bfloat16* o = static_cast<__nv_bfloat16*>(p.out) + i;
    if (two && p.pairStore) *reinterpret_cast<__nv_bfloat162*>(o) = __floats2bfloat162_rn(v0, v1);
    else { o[0] = __float2bfloat16_rn(v0); if (two) o[1] = __float2bfloat16_rn(v1); }
  } else {
    float* o = static_cast<float*>(p.out) + i;
    if (two && p.pairStore) *reinterpret_cast<float2*>(o) = make_float2(v0, v1);
    else { o[0] = v0; if (two) o[1] = v1; }
  }
}

// One 64-byte k tile of BM activation rows into the swizzled tile (qglayout::aTileOffset);
// rows past M and k past K are zero-filled.
template <int BM, int kThreads>
__device__ __forceinline__ void loadATile(const KParams& p, uint8_t* a, int64_t m0, int kt, int tid) {
  for (int c = tid; c < BM * 4; c += kThreads) {
    const int row = c >> 2, kc = c & 3;
    const int64_t m = m0 + row, k = int64_t(kt) * kBK + kc * 16;
    const bool ok = m < p.M && k < p.K;
    const uint8_t* src = ok ? p.a + m * p.lda + k : p.a;
    cpAsync16(smemAddr(a + qglayout::aTileOffset(row, kc)), src, ok ? 16 : 0);
  }
}

// The fused epilogue shared by both kernels: zero-point terms, scales, bias, low-rank term and the
// store. A thread's accumulators are acc[mt][nt][h * 2 + e], at tile row rowL0 + 16 mt + 8 h and
// tile column colL0 + 8 nt + e (qglayout::epiRow / epiCol); smem is the CTA's pipeline buffer
// (free by now, at least (BM * 33 + 32 * BN) * 4 bytes). Every thread of the CTA must call it.
template <bool FP8, int BM, int BN, int kThreads, int MT, int NT, class Acc>
__device__ __forceinline__ void epilogue(const KParams& p, Acc (&acc)[MT][NT][4], int64_t m0, int64_t n0, int rowL0, int colL0, uint8_t* smem,
                                         int tid) {
  // The epilogue's float values replace the accumulators in place (bit casts for int8), so only
  // one 64-entry array is ever live.
  auto toF = [](Acc a) -> float { if constexpr (FP8) return a; else return __int_as_float(a); };
  auto fromF = [](float f) -> Acc { if constexpr (FP8) return f; else return __float_as_int(f); };
  const bool zeros = !FP8 && (p.aZero != nullptr || p.wZero != nullptr);
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t row = m0 + rowL0 + mt * 16 + h * 8;
      const int64_t rowC = row < p.M ? row : p.M - 1;  // clamped for loads; stores are guarded
      const float sa = p.aScale[rowC * p.aScaleStride];
      // Zero-point terms in wrapping 32-bit arithmetic, as the CPU epilogue (exact whenever the
      // true sum fits int32): sum (qa - za)(qw - zw) = acc - za rsW - zw rsA + K za zw.
      const uint32_t za = (zeros && p.aZero) ? static_cast<uint32_t>(static_cast<int32_t>(p.aZero[rowC * p.aScaleStride])) : 0u;
      const uint32_t rsA = (zeros && p.wZero) ? static_cast<uint32_t>(p.aRowSums[rowC]) : 0u;
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int64_t col = n0 + colL0 + nt * 8 + e;
          const int64_t colC = col < p.N ? col : p.N - 1;
          float x;
          if (zeros) {
            const uint32_t zw = p.wZero ? static_cast<uint32_t>(static_cast<int32_t>(p.wZero[colC])) : 0u;
            const uint32_t s = static_cast<uint32_t>(acc[mt][nt][h * 2 + e]) - za * static_cast<uint32_t>(p.wRowSums[colC]) - zw * rsA +
                               za * (static_cast<uint32_t>(p.K) * zw);
            x = static_cast<float>(static_cast<int32_t>(s));
          } else {
            x = static_cast<float>(acc[mt][nt][h * 2 + e]);
          }
          // y = acc * (sa * sw) + bias, the CPU epilogue's order; the low-rank term is added after.
          const float b = (p.bias && col < p.N) ? loadF(p.bias, p.biasDt, col) : 0.0f;
          acc[mt][nt][h * 2 + e] = fromF(__fadd_rn(__fmul_rn(x, __fmul_rn(sa, p.wScale[colC])), b));
        }
      }
    }
  }

  if (p.lowR > 0) {
    // (XA B) for this tile, 32 ranks at a time through shared memory (the pipeline buffers are free now).
    __syncthreads();
    float* sXA = reinterpret_cast<float*>(smem);  // [BM][33]
    float* sLB = sXA + BM * 33;                   // [32][BN]
    for (int64_t r0 = 0; r0 < p.lowR; r0 += 32) {
      for (int idx = tid; idx < BM * 32; idx += kThreads) {
        const int row = idx >> 5, rr = idx & 31;
        const int64_t m = m0 + row, r = r0 + rr;
        sXA[row * 33 + rr] = (m < p.M && r < p.lowR) ? loadF(p.lowXA, p.lowXADt, m * p.lowR + r) : 0.0f;
      }
      for (int idx = tid; idx < 32 * BN; idx += kThreads) {
        const int rr = idx / BN, c = idx % BN;
        const int64_t n = n0 + c, r = r0 + rr;
        sLB[rr * BN + c] = (n < p.N && r < p.lowR) ? loadF(p.lowB, p.lowBDt, r * p.N + n) : 0.0f;
      }
      __syncthreads();
#pragma unroll 4
      for (int rr = 0; rr < 32; ++rr) {
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          const int rl = rowL0 + mt * 16;
          const float xa0 = sXA[rl * 33 + rr], xa1 = sXA[(rl + 8) * 33 + rr];
#pragma unroll
          for (int nt = 0; nt < NT; ++nt) {
            const int cl = colL0 + nt * 8;
            const float b0 = sLB[rr * BN + cl], b1 = sLB[rr * BN + cl + 1];
            acc[mt][nt][0] = fromF(toF(acc[mt][nt][0]) + xa0 * b0);
            acc[mt][nt][1] = fromF(toF(acc[mt][nt][1]) + xa0 * b1);
            acc[mt][nt][2] = fromF(toF(acc[mt][nt][2]) + xa1 * b0);
            acc[mt][nt][3] = fromF(toF(acc[mt][nt][3]) + xa1 * b1);
          }
        }
      }
      __syncthreads();
    }
  }

#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      const int64_t col = n0 + colL0 + nt * 8;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int64_t row = m0 + rowL0 + mt * 16 + h * 8;
        storeOut(p, row, col, toF(acc[mt][nt][h * 2]), toF(acc[mt][nt][h * 2 + 1]));
      }
    }
}

template <bool FP8, int WBITS, int BM, int BN>
__global__ void __launch_bounds__(Tile<BM, BN>::kThreads, Tile<BM, BN>::kMinBlocks) qgemmKernel(const KParams p) {
  using T = Tile<BM, BN>;
  constexpr int kMT = T::kMT, kNT = T::kNT, kThreads = T::kThreads;
  constexpr int kABytes = T::kABytes, kBBytes = BN * kBK * WBITS / 8;
  constexpr int kBlockBytes = 8 * kBK * WBITS / 8;  // one 8-row block of one k tile: 512 or 256
  extern __shared__ __align__(128) uint8_t smem[];
  uint8_t* sA = smem;
  uint8_t* sB = smem + kStages * kABytes;

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int warpM = warp / T::kWarpsN, warpN = warp % T::kWarpsN;
  const int64_t m0 = int64_t(blockIdx.y) * BM, n0 = int64_t(blockIdx.x) * BN;
  // This tile's weights: panel n0 / 128, starting at block (n0 % 128) / 8 of each k tile.
  const uint8_t* gB = p.packed + ((n0 / kQgPanelN) * int64_t(p.KT) * 16 + (n0 % kQgPanelN) / 8) * kBlockBytes;
  const int64_t panelStride = 16LL * kBlockBytes;  // bytes between consecutive k tiles of one panel

  auto loadStage = [&](int stage, int kt) {
    loadATile<BM, kThreads>(p, sA + stage * kABytes, m0, kt, tid);
    uint8_t* b = sB + stage * kBBytes;
    const uint8_t* src = gB + int64_t(kt) * panelStride;
    for (int c = tid; c < kBBytes / 16; c += kThreads) cpAsync16(smemAddr(b + c * 16), src + c * 16, 16);
  };

  using Acc = typename std::conditional<FP8, float, int>::type;
  Acc acc[kMT][kNT][4];
#pragma unroll
  for (int i = 0; i < kMT; ++i)
#pragma unroll
    for (int j = 0; j < kNT; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][j][e] = Acc(0);

#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < p.KT) loadStage(s, s);
    cpAsyncCommit();
  }

  for (int kt = 0; kt < p.KT; ++kt) {
    cpAsyncWait<kStages - 2>();
    __syncthreads();  // stage kt landed for every thread; stage kt-1 is no longer read by anyone
    {
      const int next = kt + kStages - 1;
      if (next < p.KT) loadStage(next % kStages, next);
      cpAsyncCommit();
    }
    const int stage = kt % kStages;
    const uint8_t* a = sA + stage * kABytes;
    const uint8_t* b = sB + stage * kBBytes + (warpN * kNT) * kBlockBytes;

#pragma unroll
    for (int ks = 0; ks < 2; ++ks) {
      // B fragments {b0, b1} of k step ks: 8 bytes at lane * 16 + ks * 8 (8-bit), or one word of
      // nibbles at lane * 8 + ks * 4 (4-bit: low nibbles b0, high nibbles b1).
      uint32_t bf[kNT][2];
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt) {
        if constexpr (WBITS == 8) {
          const uint2 w = *reinterpret_cast<const uint2*>(b + nt * kBlockBytes + lane * 16 + ks * 8);
          bf[nt][0] = w.x; bf[nt][1] = w.y;
        } else {
          const uint32_t w = *reinterpret_cast<const uint32_t*>(b + nt * kBlockBytes + lane * 8 + ks * 4);
          const uint32_t lo = w & 0x0F0F0F0Fu, hi = (w >> 4) & 0x0F0F0F0Fu;
          bf[nt][0] = FP8 ? nibblesToE4m3(lo) : nibblesToS8(lo);
          bf[nt][1] = FP8 ? nibblesToE4m3(hi) : nibblesToS8(hi);
        }
      }
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt) {
        // ldmatrix.x4: lanes 0-7 address rows 0-7 / k 0-15, 8-15 rows 8-15 / k 0-15, 16-23 rows
        // 0-7 / k 16-31, 24-31 rows 8-15 / k 16-31 -> a0..a3 of the m16n8k32 A fragment.
        uint32_t af[4];
        const int row = warpM * T::kWM + mt * 16 + (lane & 15);
        const int chunk = ks * 2 + (lane >> 4);
        ldmatrixX4(af, smemAddr(a + qglayout::aTileOffset(row, chunk)));
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt) {
          if constexpr (FP8) mmaE4m3(acc[mt][nt], af, bf[nt][0], bf[nt][1]);
          else mmaS8(acc[mt][nt], af, bf[nt][0], bf[nt][1]);
        }
      }
    }
  }
  cpAsyncWait<0>();

  // C fragment element e of (mt, nt) sits at row g (+8 for e >= 2), column 2t (+1 for odd e).
  epilogue<FP8, BM, BN, kThreads>(p, acc, m0, n0, warpM * T::kWM + (lane >> 2), warpN * T::kWN + (lane & 3) * 2, smem, tid);
}

// ---- Hopper wgmma path (W8 only, opt-in) -----------------------------------------------------
// wgmma.mma_async m64n128k32 (s8 x s8 -> s32 or e4m3 x e4m3 -> f32): A from registers, B (the
// packed weights, unchanged) from shared memory through a matrix descriptor. The packed k tile is
// row-major [128][64 bytes] with k permuted inside each row (qglayout::packedByteK); copied
// chunk-swizzled it is the canonical K-major 64-byte-swizzle layout, and A is read with the same
// permutation, so the reduction is unchanged. CTA tile 128 x 128, two warpgroups (rows 0-63 and
// 64-127, 64 accumulators per thread), the same 4-stage cp.async pipeline as the mma.sync kernel
// and the same epilogue. wgmma is waited for before the next stage is overwritten (wait_group 0):
// simple rather than fast; no TMA, no mbarriers.
// Shared memory: 4 x (8 KiB A + 8 KiB B) + 1 KiB to align the 512-byte swizzle atoms = 65 KiB.
// Compiled for sm_90a only; elsewhere the body traps and the launcher never selects it.
constexpr int kWgBM = 128, kWgBN = 128, kWgThreads = 256;
constexpr int kWgTileBytes = kWgBM * kBK;  // A and B stages alike: 8 KiB
constexpr int kWgSmemBytes = kStages * 2 * kWgTileBytes + 1024;
static_assert(kWgBN == kQgPanelN, "one CTA column is one packed panel");
static_assert((kWgBM * 33 + 32 * kWgBN) * 4 <= kStages * 2 * kWgTileBytes, "the low-rank epilogue reuses the pipeline buffers");

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define QDM_WGMMA_ENABLED 1
// cp.async writes are generic-proxy writes; wgmma reads shared memory through the async proxy.
__device__ __forceinline__ void fenceProxyAsync() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
__device__ __forceinline__ void wgmmaFence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmmaCommit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmmaWaitAll() { asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory"); }
// Keeps the compiler from moving accumulator reads or writes across the asynchronous wgmma.
__device__ __forceinline__ void fenceOperand(int& r) { asm volatile("" : "+r"(r)::"memory"); }
__device__ __forceinline__ void fenceOperand(float& r) { asm volatile("" : "+f"(r)::"memory"); }

#define QDM_WG_D4(C, j) C(d[j][0]), C(d[j][1]), C(d[j][2]), C(d[j][3])
#define QDM_WG_D64(C)                                                                                                          \
  QDM_WG_D4(C, 0), QDM_WG_D4(C, 1), QDM_WG_D4(C, 2), QDM_WG_D4(C, 3), QDM_WG_D4(C, 4), QDM_WG_D4(C, 5), QDM_WG_D4(C, 6),     \
      QDM_WG_D4(C, 7), QDM_WG_D4(C, 8), QDM_WG_D4(C, 9), QDM_WG_D4(C, 10), QDM_WG_D4(C, 11), QDM_WG_D4(C, 12), QDM_WG_D4(C, 13), \
      QDM_WG_D4(C, 14), QDM_WG_D4(C, 15)
#define QDM_WG_R(x) "+r"(x)
#define QDM_WG_F(x) "+f"(x)
#define QDM_WG_REGS "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, {%64, %65, %66, %67}, %68"
// d += A (registers a) x B (descriptor desc), m64n128k32; scale-d = 1 always (the accumulators start at 0).
__device__ __forceinline__ void wgmmaS8(int (&d)[16][4], const uint32_t (&a)[4], uint64_t desc) {
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\nwgmma.mma_async.sync.aligned.m64n128k32.s32.s8.s8 " QDM_WG_REGS ", p;\n}\n"
               : QDM_WG_D64(QDM_WG_R)
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(1));
}
__device__ __forceinline__ void wgmmaE4m3(float (&d)[16][4], const uint32_t (&a)[4], uint64_t desc) {
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\nwgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3 " QDM_WG_REGS ", p, 1, 1;\n}\n"
               : QDM_WG_D64(QDM_WG_F)
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(1));
}
#undef QDM_WG_REGS
#undef QDM_WG_F
#undef QDM_WG_R
#undef QDM_WG_D64
#undef QDM_WG_D4
#endif

template <bool FP8>
__global__ void __launch_bounds__(kWgThreads, 1) qgemmWgmmaKernel(const KParams p) {
#ifdef QDM_WGMMA_ENABLED
  extern __shared__ __align__(128) uint8_t smem[];
  // The descriptor has base offset 0, so every 8-row atom must start on a 512-byte boundary.
  uint8_t* base = smem + ((1024u - (smemAddr(smem) & 1023u)) & 1023u);
  uint8_t* sA = base;
  uint8_t* sB = base + kStages * kWgTileBytes;

  const int tid = threadIdx.x, lane = tid & 31, warp = (tid >> 5) & 3, wg = tid >> 7;
  const int64_t m0 = int64_t(blockIdx.y) * kWgBM, n0 = int64_t(blockIdx.x) * kWgBN;
  const uint8_t* gB = p.packed + qglayout::packedTileOffset(n0 / kQgPanelN, p.KT, 0);

  auto loadStage = [&](int stage, int kt) {
    loadATile<kWgBM, kWgThreads>(p, sA + stage * kWgTileBytes, m0, kt, tid);
    uint8_t* b = sB + stage * kWgTileBytes;
    const uint8_t* src = gB + int64_t(kt) * kWgTileBytes;
    for (int c = tid; c < kWgTileBytes / 16; c += kWgThreads) cpAsync16(smemAddr(b + qglayout::bTileOffset(c >> 2, c & 3)), src + c * 16, 16);
  };

  using Acc = typename std::conditional<FP8, float, int>::type;
  Acc acc[1][16][4];
#pragma unroll
  for (int j = 0; j < 16; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[0][j][e] = Acc(0);

#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < p.KT) loadStage(s, s);
    cpAsyncCommit();
  }

  // This thread's two A rows of its warpgroup's 64-row slice; one 16-byte chunk of each per k tile.
  const int rowLo = wg * 64 + qglayout::aRow(warp, lane, 0), rowHi = wg * 64 + qglayout::aRow(warp, lane, 1);
  for (int kt = 0; kt < p.KT; ++kt) {
    cpAsyncWait<kStages - 2>();
    fenceProxyAsync();  // this thread's landed copies, visible to the async proxy ...
    __syncthreads();    // ... for every thread; stage kt-1's wgmma finished (waited below)
    {
      const int next = kt + kStages - 1;
      if (next < p.KT) loadStage(next % kStages, next);
      cpAsyncCommit();
    }
    const int stage = kt % kStages;
    const uint8_t* a = sA + stage * kWgTileBytes;
    const uint4 lo = *reinterpret_cast<const uint4*>(a + qglayout::aTileOffset(rowLo, qglayout::aChunk(lane)));
    const uint4 hi = *reinterpret_cast<const uint4*>(a + qglayout::aTileOffset(rowHi, qglayout::aChunk(lane)));
    const uint32_t wl[4] = {lo.x, lo.y, lo.z, lo.w}, wh[4] = {hi.x, hi.y, hi.z, hi.w};
    uint32_t af[2][4];
#pragma unroll
    for (int step = 0; step < 2; ++step)
#pragma unroll
      for (int r = 0; r < 4; ++r) af[step][r] = (r & 1 ? wh : wl)[qglayout::aWord(step, r)];
    const uint32_t bStage = smemAddr(sB + stage * kWgTileBytes);

#pragma unroll
    for (int j = 0; j < 16; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) fenceOperand(acc[0][j][e]);
    wgmmaFence();
#pragma unroll
    for (int step = 0; step < 2; ++step) {
      const uint64_t desc = qglayout::bDescriptor(bStage + step * qglayout::kBStepBytes);
      if constexpr (FP8) wgmmaE4m3(acc[0], af[step], desc);
      else wgmmaS8(acc[0], af[step], desc);
    }
    wgmmaCommit();
    wgmmaWaitAll();
#pragma unroll
    for (int j = 0; j < 16; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) fenceOperand(acc[0][j][e]);
  }
  cpAsyncWait<0>();

  epilogue<FP8, kWgBM, kWgBN, kWgThreads>(p, acc, m0, n0, wg * 64 + qglayout::accRow(warp, lane, 0), qglayout::accCol(lane, 0), base, tid);
#else
  // The launcher selects this kernel only on an sm_90 device (sm_90a code); reaching this is a bug.
  __trap();
#endif
}

// ---- weight packing -------------------------------------------------------------------------
// Code (n, k) of the source as an int (i8 / i4 sign-extended) or raw byte (fp8), 0 outside.
// i8 weight codes of -128 are read as -127, as the CPU packing does (qdm/qgemm.h), so both
// devices compute the same function of the same codes.
__device__ __forceinline__ int srcCode(const uint8_t* src, int dt, int64_t n, int64_t k, int64_t N, int64_t K) {
  if (n >= N || k >= K) return 0;
  const int64_t i = n * K + k;
  if (dt == static_cast<int>(DType::I4)) { const int nib = (src[i >> 1] >> ((i & 1) * 4)) & 0xF; return nib >= 8 ? nib - 16 : nib; }
  if (dt == static_cast<int>(DType::I8)) return max(-127, int(reinterpret_cast<const int8_t*>(src)[i]));
  return src[i];  // f8e4m3 bytes (0 is +0)
}

// One thread per (panel, k tile, block, lane): writes that lane's 16 bytes (8-bit) or 8 bytes (4-bit).
__global__ void packKernel(const uint8_t* src, int dt, int bits, int64_t N, int64_t K, int KT, int64_t lanes, uint8_t* packed) {
  for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c < lanes; c += int64_t(gridDim.x) * blockDim.x) {
    const int lane = static_cast<int>(c & 31);
    const int64_t blk = c >> 5;  // ((panel * KT + kt) * 16 + block)
    const int block = static_cast<int>(blk & 15);
    const int64_t pk = blk >> 4;
    const int64_t kt = pk % KT, panel = pk / KT;
    const int64_t n = panel * kQgPanelN + block * 8 + (lane >> 2);
    const int64_t kb = kt * kBK + (lane & 3) * 4;
    if (bits == 8) {
      uint32_t w[4] = {0u, 0u, 0u, 0u};
      for (int byte = 0; byte < 16; ++byte)
        w[byte >> 2] |= (uint32_t(srcCode(src, dt, n, kt * kBK + qglayout::packedByteK(lane, byte), N, K)) & 0xFFu) << (8 * (byte & 3));
      reinterpret_cast<uint4*>(packed)[c] = make_uint4(w[0], w[1], w[2], w[3]);
    } else {
      uint32_t w[2];
      for (int s = 0; s < 2; ++s) {
        uint32_t word = 0;
        for (int h = 0; h < 2; ++h)
          for (int j = 0; j < 4; ++j) word |= (uint32_t(srcCode(src, dt, n, kb + s * 32 + h * 16 + j, N, K) + 8) & 0xFu) << (8 * j + 4 * h);
        w[s] = word;
      }
      reinterpret_cast<uint2*>(packed)[c] = make_uint2(w[0], w[1]);
    }
  }
}

// rowSums[r] = sum_k code(r, k) for integer codes (i8 / i4), one warp per row, fixed order.
// clampW8: weight codes (contiguous, -128 read as -127); activations are summed as stored.
__global__ void codeRowSumKernel(const uint8_t* src, int dt, int64_t rows, int64_t K, int64_t ld, bool clampW8, int32_t* sums) {
  const int64_t r = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (r >= rows) return;
  int s = 0;
  for (int64_t k = lane; k < K; k += 32) {
    if (dt == static_cast<int>(DType::I4) || clampW8) s += srcCode(src, dt, r, k, rows, K);
    else s += reinterpret_cast<const int8_t*>(src)[r * ld + k];
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  if (lane == 0) sums[r] = s;
}

// Copies activation codes [M, K] (row stride lda) into a zero-padded [M, K16] buffer whose rows
// are 16-byte aligned, for operands the cp.async path cannot read directly.
__global__ void padRowsKernel(const uint8_t* a, int64_t M, int64_t K, int64_t lda, int64_t K16, uint8_t* dst) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < M * K16; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t m = i / K16, k = i - m * K16;
    dst[i] = k < K ? a[m * lda + k] : 0;
  }
}

// ---- activation quantization ------------------------------------------------------------------
__device__ __forceinline__ float clampStd(float v, float lo, float hi) {
  const float a = (v < lo) ? lo : v;
  return (hi < a) ? hi : a;
}

__global__ void actQuantStaticKernel(const void* x, int xdt, int64_t T, int64_t K, float scale, float zero, float qmin, float qmax, float shift,
                                     const float* col, int8_t* codes, int64_t ldc, float* scaleOut, float* zeroOut) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < T * K; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = i / K, k = i - t * K;
    const float s = col ? __fmul_rn(scale, col[k]) : scale;
    const float q = clampStd(__fadd_rn(rintf(__fdiv_rn(loadF(x, xdt, i), s)), zero), qmin, qmax);
    codes[t * ldc + k] = static_cast<int8_t>(static_cast<int>(__fsub_rn(q, shift)));
    if (k == 0) { scaleOut[t] = scale; if (zeroOut) zeroOut[t] = __fsub_rn(zero, shift); }
  }
}

// One block per row: the row's max |x / col| (max is order-free, so deterministic), then the codes.
template <bool FP8>
__global__ void actQuantDynamicKernel(const void* x, int xdt, int64_t K, float qmax, const float* col, uint8_t* codes, int64_t ldc, float* scaleOut,
                                      float* zeroOut) {
  __shared__ float sh[32];
  const int64_t t = blockIdx.x;
  float m = 0.0f;
  for (int64_t k = threadIdx.x; k < K; k += blockDim.x) {
    const float v = loadF(x, xdt, t * K + k);
    m = fmaxf(m, fabsf(col ? __fdiv_rn(v, col[k]) : v));
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
  if ((threadIdx.x & 31) == 0) sh[threadIdx.x >> 5] = m;
  __syncthreads();
  if (threadIdx.x < 32) {
    float w = threadIdx.x < (blockDim.x >> 5) ? sh[threadIdx.x] : 0.0f;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) w = fmaxf(w, __shfl_xor_sync(0xffffffffu, w, o));
    if (threadIdx.x == 0) sh[0] = w;
  }
  __syncthreads();
  const float amax = sh[0];
  float r = __fdiv_rn(amax, qmax);
  if (!(r > 0.0f) || !isfinite(r)) r = 1.0f;  // all-zero (or overflowing) row, as the CPU kernel
  for (int64_t k = threadIdx.x; k < K; k += blockDim.x) {
    const float s = col ? __fmul_rn(r, col[k]) : r;
    const float q = __fdiv_rn(loadF(x, xdt, t * K + k), s);
    if constexpr (FP8) {
      codes[t * ldc + k] = __nv_cvt_float_to_fp8(q, __NV_SATFINITE, __NV_E4M3);
    } else {
      reinterpret_cast<int8_t*>(codes)[t * ldc + k] = static_cast<int8_t>(static_cast<int>(clampStd(rintf(q), -qmax, qmax)));
    }
  }
  if (threadIdx.x == 0) { scaleOut[t] = r; if (zeroOut) zeroOut[t] = 0.0f; }
}

int gridFor(int64_t n, int threads = 256) { return static_cast<int>(std::min<int64_t>((n + threads - 1) / threads, 65535LL * 8)); }

template <bool FP8, int WBITS, int BM, int BN>
void launchTile(const KParams& p) {
  using T = Tile<BM, BN>;
  constexpr int smem = T::template smemBytes<WBITS>();
  auto kern = qgemmKernel<FP8, WBITS, BM, BN>;
  // Cheap and capture-safe; needed once per process for the 64 KiB tile, harmless afterwards.
  cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  const dim3 grid(unsigned((p.N + BN - 1) / BN), unsigned((p.M + BM - 1) / BM));
  kern<<<grid, T::kThreads, smem, stream()>>>(p);
}

template <bool FP8, int WBITS>
void launchKind(const KParams& p) {
  // 128x64 when it wastes fewer padded columns or when 128x128 would not fill the SMs.
  const int64_t wasteL = (p.N + 127) / 128 * 128 - p.N, wasteS = (p.N + 63) / 64 * 64 - p.N;
  const int64_t tilesL = (p.N + 127) / 128 * ((p.M + 127) / 128);
  if (wasteS < wasteL || tilesL < smCount()) launchTile<FP8, WBITS, 128, 64>(p);
  else launchTile<FP8, WBITS, 128, 128>(p);
}

template <bool FP8>
void launchWgmma(const KParams& p) {
  auto kern = qgemmWgmmaKernel<FP8>;
  cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, kWgSmemBytes);
  const dim3 grid(unsigned((p.N + kWgBN - 1) / kWgBN), unsigned((p.M + kWgBM - 1) / kWgBM));
  kern<<<grid, kWgThreads, kWgSmemBytes, stream()>>>(p);
}

bool isFloat(DType d) { return d == DType::F32 || d == DType::F16 || d == DType::BF16; }

// W8 path choice: 0 auto (wgmma only with QDM_QGEMM_WGMMA=1 on an sm_90 device), 1 mma.sync, 2 wgmma.
// The wgmma kernel has never run on a GPU, so it is never the default.
std::atomic<int> gPathMode{0};
bool wgmmaEnv() {
  static const bool on = [] {
    const char* v = std::getenv("QDM_QGEMM_WGMMA");
    return v != nullptr && std::strcmp(v, "1") == 0;
  }();
  return on;
}
bool useWgmma() {
  const int mode = gPathMode.load();
  return mode == 2 || (mode == 0 && wgmmaEnv() && computeCapability() == 90);
}
void requireSm90(const char* who) {
  if (computeCapability() != 90)
    throw KernelError("QDM_UNSUPPORTED", std::string(who) + ": the wgmma path needs an sm_90 (Hopper) GPU; this one is sm_" + std::to_string(computeCapability()));
}

}  // namespace

const char* qgemmCudaPath(const char* path) {
  if (path != nullptr) {
    const std::string s = path;
    if (s == "wgmma") { requireSm90("qgemmCudaPath('wgmma')"); gPathMode = 2; }
    else if (s == "mma") gPathMode = 1;
    else if (s == "auto") gPathMode = 0;
    else throw KernelError("QDM_BAD_ARGUMENT", "qgemmCudaPath: expected 'auto', 'mma' or 'wgmma', got '" + s + "'");
  }
  return useWgmma() ? "wgmma" : "mma";
}

int64_t qgemmPackedBytes(int64_t n, int64_t k, int bits) {
  const int64_t panels = (n + kQgPanelN - 1) / kQgPanelN, kt = (k + kQgTileK - 1) / kQgTileK;
  return panels * kt * kQgPanelN * kQgTileK * bits / 8;
}

void qgemmPackWeights(const View& codes, int bits, uint8_t* packed, int32_t* rowSums) {
  if (codes.ndim != 2) throw KernelError("QDM_BAD_ARGUMENT", "qgemmPackWeights: codes must be 2-d [n, k]");
  const int64_t N = codes.shape[0], K = codes.shape[1];
  const DType dt = codes.dtype;
  if (!((bits == 8 && (dt == DType::I8 || dt == DType::F8E4M3)) || (bits == 4 && dt == DType::I4)))
    throw KernelError("QDM_BAD_DTYPE", std::string("qgemmPackWeights: ") + std::to_string(bits) + "-bit packing needs " + (bits == 8 ? "i8 or f8e4m3" : "i4") + " codes, got " + dtypeName(dt));
  if (N == 0 || K == 0) return;
  const int KT = static_cast<int>((K + kQgTileK - 1) / kQgTileK);
  const int64_t lanes = (N + kQgPanelN - 1) / kQgPanelN * KT * 16 * 32;
  packKernel<<<gridFor(lanes), 256, 0, stream()>>>(codes.ptr<uint8_t>(), int(dt), bits, N, K, KT, lanes, packed);
  checkLaunch("qgemmPackWeights");
  if (rowSums && dt != DType::F8E4M3) {
    codeRowSumKernel<<<unsigned((N * 32 + 255) / 256), 256, 0, stream()>>>(codes.ptr<uint8_t>(), int(dt), N, K, K, true, rowSums);
    checkLaunch("qgemmPackWeights row sums");
  }
}

void qgemm(const QgemmArgs& A) {
  const bool fp8 = A.kind == QgemmKind::Fp8;
  if (fp8 && computeCapability() < 89)
    throw KernelError("QDM_UNSUPPORTED", "qgemm: the fp8 e4m3 path needs an sm_89 or newer GPU (this one is sm_" + std::to_string(computeCapability()) + "); use the int8 path");
  if (A.wbits != 8 && A.wbits != 4) throw KernelError("QDM_BAD_ARGUMENT", "qgemm: weight bits must be 8 or 4");
  if (fp8 && (A.aZero || A.wZero)) throw KernelError("QDM_BAD_ARGUMENT", "qgemm: the fp8 path has no zero points");
  if (!isFloat(A.out.dtype)) throw KernelError("QDM_BAD_DTYPE", std::string("qgemm: out must be f32, f16 or bf16, got ") + dtypeName(A.out.dtype));
  if (A.M == 0 || A.N == 0) return;
  const bool wgmma = A.wbits == 8 && useWgmma();
  if (wgmma) requireSm90("qgemm");  // forced on another device that is no longer current; before any allocation

  KParams p{};
  p.M = A.M; p.N = A.N; p.K = A.K;
  p.KT = static_cast<int>((A.K + kQgTileK - 1) / kQgTileK);
  p.packed = A.packed; p.wRowSums = A.wRowSums;
  p.aScale = A.aScale; p.aZero = A.aZero; p.aScaleStride = A.aScaleStride; p.wScale = A.wScale; p.wZero = A.wZero;
  p.bias = A.bias.data; p.biasDt = int(A.bias.dtype);
  p.lowXA = A.lowXA.data; p.lowB = A.lowB.data; p.lowXADt = int(A.lowXA.dtype); p.lowBDt = int(A.lowB.dtype);
  p.lowR = A.lowXA.data ? A.lowXA.shape[A.lowXA.ndim - 1] : 0;
  p.out = A.out.data; p.outDt = int(A.out.dtype); p.ldc = A.out.strides[0];
  const size_t osz = dtypeSize(A.out.dtype);
  p.pairStore = p.ldc % 2 == 0 && reinterpret_cast<uintptr_t>(A.out.data) % (2 * osz) == 0;

  // Rows the cp.async path cannot read (unaligned base or stride, K not a multiple of 16) are
  // first copied into an aligned, zero-padded workspace.
  const auto* a = static_cast<const uint8_t*>(A.a);
  uint8_t* padded = nullptr;
  int32_t* aSums = nullptr;
  if (reinterpret_cast<uintptr_t>(a) % 16 != 0 || A.lda % 16 != 0 || A.K % 16 != 0) {
    const int64_t K16 = (A.K + 15) / 16 * 16;
    padded = static_cast<uint8_t*>(allocDevice(size_t(A.M * K16)));
    padRowsKernel<<<gridFor(A.M * K16), 256, 0, stream()>>>(a, A.M, A.K, A.lda, K16, padded);
    checkLaunch("qgemm pad activations");
    p.a = padded; p.lda = K16;
  } else {
    p.a = a; p.lda = A.lda;
  }
  if (!fp8 && A.wZero) {
    aSums = static_cast<int32_t*>(allocDevice(sizeof(int32_t) * size_t(A.M)));
    codeRowSumKernel<<<unsigned((A.M * 32 + 255) / 256), 256, 0, stream()>>>(p.a, int(DType::I8), A.M, A.K, p.lda, false, aSums);
    checkLaunch("qgemm activation row sums");
  }
  p.aRowSums = aSums;

  if (wgmma) {
    if (fp8) launchWgmma<true>(p); else launchWgmma<false>(p);
  } else if (fp8) { if (A.wbits == 8) launchKind<true, 8>(p); else launchKind<true, 4>(p); }
  else { if (A.wbits == 8) launchKind<false, 8>(p); else launchKind<false, 4>(p); }
  checkLaunch(fp8 ? "qgemm fp8" : "qgemm int8");
  if (padded) freeDevice(padded);
  if (aSums) freeDevice(aSums);
}

void quantizeActivations(const View& x, int64_t T, int64_t K, bool dynamic, float scale, float zero, float qmin, float qmax, const float* col,
                         const View& codes, float* scaleOut, float* zeroOut) {
  if (!isFloat(x.dtype)) throw KernelError("QDM_BAD_DTYPE", std::string("quantizeActivations: x must be f32, f16 or bf16, got ") + dtypeName(x.dtype));
  if (T == 0 || K == 0) return;
  const int64_t ldc = codes.ndim >= 2 ? codes.strides[0] : K;
  if (codes.dtype == DType::F8E4M3) {
    actQuantDynamicKernel<true><<<unsigned(T), 256, 0, stream()>>>(x.data, int(x.dtype), K, 448.0f, col, codes.ptr<uint8_t>(), ldc, scaleOut, zeroOut);
  } else if (codes.dtype != DType::I8) {
    throw KernelError("QDM_BAD_DTYPE", std::string("quantizeActivations: codes must be i8 or f8e4m3, got ") + dtypeName(codes.dtype));
  } else if (dynamic) {
    if (qmax < 1 || qmax > 127) throw KernelError("QDM_BAD_ARGUMENT", "quantizeActivations: dynamic qmax must lie in [1, 127]");
    actQuantDynamicKernel<false><<<unsigned(T), 256, 0, stream()>>>(x.data, int(x.dtype), K, qmax, col, codes.ptr<uint8_t>(), ldc, scaleOut, zeroOut);
  } else {
    if (!(scale > 0.0f)) throw KernelError("QDM_BAD_ARGUMENT", "quantizeActivations: the scale must be positive");
    const float shift = qmax > 127 ? 128.0f : 0.0f;
    if (qmin - shift < -128 || qmax - shift > 127)
      throw KernelError("QDM_BAD_ARGUMENT", "quantizeActivations: range [" + std::to_string(qmin) + ", " + std::to_string(qmax) + "] does not fit 8-bit codes");
    actQuantStaticKernel<<<gridFor(T * K), 256, 0, stream()>>>(x.data, int(x.dtype), T, K, scale, zero, qmin, qmax, shift, col, codes.ptr<int8_t>(), ldc, scaleOut, zeroOut);
  }
  checkLaunch("quantizeActivations");
}

}  // namespace qdm::cuda
