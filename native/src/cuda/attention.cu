// Fused attention forward on CUDA, flash-attention-2 style: out = softmax(q k^T * scale + mask) v
// without materialising the [Lq, Lk] scores. Semantics of the CPU kernel (cpu/attention.cpp):
// any strides, stride-0 batch broadcast, optional additive mask, fully masked rows give zeros.
//
// Kernel: one CTA of 4 warps per (batch item, block of 64 query rows); each warp owns 16 rows.
// - The Q tile (64 x Dp) and K/V tiles (64 keys x Dp; 32 for Dp 160) live in shared memory, rows padded by 8
//   halves (16 B) so that the ldmatrix row addresses of a phase hit 8 distinct 16-byte bank
//   groups (Dp/8 + 1 is odd for every Dp used). K/V tiles are double-buffered: tile j+1 is
//   fetched with cp.async (16-byte chunks, zero-fill past Lk and past the head dim) while
//   tile j is computed.
// - S = Q K^T and O += P V run on mma.sync.m16n8k16 (f16 or bf16 in, f32 accumulate); Q and K
//   fragments come from ldmatrix.x4, V fragments from ldmatrix.x4.trans (V is stored [key][dim]
//   and is the k-major B operand of P V). P goes from the S accumulators straight into A
//   fragments (the m16n8 C layout of two adjacent key blocks is the m16k16 A layout).
// - Online softmax in f32 in the log2 domain (scores pre-multiplied by scale*log2 e, exp2):
//   running row max m and per-thread partial row sums l; when m grows, l and O are rescaled by
//   exp2(m_old - m_new). A row whose scores are all -inf so far shifts by 0 (no inf - inf).
//   The four threads of a quad share a row: max via two xor-shuffles, l reduced once at the end.
// - Head dims are padded to Dp in {48, 64, 80, 128, 160} (SD 1.5 uses 40, 80, 160; 64 and 128
//   are the common others) with zeros, which add nothing to q.k and produce output columns that
//   are never stored. Keys past Lk get -inf scores; query rows past Lq are computed on zero Q
//   rows and not stored.
// Operand preparation: f16/bf16 operands whose rows are contiguous and 16-byte aligned are read
// in place. Anything else (f32 or mixed dtypes, other strides, a head dim not a multiple of 8)
// is first packed by a small kernel into a contiguous [batch, L, roundUp(D, 8)] buffer in the
// compute dtype: bf16 when q, k and v are all bf16, f16 otherwise (f16 keeps 3 more mantissa
// bits than bf16; attention inputs are activations well inside f16's range). So f32 attention
// carries the f16 rounding of q, k, v and P: relative error about 5e-4 against the f32 CPU.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <string>

#include "cuda/ew_common.cuh"
#include "qdm/cuda_device.h"
#include "qdm/cuda_nn.h"

namespace qdm::cuda {
namespace {

constexpr int kBM = 64;       // query rows per CTA
// Keys per tile: 64, or 32 for Dp 160 so that Q + double-buffered K/V (64.5 KiB) fit the
// 99 KiB per-block shared memory of sm_89 as well (64 keys would need 105 KiB).
__host__ __device__ constexpr int keysPerTile(int dp) { return dp > 128 ? 32 : 64; }
constexpr int kWarps = 4;     // 16 query rows each
constexpr int kThreads = kWarps * 32;
constexpr float kLog2e = 1.4426950408889634f;

inline cudaStream_t stream() { return static_cast<cudaStream_t>(currentStream()); }

struct AttnParams {
  const void* q; const void* k; const void* v; const void* mask; void* out;
  DType maskT, outT;
  int nb;  // batch dims
  int64_t bshape[kMaxDims];
  int64_t qbs[kMaxDims], kbs[kMaxDims], vbs[kMaxDims], mbs[kMaxDims];  // batch strides, elements
  int64_t qrs, krs, vrs;  // row strides (head-dim stride is 1)
  int64_t mrs, mcs;       // mask row / column strides
  int Lq, Lk, Dv;
  int qkChunks, vChunks;  // 16-byte chunks of real data per row: ceil(D / 8), ceil(Dv / 8)
  float scaleLog2;        // scale * log2(e)
  float* lseOut;          // forward: row log-sum-exp [batch * Lq] (natural log) or null
  // backward only
  const void* dO; int64_t obs[kMaxDims]; int64_t ors;  // gradOut as prepared (like q, k, v)
  const float* lse; const float* dsum;                 // [batch * Lq]
  void* gq; void* gk; void* gv; DType gqT, gkT, gvT;   // contiguous [batch, L, D or Dv]
  int D;
  float scale;
};
constexpr float kLn2 = 0.6931471805599453f;

// ---- PTX wrappers ------------------------------------------------------------------------
__device__ __forceinline__ void cpAsync16(void* smem, const void* gmem, bool valid) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  const int n = valid ? 16 : 0;  // 0: zero-fill, nothing read
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(n));
}
__device__ __forceinline__ void cpAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cpAsyncWait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

__device__ __forceinline__ void ldmatrixX4(uint32_t (&r)[4], const void* smem) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n" : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(s));
}
__device__ __forceinline__ void ldmatrixX4T(uint32_t (&r)[4], const void* smem) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n" : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(s));
}

template <typename T> struct Mma;
template <> struct Mma<__half> {
  static __device__ __forceinline__ void run(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3]) : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
  static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
    __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&h);
  }
};
template <> struct Mma<__nv_bfloat16> {
  static __device__ __forceinline__ void run(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3]) : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
  static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
    __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&h);
  }
};

// Float loads/stores by runtime dtype (f32, f16, bf16 only: the binding checks).
__device__ __forceinline__ float ldFloat(const void* p, int64_t i, DType t) {
  if (t == DType::F32) return static_cast<const float*>(p)[i];
  if (t == DType::F16) return __half2float(static_cast<const __half*>(p)[i]);
  return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
}
__device__ __forceinline__ void stFloat(void* p, int64_t i, DType t, float v) {
  if (t == DType::F32) static_cast<float*>(p)[i] = v;
  else if (t == DType::F16) static_cast<__half*>(p)[i] = __float2half_rn(v);
  else static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v);
}

// Copies rows [r0, r0 + kRows) of X (row stride rs) into s (row stride LD, DP columns):
// chunk c of row r is real when r0 + r < L and c < chunks, zero-filled otherwise.
template <typename T, int DP, int kRows>
__device__ __forceinline__ void loadTile(T* s, const T* X, int64_t rs, int r0, int L, int chunks) {
  constexpr int LD = DP + 8, CPR = DP / 8;
  for (int c = threadIdx.x; c < kRows * CPR; c += kThreads) {
    const int r = c / CPR, ch = c - r * CPR;
    const bool valid = r0 + r < L && ch < chunks;
    cpAsync16(s + r * LD + ch * 8, valid ? X + static_cast<int64_t>(r0 + r) * rs + ch * 8 : X, valid);
  }
}

// acc[N/8][4] = A B^T for this warp: A = 16 rows of shared memory (aFrag: the lane's ldmatrix
// address in the warp's first row block), B = N rows of bS; both DP columns, row stride DP + 8.
// The result is in the m16n8 accumulator layout: acc[n][e] is row (lane/4 + 8*(e/2)), column
// (8n + 2*(lane%4) + e%2).
template <typename T, int DP, int N>
__device__ __forceinline__ void mmaABt(float (&acc)[N / 8][4], const T* aFrag, const T* bS, int lane) {
  constexpr int LD = DP + 8;
#pragma unroll
  for (int i = 0; i < N / 8; ++i) acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.0f;
#pragma unroll
  for (int kk = 0; kk < DP / 16; ++kk) {
    uint32_t a[4];
    ldmatrixX4(a, aFrag + kk * 16);
#pragma unroll
    for (int n2 = 0; n2 < N / 16; ++n2) {
      // matrices: (rows +0..7, cols +0), (rows +0..7, cols +8), (rows +8..15, cols +0), (rows +8..15, cols +8)
      uint32_t bk[4];
      ldmatrixX4(bk, bS + (n2 * 16 + (lane & 7) + (lane >> 4) * 8) * LD + kk * 16 + ((lane >> 3) & 1) * 8);
      Mma<T>::run(acc[2 * n2], a, bk[0], bk[1]);
      Mma<T>::run(acc[2 * n2 + 1], a, bk[2], bk[3]);
    }
  }
}

// acc[DP/8][4] += P B for this warp: P = 16 x N values held in accumulator layout (rounded to T
// here; two adjacent n8 blocks of the C layout are exactly one k16 A fragment), B = N rows x DP
// columns of bS (row stride DP + 8), read transposed by ldmatrix.trans (B is k-major).
template <typename T, int DP, int N>
__device__ __forceinline__ void mmaPB(float (&acc)[DP / 8][4], const float (&pm)[N / 8][4], const T* bS, int lane) {
  constexpr int LD = DP + 8;
#pragma unroll
  for (int kk = 0; kk < N / 16; ++kk) {
    uint32_t a[4];
    a[0] = Mma<T>::pack(pm[2 * kk][0], pm[2 * kk][1]);
    a[1] = Mma<T>::pack(pm[2 * kk][2], pm[2 * kk][3]);
    a[2] = Mma<T>::pack(pm[2 * kk + 1][0], pm[2 * kk + 1][1]);
    a[3] = Mma<T>::pack(pm[2 * kk + 1][2], pm[2 * kk + 1][3]);
#pragma unroll
    for (int n2 = 0; n2 < DP / 16; ++n2) {
      // matrices: (k +0..7, cols +0), (k +8..15, cols +0), (k +0..7, cols +8), (k +8..15, cols +8)
      uint32_t bv[4];
      ldmatrixX4T(bv, bS + (kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * LD + n2 * 16 + (lane >> 4) * 8);
      Mma<T>::run(acc[2 * n2], a, bv[0], bv[1]);
      Mma<T>::run(acc[2 * n2 + 1], a, bv[2], bv[3]);
    }
  }
}

// Element offsets of batch item b in q, k, v, mask (and gradOut) from the batch strides.
struct BatchOffsets { int64_t q = 0, k = 0, v = 0, m = 0, o = 0; };
__device__ __forceinline__ BatchOffsets batchOffsets(const AttnParams& p, int64_t b, bool withGradOut) {
  BatchOffsets r;
  int64_t rem = b;
  for (int d = p.nb - 1; d >= 0; --d) {
    const int64_t i = rem % p.bshape[d];
    rem /= p.bshape[d];
    r.q += i * p.qbs[d]; r.k += i * p.kbs[d]; r.v += i * p.vbs[d]; r.m += i * p.mbs[d];
    if (withGradOut) r.o += i * p.obs[d];
  }
  return r;
}

template <typename T, int DP>
__global__ void __launch_bounds__(kThreads) attentionKernel(AttnParams p) {
  constexpr int LD = DP + 8, kBN = keysPerTile(DP);
  extern __shared__ __align__(16) unsigned char smemRaw[];
  T* sQ = reinterpret_cast<T*>(smemRaw);  // [kBM][LD]
  T* sK = sQ + kBM * LD;                  // [2][kBN][LD]
  T* sV = sK + 2 * kBN * LD;              // [2][kBN][LD]

  const int64_t b = blockIdx.x;
  const int q0 = blockIdx.y * kBM;
  const BatchOffsets bo = batchOffsets(p, b, false);
  const T* Q = static_cast<const T*>(p.q) + bo.q;
  const T* K = static_cast<const T*>(p.k) + bo.k;
  const T* V = static_cast<const T*>(p.v) + bo.v;

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int nT = (p.Lk + kBN - 1) / kBN;

  loadTile<T, DP, kBM>(sQ, Q, p.qrs, q0, p.Lq, p.qkChunks);
  loadTile<T, DP, kBN>(sK, K, p.krs, 0, p.Lk, p.qkChunks);
  loadTile<T, DP, kBN>(sV, V, p.vrs, 0, p.Lk, p.vChunks);
  cpAsyncCommit();

  float o[DP / 8][4];
#pragma unroll
  for (int i = 0; i < DP / 8; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
  float mRow[2] = {-INFINITY, -INFINITY}, lRow[2] = {0.0f, 0.0f};
  const int rowA = q0 + warp * 16 + (lane >> 2);  // this thread's rows: rowA and rowA + 8
  const T* qFrag = sQ + (warp * 16 + (lane & 15)) * LD + (lane >> 4) * 8;

  for (int j = 0; j < nT; ++j) {
    if (j + 1 < nT) {
      const int nb = (j + 1) & 1;
      loadTile<T, DP, kBN>(sK + nb * kBN * LD, K, p.krs, (j + 1) * kBN, p.Lk, p.qkChunks);
      loadTile<T, DP, kBN>(sV + nb * kBN * LD, V, p.vrs, (j + 1) * kBN, p.Lk, p.vChunks);
      cpAsyncCommit();
      cpAsyncWait<1>();
    } else {
      cpAsyncWait<0>();
    }
    __syncthreads();
    const T* cK = sK + (j & 1) * kBN * LD;
    const T* cV = sV + (j & 1) * kBN * LD;

    // S = Q K^T for this warp's 16 rows x kBN keys.
    float s[kBN / 8][4];
    mmaABt<T, DP, kBN>(s, qFrag, cK, lane);

    // Scale (log2 domain), mask, key tail.
    const int key0 = j * kBN + 2 * (lane & 3);
#pragma unroll
    for (int nk = 0; nk < kBN / 8; ++nk) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int row = rowA + (e >> 1) * 8, key = key0 + nk * 8 + (e & 1);
        float x = s[nk][e] * p.scaleLog2;
        if (key >= p.Lk) x = -INFINITY;
        else if (p.mask && row < p.Lq) x += ldFloat(p.mask, bo.m + row * p.mrs + key * p.mcs, p.maskT) * kLog2e;
        s[nk][e] = x;
      }
    }

    // Online softmax: new row max, rescale the running sum and accumulator, exponentiate.
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float mx = mRow[r];
#pragma unroll
      for (int nk = 0; nk < kBN / 8; ++nk) mx = fmaxf(mx, fmaxf(s[nk][2 * r], s[nk][2 * r + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float shift = mx == -INFINITY ? 0.0f : mx;
      const float alpha = exp2f(mRow[r] - shift);  // 0 while the row had no finite score
      mRow[r] = mx;
      float sum = 0.0f;
#pragma unroll
      for (int nk = 0; nk < kBN / 8; ++nk) {
        s[nk][2 * r] = exp2f(s[nk][2 * r] - shift);
        s[nk][2 * r + 1] = exp2f(s[nk][2 * r + 1] - shift);
        sum += s[nk][2 * r] + s[nk][2 * r + 1];
      }
      lRow[r] = lRow[r] * alpha + sum;
#pragma unroll
      for (int i = 0; i < DP / 8; ++i) { o[i][2 * r] *= alpha; o[i][2 * r + 1] *= alpha; }
    }

    // O += P V: P (16 x kBN) from the S accumulators, V fragments via ldmatrix.trans.
    mmaPB<T, DP, kBN>(o, s, cV, lane);
    __syncthreads();  // the next iteration refills the buffer just read
  }

  const int64_t outRow0 = b * p.Lq;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float l = lRow[r];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;  // fully masked row: zeros, as on the CPU
    const int row = rowA + r * 8;
    if (row >= p.Lq) continue;
    // Natural-log LSE of the scaled, masked scores; +inf for a fully masked row, so that the
    // backward's exp(s - lse) is 0 there (its output is constant 0: no gradient).
    if (p.lseOut && (lane & 3) == 0) p.lseOut[outRow0 + row] = l > 0.0f ? (mRow[r] + log2f(l)) * kLn2 : INFINITY;
    const int64_t base = (outRow0 + row) * p.Dv;
#pragma unroll
    for (int i = 0; i < DP / 8; ++i) {
      const int col = i * 8 + 2 * (lane & 3);
      if (col < p.Dv) stFloat(p.out, base + col, p.outT, o[i][2 * r] * inv);
      if (col + 1 < p.Dv) stFloat(p.out, base + col + 1, p.outT, o[i][2 * r + 1] * inv);
    }
  }
}

// ---- backward (flash-attention-2 style, recomputing P from the saved LSE) ------------------
// With S = scale q k^T + mask, P = exp(S - lse), Dsum_i = sum_d dO_id O_id:
//   dV = P^T dO,  dP = dO V^T,  dS = P o (dP - Dsum),  dQ = scale dS K,  dK = scale dS^T Q.
// Two kernels, no atomics (deterministic): dK/dV per key block (each warp owns 16 keys and
// computes the transposed products S^T = K Q^T and dP^T = V dO^T directly, so every product is
// A B^T or P B with the building blocks above), and dQ per query block (the forward's loop with
// dP = dO V^T beside S). Both recompute S. The streamed tile is 64 rows (32 for Dp > 80).
__host__ __device__ constexpr int bwdTile(int dp) { return dp > 80 ? 32 : 64; }

template <typename T, int DP>
__global__ void __launch_bounds__(kThreads) attentionBwdDqKernel(AttnParams p) {
  constexpr int LD = DP + 8, NK = bwdTile(DP);
  extern __shared__ __align__(16) unsigned char smemRaw[];
  T* sQ = reinterpret_cast<T*>(smemRaw);  // [kBM][LD]
  T* sO = sQ + kBM * LD;                  // [kBM][LD] gradOut rows
  T* sK = sO + kBM * LD;                  // [2][NK][LD]
  T* sV = sK + 2 * NK * LD;               // [2][NK][LD]

  const int64_t b = blockIdx.x;
  const int q0 = blockIdx.y * kBM;
  const BatchOffsets bo = batchOffsets(p, b, true);
  const T* K = static_cast<const T*>(p.k) + bo.k;
  const T* V = static_cast<const T*>(p.v) + bo.v;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int nT = (p.Lk + NK - 1) / NK;

  loadTile<T, DP, kBM>(sQ, static_cast<const T*>(p.q) + bo.q, p.qrs, q0, p.Lq, p.qkChunks);
  loadTile<T, DP, kBM>(sO, static_cast<const T*>(p.dO) + bo.o, p.ors, q0, p.Lq, p.vChunks);
  loadTile<T, DP, NK>(sK, K, p.krs, 0, p.Lk, p.qkChunks);
  loadTile<T, DP, NK>(sV, V, p.vrs, 0, p.Lk, p.vChunks);
  cpAsyncCommit();

  const int rowA = q0 + warp * 16 + (lane >> 2);
  const int64_t row0 = b * p.Lq;
  float lse2[2], dsum[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = rowA + 8 * r;
    lse2[r] = row < p.Lq ? p.lse[row0 + row] * kLog2e : INFINITY;  // rows past Lq: P = 0
    dsum[r] = row < p.Lq ? p.dsum[row0 + row] : 0.0f;
  }
  const T* qFrag = sQ + (warp * 16 + (lane & 15)) * LD + (lane >> 4) * 8;
  const T* oFrag = sO + (warp * 16 + (lane & 15)) * LD + (lane >> 4) * 8;
  float dq[DP / 8][4];
#pragma unroll
  for (int i = 0; i < DP / 8; ++i) dq[i][0] = dq[i][1] = dq[i][2] = dq[i][3] = 0.0f;

  for (int j = 0; j < nT; ++j) {
    if (j + 1 < nT) {
      const int nb = (j + 1) & 1;
      loadTile<T, DP, NK>(sK + nb * NK * LD, K, p.krs, (j + 1) * NK, p.Lk, p.qkChunks);
      loadTile<T, DP, NK>(sV + nb * NK * LD, V, p.vrs, (j + 1) * NK, p.Lk, p.vChunks);
      cpAsyncCommit();
      cpAsyncWait<1>();
    } else {
      cpAsyncWait<0>();
    }
    __syncthreads();
    const T* cK = sK + (j & 1) * NK * LD;
    const T* cV = sV + (j & 1) * NK * LD;
    float s[NK / 8][4], dp[NK / 8][4];
    mmaABt<T, DP, NK>(s, qFrag, cK, lane);   // S = Q K^T
    mmaABt<T, DP, NK>(dp, oFrag, cV, lane);  // dP = dO V^T
    const int key0 = j * NK + 2 * (lane & 3);
#pragma unroll
    for (int nk = 0; nk < NK / 8; ++nk) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int row = rowA + (e >> 1) * 8, key = key0 + nk * 8 + (e & 1);
        float ds = 0.0f;
        if (key < p.Lk) {
          float x = s[nk][e] * p.scaleLog2;
          if (p.mask && row < p.Lq) x += ldFloat(p.mask, bo.m + row * p.mrs + key * p.mcs, p.maskT) * kLog2e;
          const float pr = exp2f(x - lse2[e >> 1]);
          ds = pr * (dp[nk][e] - dsum[e >> 1]);
        }
        s[nk][e] = ds;
      }
    }
    mmaPB<T, DP, NK>(dq, s, cK, lane);  // dQ += dS K
    __syncthreads();
  }

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = rowA + r * 8;
    if (row >= p.Lq) continue;
    const int64_t base = (row0 + row) * p.D;
#pragma unroll
    for (int i = 0; i < DP / 8; ++i) {
      const int col = i * 8 + 2 * (lane & 3);
      if (col < p.D) stFloat(p.gq, base + col, p.gqT, dq[i][2 * r] * p.scale);
      if (col + 1 < p.D) stFloat(p.gq, base + col + 1, p.gqT, dq[i][2 * r + 1] * p.scale);
    }
  }
}

template <typename T, int DP>
__global__ void __launch_bounds__(kThreads) attentionBwdDkvKernel(AttnParams p) {
  constexpr int LD = DP + 8, NQ = bwdTile(DP);
  extern __shared__ __align__(16) unsigned char smemRaw[];
  T* sK = reinterpret_cast<T*>(smemRaw);  // [kBM][LD] this CTA's 64 keys
  T* sV = sK + kBM * LD;                  // [kBM][LD]
  T* sQ = sV + kBM * LD;                  // [2][NQ][LD]
  T* sO = sQ + 2 * NQ * LD;               // [2][NQ][LD] gradOut rows

  const int64_t b = blockIdx.x;
  const int k0 = blockIdx.y * kBM;
  const BatchOffsets bo = batchOffsets(p, b, true);
  const T* Q = static_cast<const T*>(p.q) + bo.q;
  const T* dO = static_cast<const T*>(p.dO) + bo.o;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int nT = (p.Lq + NQ - 1) / NQ;

  loadTile<T, DP, kBM>(sK, static_cast<const T*>(p.k) + bo.k, p.krs, k0, p.Lk, p.qkChunks);
  loadTile<T, DP, kBM>(sV, static_cast<const T*>(p.v) + bo.v, p.vrs, k0, p.Lk, p.vChunks);
  loadTile<T, DP, NQ>(sQ, Q, p.qrs, 0, p.Lq, p.qkChunks);
  loadTile<T, DP, NQ>(sO, dO, p.ors, 0, p.Lq, p.vChunks);
  cpAsyncCommit();

  const int keyA = k0 + warp * 16 + (lane >> 2);  // this thread's keys: keyA and keyA + 8
  const int64_t row0 = b * p.Lq;
  const T* kFrag = sK + (warp * 16 + (lane & 15)) * LD + (lane >> 4) * 8;
  const T* vFrag = sV + (warp * 16 + (lane & 15)) * LD + (lane >> 4) * 8;
  float dk[DP / 8][4], dv[DP / 8][4];
#pragma unroll
  for (int i = 0; i < DP / 8; ++i) {
    dk[i][0] = dk[i][1] = dk[i][2] = dk[i][3] = 0.0f;
    dv[i][0] = dv[i][1] = dv[i][2] = dv[i][3] = 0.0f;
  }

  for (int j = 0; j < nT; ++j) {
    if (j + 1 < nT) {
      const int nb = (j + 1) & 1;
      loadTile<T, DP, NQ>(sQ + nb * NQ * LD, Q, p.qrs, (j + 1) * NQ, p.Lq, p.qkChunks);
      loadTile<T, DP, NQ>(sO + nb * NQ * LD, dO, p.ors, (j + 1) * NQ, p.Lq, p.vChunks);
      cpAsyncCommit();
      cpAsyncWait<1>();
    } else {
      cpAsyncWait<0>();
    }
    __syncthreads();
    const T* cQ = sQ + (j & 1) * NQ * LD;
    const T* cO = sO + (j & 1) * NQ * LD;
    float st[NQ / 8][4], dpt[NQ / 8][4];
    mmaABt<T, DP, NQ>(st, kFrag, cQ, lane);   // S^T = K Q^T   [16 keys x NQ queries]
    mmaABt<T, DP, NQ>(dpt, vFrag, cO, lane);  // dP^T = V dO^T
    const int qc0 = j * NQ + 2 * (lane & 3);
#pragma unroll
    for (int nq = 0; nq < NQ / 8; ++nq) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int key = keyA + (e >> 1) * 8, qr = qc0 + nq * 8 + (e & 1);
        float pr = 0.0f, ds = 0.0f;
        if (qr < p.Lq && key < p.Lk) {
          float x = st[nq][e] * p.scaleLog2;
          if (p.mask) x += ldFloat(p.mask, bo.m + qr * p.mrs + key * p.mcs, p.maskT) * kLog2e;
          pr = exp2f(x - p.lse[row0 + qr] * kLog2e);
          ds = pr * (dpt[nq][e] - p.dsum[row0 + qr]);
        }
        st[nq][e] = pr;
        dpt[nq][e] = ds;
      }
    }
    mmaPB<T, DP, NQ>(dv, st, cO, lane);   // dV += P^T dO
    mmaPB<T, DP, NQ>(dk, dpt, cQ, lane);  // dK += dS^T Q
    __syncthreads();
  }

  const int64_t krow0 = b * p.Lk;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int key = keyA + r * 8;
    if (key >= p.Lk) continue;
#pragma unroll
    for (int i = 0; i < DP / 8; ++i) {
      const int col = i * 8 + 2 * (lane & 3);
      if (col < p.D) stFloat(p.gk, (krow0 + key) * p.D + col, p.gkT, dk[i][2 * r] * p.scale);
      if (col + 1 < p.D) stFloat(p.gk, (krow0 + key) * p.D + col + 1, p.gkT, dk[i][2 * r + 1] * p.scale);
      if (col < p.Dv) stFloat(p.gv, (krow0 + key) * p.Dv + col, p.gvT, dv[i][2 * r]);
      if (col + 1 < p.Dv) stFloat(p.gv, (krow0 + key) * p.Dv + col + 1, p.gvT, dv[i][2 * r + 1]);
    }
  }
}

__global__ void fillF32Kernel(float* p, int64_t n, float v) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += static_cast<int64_t>(gridDim.x) * blockDim.x) p[i] = v;
}

// Dsum[row] = sum_d gradOut[row, d] * out[row, d]: one warp per row, fixed order.
struct DsumArgs {
  const void* dO; DType dOt; const void* out; DType outT;
  int nb; int64_t bshape[kMaxDims], bstr[kMaxDims];
  int64_t rs, cs, Lq, Dv, rows;
  float* dsum;
};
__global__ void __launch_bounds__(256) attentionDsumKernel(DsumArgs a) {
  const int64_t g = static_cast<int64_t>(blockIdx.x) * 8 + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (g >= a.rows) return;
  int64_t rem = g / a.Lq, off = (g % a.Lq) * a.rs;
  for (int d = a.nb - 1; d >= 0; --d) { off += (rem % a.bshape[d]) * a.bstr[d]; rem /= a.bshape[d]; }
  float s = 0.0f;
  for (int64_t d = lane; d < a.Dv; d += 32) s += ldFloat(a.dO, off + d * a.cs, a.dOt) * ldFloat(a.out, g * a.Dv + d, a.outT);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  if (lane == 0) a.dsum[g] = s;
}

// Packs a strided [batch..., L, Dx] operand of any float dtype into contiguous [batch, L, Dx8]
// of T (columns Dx..Dx8-1 zero).
struct PackArgs {
  const void* src; DType st;
  int nb;
  int64_t bshape[kMaxDims], bstr[kMaxDims];
  int64_t rs, cs, L, Dx, Dx8, total;
};
template <typename T>
__global__ void packKernel(PackArgs a, T* dst) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < a.total; i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t col = i % a.Dx8, rowAll = i / a.Dx8, row = rowAll % a.L;
    int64_t rem = rowAll / a.L, off = 0;
    for (int d = a.nb - 1; d >= 0; --d) { off += (rem % a.bshape[d]) * a.bstr[d]; rem /= a.bshape[d]; }
    const float x = col < a.Dx ? ldFloat(a.src, off + row * a.rs + col * a.cs, a.st) : 0.0f;
    dst[i] = ew::fromF<T>(x);
  }
}

int pickDp(int64_t d8) {
  for (int dp : {48, 64, 80, 128, 160})
    if (d8 <= dp) return dp;
  return 0;
}
// Shared memory of each kernel: the forward holds Q + 2 x (K, V) tiles; the backward kernels
// hold two resident 64-row tiles (Q and dO, or K and V) + 2 x two streamed tiles. At most 86 KiB
// (Dp 160), inside sm_89's 99 KiB per block.
constexpr size_t smemBytes(int kind, int dp) {
  return static_cast<size_t>(kind == 0 ? kBM + 4 * keysPerTile(dp) : 2 * kBM + 4 * bwdTile(dp)) * (dp + 8) * 2;
}

// kind 0: forward, 1: dQ, 2: dK/dV. Grid: (batch, row blocks of 64 of Lq or, for dK/dV, Lk).
template <int Kind, typename T, int DP>
void launchKind(const AttnParams& p, int64_t batch) {
  auto kern = Kind == 0 ? attentionKernel<T, DP> : Kind == 1 ? attentionBwdDqKernel<T, DP> : attentionBwdDkvKernel<T, DP>;
  static bool configured = false;  // opt in to > 48 KiB of dynamic shared memory once
  if (!configured) {
    cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smemBytes(Kind, DP)));
    configured = true;
  }
  const int64_t rows = Kind == 2 ? p.Lk : p.Lq;
  const dim3 grid(static_cast<unsigned>(batch), static_cast<unsigned>((rows + kBM - 1) / kBM));
  kern<<<grid, kThreads, smemBytes(Kind, DP), stream()>>>(p);
}
template <int Kind, typename T>
void dispatchDp(int dp, const AttnParams& p, int64_t batch) {
  switch (dp) {
    case 48: launchKind<Kind, T, 48>(p, batch); break;
    case 64: launchKind<Kind, T, 64>(p, batch); break;
    case 80: launchKind<Kind, T, 80>(p, batch); break;
    case 128: launchKind<Kind, T, 128>(p, batch); break;
    default: launchKind<Kind, T, 160>(p, batch); break;
  }
}
template <int Kind>
void dispatch(DType compute, int dp, const AttnParams& p, int64_t batch) {
  if (compute == DType::BF16) dispatchDp<Kind, __nv_bfloat16>(dp, p, batch);
  else dispatchDp<Kind, __half>(dp, p, batch);
}

// Rows contiguous, 16-byte aligned at every row and batch item, in the compute dtype.
bool readInPlace(const View& x, DType compute) {
  const int nd = x.ndim;
  if (x.dtype != compute || x.shape[nd - 1] % 8 != 0 || x.strides[nd - 1] != 1) return false;
  if (reinterpret_cast<uintptr_t>(x.data) % 16 != 0) return false;
  for (int d = 0; d < nd - 1; ++d)
    if (x.shape[d] > 1 && x.strides[d] % 8 != 0) return false;
  return true;
}

// Device blocks freed when the launcher returns (safe right after enqueueing: stream-ordered).
struct Workspace {
  void* blocks[5] = {nullptr, nullptr, nullptr, nullptr, nullptr};
  int n = 0;
  void* get(size_t bytes) { blocks[n] = allocDevice(bytes); return blocks[n++]; }
  ~Workspace() { for (int i = 0; i < n; ++i) freeDevice(blocks[i]); }
};

// Points the kernel at x in place, or packs x into a contiguous [batch, L, roundUp(Dx, 8)] copy
// of the compute dtype and points it there.
void prepareOperand(const View& x, DType compute, int64_t batch, Workspace& ws, const void*& ptr, int64_t* bs, int64_t& rs) {
  const int nd = x.ndim, nb = nd - 2;
  const int64_t L = x.shape[nd - 2], Dx = x.shape[nd - 1], Dx8 = (Dx + 7) / 8 * 8;
  if (readInPlace(x, compute) || batch * L * Dx8 == 0) {  // (an empty operand is never read)
    ptr = x.data;
    for (int d = 0; d < nb; ++d) bs[d] = x.strides[d];
    rs = x.strides[nd - 2];
    return;
  }
  PackArgs a{};
  a.src = x.data; a.st = x.dtype; a.nb = nb;
  for (int d = 0; d < nb; ++d) { a.bshape[d] = x.shape[d]; a.bstr[d] = x.strides[d]; }
  a.rs = x.strides[nd - 2]; a.cs = x.strides[nd - 1]; a.L = L; a.Dx = Dx; a.Dx8 = Dx8; a.total = batch * L * Dx8;
  void* dst = ws.get(static_cast<size_t>(a.total) * 2);
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((a.total + 255) / 256, static_cast<int64_t>(smCount()) * 16 + 1));
  if (compute == DType::BF16) packKernel<__nv_bfloat16><<<blocks, 256, 0, stream()>>>(a, static_cast<__nv_bfloat16*>(dst));
  else packKernel<__half><<<blocks, 256, 0, stream()>>>(a, static_cast<__half*>(dst));
  checkLaunch("attention (operand packing)");
  ptr = dst;
  int64_t st = L * Dx8;  // contiguous batch strides of the packed copy
  for (int d = nb - 1; d >= 0; --d) { bs[d] = st; st *= x.shape[d]; }
  rs = Dx8;
}

struct Shape { int nd, nb; int64_t Lq, D, Lk, Dv, batch; };
Shape shapeOf(const View& q, const View& k, const View& v) {
  Shape s;
  s.nd = q.ndim; s.nb = s.nd - 2;
  s.Lq = q.shape[s.nd - 2]; s.D = q.shape[s.nd - 1]; s.Lk = k.shape[s.nd - 2]; s.Dv = v.shape[s.nd - 1];
  s.batch = 1;
  for (int d = 0; d < s.nb; ++d) s.batch *= q.shape[d];
  return s;
}
void checkSupported(const Shape& s, const char* op) {
  if (s.D == 0) throw KernelError("QDM_BAD_ARGUMENT", std::string(op) + ": head dim 0 is not supported");
  if (s.D > kAttentionMaxHeadDim || s.Dv > kAttentionMaxHeadDim)
    throw KernelError("QDM_BAD_ARGUMENT", std::string(op) + ": CUDA head dims up to " + std::to_string(kAttentionMaxHeadDim) + " (got " + std::to_string(s.D) + ", " + std::to_string(s.Dv) + ")");
  if (s.batch > 0x7fffffff || (s.Lq + kBM - 1) / kBM > 65535 || (s.Lk + kBM - 1) / kBM > 65535)
    throw KernelError("QDM_BAD_ARGUMENT", std::string(op) + ": batch or sequence too large for the CUDA grid");
}
// The compute dtype: bf16 when q, k, v are all bf16, else f16.
DType computeDtype(const View& q, const View& k, const View& v) {
  return q.dtype == DType::BF16 && k.dtype == DType::BF16 && v.dtype == DType::BF16 ? DType::BF16 : DType::F16;
}
// Everything but the operand pointers/strides and the outputs.
void fillParams(AttnParams& p, const Shape& s, const View& q, const View& mask, float scale) {
  p.mask = mask.data; p.maskT = mask.dtype;
  p.nb = s.nb;
  for (int d = 0; d < s.nb; ++d) {
    p.bshape[d] = q.shape[d];
    p.mbs[d] = mask.data ? mask.strides[d] : 0;
  }
  p.mrs = mask.data ? mask.strides[s.nd - 2] : 0;
  p.mcs = mask.data ? mask.strides[s.nd - 1] : 0;
  p.Lq = static_cast<int>(s.Lq); p.Lk = static_cast<int>(s.Lk); p.Dv = static_cast<int>(s.Dv); p.D = static_cast<int>(s.D);
  p.qkChunks = static_cast<int>((s.D + 7) / 8); p.vChunks = static_cast<int>((s.Dv + 7) / 8);
  p.scaleLog2 = scale * kLog2e;
  p.scale = scale;
}
int dpFor(const Shape& s) {
  const int64_t D8 = (s.D + 7) / 8 * 8, Dv8 = (s.Dv + 7) / 8 * 8;
  return pickDp(D8 > Dv8 ? D8 : Dv8);
}
void zeroFill(const View& t, int64_t n) {
  if (t.data && n > 0) cudaMemsetAsync(t.data, 0, static_cast<size_t>(n) * dtypeSize(t.dtype), stream());
}
}  // namespace

void attentionForward(const View& q, const View& k, const View& v, const View& mask, const View& out, const View& lse, float scale) {
  const Shape s = shapeOf(q, k, v);
  if (s.batch == 0 || s.Lq == 0) return;
  if (s.Lk == 0) {  // an empty softmax: zeros (all-zero bits are 0.0 in f32, f16 and bf16); lse -inf
    zeroFill(out, s.batch * s.Lq * s.Dv);
    if (lse.data) {
      const int64_t n = s.batch * s.Lq;
      fillF32Kernel<<<static_cast<unsigned>(std::min<int64_t>((n + 255) / 256, 4096)), 256, 0, stream()>>>(static_cast<float*>(lse.data), n, -INFINITY);
    }
    checkLaunch("attentionForward");
    return;
  }
  if (s.Dv == 0 && !lse.data) return;
  checkSupported(s, "attentionForward");
  const DType compute = computeDtype(q, k, v);
  AttnParams p{};
  fillParams(p, s, q, mask, scale);
  p.out = out.data; p.outT = out.dtype;
  p.lseOut = static_cast<float*>(lse.data);
  Workspace ws;
  prepareOperand(q, compute, s.batch, ws, p.q, p.qbs, p.qrs);
  prepareOperand(k, compute, s.batch, ws, p.k, p.kbs, p.krs);
  prepareOperand(v, compute, s.batch, ws, p.v, p.vbs, p.vrs);
  dispatch<0>(compute, dpFor(s), p, s.batch);
  checkLaunch("attentionForward");
}

void attentionBackward(const View& q, const View& k, const View& v, const View& mask, const View& out, const View& gradOut, const View& lse,
                       const View& gq, const View& gk, const View& gv, float scale) {
  const Shape s = shapeOf(q, k, v);
  if (s.batch == 0) return;
  if (s.Lq == 0 || s.Lk == 0 || s.Dv == 0) {  // the output does not depend on the inputs
    zeroFill(gq, s.batch * s.Lq * s.D);
    zeroFill(gk, s.batch * s.Lk * s.D);
    zeroFill(gv, s.batch * s.Lk * s.Dv);
    checkLaunch("attentionBackward");
    return;
  }
  checkSupported(s, "attentionBackward");
  const DType compute = computeDtype(q, k, v);
  AttnParams p{};
  fillParams(p, s, q, mask, scale);
  p.lse = static_cast<const float*>(lse.data);
  p.gq = gq.data; p.gk = gk.data; p.gv = gv.data; p.gqT = gq.dtype; p.gkT = gk.dtype; p.gvT = gv.dtype;
  Workspace ws;
  prepareOperand(q, compute, s.batch, ws, p.q, p.qbs, p.qrs);
  prepareOperand(k, compute, s.batch, ws, p.k, p.kbs, p.krs);
  prepareOperand(v, compute, s.batch, ws, p.v, p.vbs, p.vrs);
  prepareOperand(gradOut, compute, s.batch, ws, p.dO, p.obs, p.ors);

  DsumArgs da{};
  da.dO = gradOut.data; da.dOt = gradOut.dtype; da.out = out.data; da.outT = out.dtype;
  da.nb = s.nb;
  for (int d = 0; d < s.nb; ++d) { da.bshape[d] = gradOut.shape[d]; da.bstr[d] = gradOut.strides[d]; }
  da.rs = gradOut.strides[s.nd - 2]; da.cs = gradOut.strides[s.nd - 1];
  da.Lq = s.Lq; da.Dv = s.Dv; da.rows = s.batch * s.Lq;
  da.dsum = static_cast<float*>(ws.get(static_cast<size_t>(da.rows) * sizeof(float)));
  attentionDsumKernel<<<static_cast<unsigned>((da.rows + 7) / 8), 256, 0, stream()>>>(da);
  checkLaunch("attentionBackward (row sums)");
  p.dsum = da.dsum;

  const int dp = dpFor(s);
  dispatch<2>(compute, dp, p, s.batch);
  checkLaunch("attentionBackward (dK, dV)");
  dispatch<1>(compute, dp, p, s.batch);
  checkLaunch("attentionBackward (dQ)");
}

}  // namespace qdm::cuda
