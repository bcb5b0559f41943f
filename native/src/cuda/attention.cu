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
};

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

template <typename T, int DP>
__global__ void __launch_bounds__(kThreads) attentionKernel(AttnParams p) {
  constexpr int LD = DP + 8, kBN = keysPerTile(DP);
  extern __shared__ __align__(16) unsigned char smemRaw[];
  T* sQ = reinterpret_cast<T*>(smemRaw);  // [kBM][LD]
  T* sK = sQ + kBM * LD;                  // [2][kBN][LD]
  T* sV = sK + 2 * kBN * LD;              // [2][kBN][LD]

  const int64_t b = blockIdx.x;
  const int q0 = blockIdx.y * kBM;
  int64_t qo = 0, ko = 0, vo = 0, mo = 0, rem = b;
  for (int d = p.nb - 1; d >= 0; --d) {
    const int64_t i = rem % p.bshape[d];
    rem /= p.bshape[d];
    qo += i * p.qbs[d]; ko += i * p.kbs[d]; vo += i * p.vbs[d]; mo += i * p.mbs[d];
  }
  const T* Q = static_cast<const T*>(p.q) + qo;
  const T* K = static_cast<const T*>(p.k) + ko;
  const T* V = static_cast<const T*>(p.v) + vo;

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
#pragma unroll
    for (int i = 0; i < kBN / 8; ++i) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < DP / 16; ++kk) {
      uint32_t a[4];
      ldmatrixX4(a, qFrag + kk * 16);
#pragma unroll
      for (int n2 = 0; n2 < kBN / 16; ++n2) {
        // matrices: (keys +0..7, d +0), (keys +0..7, d +8), (keys +8..15, d +0), (keys +8..15, d +8)
        uint32_t bk[4];
        ldmatrixX4(bk, cK + (n2 * 16 + (lane & 7) + (lane >> 4) * 8) * LD + kk * 16 + ((lane >> 3) & 1) * 8);
        Mma<T>::run(s[2 * n2], a, bk[0], bk[1]);
        Mma<T>::run(s[2 * n2 + 1], a, bk[2], bk[3]);
      }
    }

    // Scale (log2 domain), mask, key tail.
    const int key0 = j * kBN + 2 * (lane & 3);
#pragma unroll
    for (int nk = 0; nk < kBN / 8; ++nk) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int row = rowA + (e >> 1) * 8, key = key0 + nk * 8 + (e & 1);
        float x = s[nk][e] * p.scaleLog2;
        if (key >= p.Lk) x = -INFINITY;
        else if (p.mask && row < p.Lq) x += ldFloat(p.mask, mo + row * p.mrs + key * p.mcs, p.maskT) * kLog2e;
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
#pragma unroll
    for (int kk = 0; kk < kBN / 16; ++kk) {
      uint32_t a[4];
      a[0] = Mma<T>::pack(s[2 * kk][0], s[2 * kk][1]);
      a[1] = Mma<T>::pack(s[2 * kk][2], s[2 * kk][3]);
      a[2] = Mma<T>::pack(s[2 * kk + 1][0], s[2 * kk + 1][1]);
      a[3] = Mma<T>::pack(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
      for (int n2 = 0; n2 < DP / 16; ++n2) {
        // matrices: (keys +0..7, dims +0), (keys +8..15, dims +0), (keys +0..7, dims +8), (keys +8..15, dims +8)
        uint32_t bv[4];
        ldmatrixX4T(bv, cV + (kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * LD + n2 * 16 + (lane >> 4) * 8);
        Mma<T>::run(o[2 * n2], a, bv[0], bv[1]);
        Mma<T>::run(o[2 * n2 + 1], a, bv[2], bv[3]);
      }
    }
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
    const int64_t base = (outRow0 + row) * p.Dv;
#pragma unroll
    for (int i = 0; i < DP / 8; ++i) {
      const int col = i * 8 + 2 * (lane & 3);
      if (col < p.Dv) stFloat(p.out, base + col, p.outT, o[i][2 * r] * inv);
      if (col + 1 < p.Dv) stFloat(p.out, base + col + 1, p.outT, o[i][2 * r + 1] * inv);
    }
  }
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
constexpr size_t smemBytes(int dp) { return static_cast<size_t>(kBM + 4 * keysPerTile(dp)) * (dp + 8) * 2; }

template <typename T, int DP>
void launchAttention(const AttnParams& p, int64_t batch) {
  static bool configured = false;  // opt in to > 48 KiB of dynamic shared memory once
  if (!configured) {
    cudaFuncSetAttribute(attentionKernel<T, DP>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smemBytes(DP)));
    configured = true;
  }
  const dim3 grid(static_cast<unsigned>(batch), static_cast<unsigned>((p.Lq + kBM - 1) / kBM));
  attentionKernel<T, DP><<<grid, kThreads, smemBytes(DP), stream()>>>(p);
}
template <typename T>
void dispatchDp(int dp, const AttnParams& p, int64_t batch) {
  switch (dp) {
    case 48: launchAttention<T, 48>(p, batch); break;
    case 64: launchAttention<T, 64>(p, batch); break;
    case 80: launchAttention<T, 80>(p, batch); break;
    case 128: launchAttention<T, 128>(p, batch); break;
    default: launchAttention<T, 160>(p, batch); break;
  }
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
}  // namespace

void attentionForward(const View& q, const View& k, const View& v, const View& mask, const View& out, float scale) {
  const int nd = q.ndim, nb = nd - 2;
  const int64_t Lq = q.shape[nd - 2], D = q.shape[nd - 1], Lk = k.shape[nd - 2], Dv = v.shape[nd - 1];
  int64_t batch = 1;
  for (int d = 0; d < nb; ++d) batch *= q.shape[d];
  if (batch == 0 || Lq == 0 || Dv == 0) return;
  if (Lk == 0) {  // an empty softmax: zeros (all-zero bits are 0.0 in f32, f16 and bf16)
    cudaMemsetAsync(out.data, 0, static_cast<size_t>(batch * Lq * Dv) * dtypeSize(out.dtype), stream());
    checkLaunch("attentionForward");
    return;
  }
  if (D == 0) throw KernelError("QDM_BAD_ARGUMENT", "attentionForward: head dim 0 is not supported");
  if (D > kAttentionMaxHeadDim || Dv > kAttentionMaxHeadDim)
    throw KernelError("QDM_BAD_ARGUMENT", "attentionForward: CUDA head dims up to " + std::to_string(kAttentionMaxHeadDim) + " (got " + std::to_string(D) + ", " + std::to_string(Dv) + ")");
  if (batch > 0x7fffffff || (Lq + kBM - 1) / kBM > 65535 || Lq > 0x7fffffff || Lk > 0x7fffffff)
    throw KernelError("QDM_BAD_ARGUMENT", "attentionForward: batch or sequence too large for the CUDA grid");

  const DType compute = q.dtype == DType::BF16 && k.dtype == DType::BF16 && v.dtype == DType::BF16 ? DType::BF16 : DType::F16;
  const int64_t D8 = (D + 7) / 8 * 8, Dv8 = (Dv + 7) / 8 * 8;
  const int dp = pickDp(D8 > Dv8 ? D8 : Dv8);

  AttnParams p{};
  p.mask = mask.data; p.maskT = mask.dtype; p.out = out.data; p.outT = out.dtype;
  p.nb = nb;
  for (int d = 0; d < nb; ++d) {
    p.bshape[d] = q.shape[d];
    p.mbs[d] = mask.data ? mask.strides[d] : 0;
  }
  p.mrs = mask.data ? mask.strides[nd - 2] : 0;
  p.mcs = mask.data ? mask.strides[nd - 1] : 0;
  p.Lq = static_cast<int>(Lq); p.Lk = static_cast<int>(Lk); p.Dv = static_cast<int>(Dv);
  p.qkChunks = static_cast<int>(D8 / 8); p.vChunks = static_cast<int>(Dv8 / 8);
  p.scaleLog2 = scale * kLog2e;

  void* temps[3] = {nullptr, nullptr, nullptr};
  // Points the kernel at x in place, or at a packed contiguous copy.
  auto prepare = [&](const View& x, int slot, const void*& ptr, int64_t* bs, int64_t& rs) {
    const int64_t L = x.shape[nd - 2], Dx = x.shape[nd - 1], Dx8 = (Dx + 7) / 8 * 8;
    if (readInPlace(x, compute)) {
      ptr = x.data;
      for (int d = 0; d < nb; ++d) bs[d] = x.strides[d];
      rs = x.strides[nd - 2];
      return;
    }
    PackArgs a{};
    a.src = x.data; a.st = x.dtype; a.nb = nb;
    for (int d = 0; d < nb; ++d) { a.bshape[d] = x.shape[d]; a.bstr[d] = x.strides[d]; }
    a.rs = x.strides[nd - 2]; a.cs = x.strides[nd - 1]; a.L = L; a.Dx = Dx; a.Dx8 = Dx8; a.total = batch * L * Dx8;
    temps[slot] = allocDevice(static_cast<size_t>(a.total) * 2);
    const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((a.total + 255) / 256, static_cast<int64_t>(smCount()) * 16 + 1));
    if (compute == DType::BF16) packKernel<__nv_bfloat16><<<blocks, 256, 0, stream()>>>(a, static_cast<__nv_bfloat16*>(temps[slot]));
    else packKernel<__half><<<blocks, 256, 0, stream()>>>(a, static_cast<__half*>(temps[slot]));
    checkLaunch("attentionForward (operand packing)");
    ptr = temps[slot];
    int64_t st = L * Dx8;  // contiguous batch strides of the packed copy
    for (int d = nb - 1; d >= 0; --d) { bs[d] = st; st *= x.shape[d]; }
    rs = Dx8;
  };
  try {
    prepare(q, 0, p.q, p.qbs, p.qrs);
    prepare(k, 1, p.k, p.kbs, p.krs);
    prepare(v, 2, p.v, p.vbs, p.vrs);
    if (compute == DType::BF16) dispatchDp<__nv_bfloat16>(dp, p, batch);
    else dispatchDp<__half>(dp, p, batch);
    checkLaunch("attentionForward");
  } catch (...) {
    for (void* t : temps) if (t) freeDevice(t);
    throw;
  }
  for (void* t : temps) if (t) freeDevice(t);
}

}  // namespace qdm::cuda
