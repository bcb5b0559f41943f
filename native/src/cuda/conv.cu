// CUDA conv2d (NCHW) forward and backward, argument lists of the CPU binding (bind_conv.cpp).
//
// Forward: implicit GEMM on the tensor-core kernel of gemm_core.cuh, per group g (grid.z):
//   Y_g[o, n] = sum_k W_g[o, k] * cols(k, n) (+ bias[o]),  M = out channels per group,
//   N = batch * OH * OW, K = C/groups * KH * KW,
// with cols never materialised: the B loader gathers the im2col tile straight from x into an
// N-major shared tile (each thread owns one 16-byte chunk column, i.e. 16/sizeof(T) fixed output
// pixels whose (image, ih0, iw0) it decodes once; per k-tile it decodes (c, kh, kw) and loads
// with bounds checks, zero for padding). The loads are register-staged: issued before the
// tile's MMAs, stored to shared memory after them. The weight tile is a dense K-major cp.async
// operand (packed to a 16-byte row pitch first when C/groups*KH*KW is not a multiple of 8 / 4).
// The epilogue adds the bias and scatters into NCHW in the output dtype. Mixed input dtypes
// (f16 activations, f32 weight) are widened to f32 first, as on the CPU. Depthwise convolutions
// run through the same kernel (one output channel per group: mostly idle tiles, correct).
//
// Backward (explicit, simpler; a later version can make both implicit):
//   input:  cols[img] (f32 workspace, [R, L]) = W_g^T @ gy_g[img] with the batched GEMM, then a
//           gather-form col2im (each input element sums its kh*kw taps: no atomics,
//           deterministic) writes gx in its dtype. Images go in chunks of <= 256 MiB of columns.
//   weight: gy is transposed to [O, N*L] and x unfolded to cols [R, N*L] (both in the input
//           dtype, bit-exact copies), then gW_g = gyT_g @ cols^T as one GEMM of reduction N*L
//           per group, written in gW's dtype.
#include <algorithm>

#include "gemm_core.cuh"
#include "gemm_internal.cuh"
#include "qdm/cuda_device.h"
#include "qdm/cuda_gemm.h"

namespace qdm::cuda {
namespace {
using namespace gemm;
cudaStream_t stream() { return static_cast<cudaStream_t>(currentStream()); }
int gridFor(int64_t total, int threads) { return static_cast<int>(std::min<int64_t>((total + threads - 1) / threads, 65535LL * 8)); }
#define QDM_GRID_STRIDE(i, total) \
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < (total); i += static_cast<int64_t>(gridDim.x) * blockDim.x)

const void* elemPtr(const View& v, int64_t i) { return static_cast<const char*>(v.data) + i * static_cast<int64_t>(dtypeSize(v.dtype)); }
void* elemPtr(void* p, DType t, int64_t i) { return static_cast<char*>(p) + i * static_cast<int64_t>(dtypeSize(t)); }

struct Geom {
  int N, C, H, W, O, KH, KW, OH, OW, sH, sW, pH, pW, dH, dW, G, Cg, Og;
  __host__ __device__ int R() const { return Cg * KH * KW; }
  __host__ __device__ int L() const { return OH * OW; }
};

// ---- implicit-GEMM forward ---------------------------------------------------------------
template <class T, int BN, int THREADS>
struct ConvGather {
  using Word = std::conditional_t<sizeof(T) == 2, uint16_t, uint32_t>;
  static constexpr int ES = sizeof(T), EPC = 16 / ES, BK = 64 / ES, CPR = BN * ES / 16;
  static constexpr int PER = BK * CPR / THREADS, KSTEP = THREADS / CPR;
  static_assert(THREADS % CPR == 0 && (BK * CPR) % THREADS == 0, "fixed chunk column per thread");
  const Word* x;  // this group's first input channel of image 0
  int K, KHW, KW, H, W, HW, dH, dW;
  int krow0, ch;
  int imgOff[EPC], ih0[EPC], iw0[EPC];  // imgOff < 0: column past N * OH * OW
  uint4 staged[PER];

  __device__ __forceinline__ void issue(unsigned char*, int, int k0) {
#pragma unroll
    for (int i = 0; i < PER; ++i) {
      const int k = k0 + krow0 + i * KSTEP;
      alignas(16) Word v[EPC];
#pragma unroll
      for (int j = 0; j < EPC; ++j) v[j] = 0;
      if (k < K) {
        const int c = k / KHW, rs = k - c * KHW, r = rs / KW, s = rs - r * KW;
        const Word* plane = x + static_cast<int64_t>(c) * HW;
        const int dh = r * dH, dw = s * dW;
#pragma unroll
        for (int j = 0; j < EPC; ++j) {
          const int ih = ih0[j] + dh, iw = iw0[j] + dw;
          if (imgOff[j] >= 0 && static_cast<unsigned>(ih) < static_cast<unsigned>(H) && static_cast<unsigned>(iw) < static_cast<unsigned>(W))
            v[j] = plane[imgOff[j] + ih * W + iw];
        }
      }
      staged[i] = *reinterpret_cast<const uint4*>(v);
    }
  }
  __device__ __forceinline__ void finish(unsigned char* s) const {
    const uint32_t sb = smemAddr(s);
#pragma unroll
    for (int i = 0; i < PER; ++i) {
      const uint32_t a = sb + offMN<BN * ES>(krow0 + i * KSTEP, ch);
      asm volatile("st.shared.v4.u32 [%0], {%1,%2,%3,%4};\n" ::"r"(a), "r"(staged[i].x), "r"(staged[i].y), "r"(staged[i].z), "r"(staged[i].w));
    }
  }
};

template <class T, class Cfg>
struct ConvProblem {
  using Gather = ConvGather<T, Cfg::BN, Cfg::THREADS>;
  int M, N, K;  // Og, batch * OH * OW, Cg * KH * KW
  const T* w; int64_t ldw;
  const T* x;
  Geom d;
  void* y; DType yt;
  const void* bias; DType bt;

  __device__ __forceinline__ DenseLoader<T, Cfg::BM, Cfg::THREADS, true> aLoader(int z, int tid) const {
    return {w + static_cast<int64_t>(z) * M * ldw, ldw, M, K, tid};
  }
  __device__ __forceinline__ Gather bLoader(int z, int n0, int tid) const {
    Gather g;
    g.x = reinterpret_cast<const typename Gather::Word*>(x + static_cast<int64_t>(z) * d.Cg * d.H * d.W);
    g.K = K; g.KHW = d.KH * d.KW; g.KW = d.KW; g.H = d.H; g.W = d.W; g.HW = d.H * d.W; g.dH = d.dH; g.dW = d.dW;
    g.ch = tid % Gather::CPR;
    g.krow0 = tid / Gather::CPR;
    const int L = d.OH * d.OW, CHW = d.C * d.H * d.W;
#pragma unroll
    for (int j = 0; j < Gather::EPC; ++j) {
      const int n = n0 + g.ch * Gather::EPC + j;
      if (n < N) {
        const int img = n / L, pix = n - img * L, oh = pix / d.OW, ow = pix - oh * d.OW;
        g.imgOff[j] = img * CHW;
        g.ih0[j] = oh * d.sH - d.pH;
        g.iw0[j] = ow * d.sW - d.pW;
      } else {
        g.imgOff[j] = -1; g.ih0[j] = 0; g.iw0[j] = 0;
      }
    }
    return g;
  }
  __device__ __forceinline__ void store2(int z, int m, int n, float v0, float v1) const {
    if (m >= M) return;
    const int o = z * M + m, L = d.OH * d.OW;
    const float b = bias ? loadAsFloat(bias, bt, o) : 0.0f;
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const int nn = n + e;
      if (nn >= N) break;
      const int img = nn / L, pix = nn - img * L;
      storeFromFloat(y, yt, (static_cast<int64_t>(img) * d.O + o) * L + pix, (e ? v1 : v0) + b);
    }
  }
};

template <class W>
__global__ void packRows(const W* src, int64_t K, W* dst, int64_t ld, int64_t total) {
  QDM_GRID_STRIDE(i, total) dst[(i / K) * ld + i % K] = src[i];
}

template <class T, class Cfg>
void launchConv(const Geom& d, const T* w, int64_t ldw, const T* x, const View& bias, const View& y) {
  using P = ConvProblem<T, Cfg>;
  auto kern = tensorCoreGemm<T, Cfg, true, false, P>;
  static bool smemSet = false;
  if (!smemSet) { allowSmem(kern, Cfg::SMEM_BYTES); smemSet = true; }
  P p;
  p.M = d.Og; p.N = d.N * d.L(); p.K = d.R();
  p.w = w; p.ldw = ldw; p.x = x; p.d = d;
  p.y = y.data; p.yt = y.dtype; p.bias = bias.data; p.bt = bias.dtype;
  const dim3 grid(static_cast<unsigned>((p.N + Cfg::BN - 1) / Cfg::BN), static_cast<unsigned>((p.M + Cfg::BM - 1) / Cfg::BM), static_cast<unsigned>(d.G));
  kern<<<grid, Cfg::THREADS, Cfg::SMEM_BYTES, stream()>>>(p);
  checkLaunch("conv2dForward");
}

template <class T>
void forwardTyped(const Geom& d, const View& x, const View& w, const View& bias, const View& y) {
  constexpr int EPC = 16 / sizeof(T);
  const int64_t K = d.R();
  const T* wp = static_cast<const T*>(w.data);
  int64_t ldw = K;
  void* work = nullptr;
  if (K % EPC != 0 || (reinterpret_cast<uintptr_t>(w.data) & 15) != 0) {
    ldw = (K + EPC - 1) / EPC * EPC;
    work = allocDevice(static_cast<size_t>(d.O * ldw * sizeof(T)));
    const int64_t total = static_cast<int64_t>(d.O) * K;
    using Wd = std::conditional_t<sizeof(T) == 2, uint16_t, uint32_t>;
    packRows<Wd><<<gridFor(total, 256), 256, 0, stream()>>>(static_cast<const Wd*>(w.data), K, static_cast<Wd*>(work), ldw, total);
    checkLaunch("conv2dForward (pack weight)");
    wp = static_cast<const T*>(work);
  }
  const int64_t bigTiles = ((d.Og + 127) / 128) * ((static_cast<int64_t>(d.N) * d.L() + 127) / 128) * d.G;
  if (d.Og <= 64 || bigTiles < smCount()) launchConv<T, SmallTile>(d, wp, ldw, static_cast<const T*>(x.data), bias, y);
  else launchConv<T, BigTile>(d, wp, ldw, static_cast<const T*>(x.data), bias, y);
  if (work) freeDevice(work);
}

// ---- explicit backward helpers -----------------------------------------------------------
// gx[img][g*Cg + c][ih][iw] = sum of the column entries its taps produced (images n0.., group g).
__global__ void col2im(const float* cols, Geom d, int g, int n0, int nb, void* gx, DType gt) {
  const int64_t total = static_cast<int64_t>(nb) * d.Cg * d.H * d.W;
  const int R = d.R(), L = d.L();
  QDM_GRID_STRIDE(i, total) {
    const int iw = static_cast<int>(i % d.W), ih = static_cast<int>((i / d.W) % d.H);
    const int c = static_cast<int>((i / (static_cast<int64_t>(d.W) * d.H)) % d.Cg);
    const int img = static_cast<int>(i / (static_cast<int64_t>(d.W) * d.H * d.Cg));
    const float* col = cols + static_cast<int64_t>(img) * R * L;
    float acc = 0.0f;
    for (int kh = 0; kh < d.KH; ++kh) {
      const int th = ih + d.pH - kh * d.dH;
      if (th < 0 || th % d.sH) continue;
      const int oh = th / d.sH;
      if (oh >= d.OH) continue;
      for (int kw = 0; kw < d.KW; ++kw) {
        const int tw = iw + d.pW - kw * d.dW;
        if (tw < 0 || tw % d.sW) continue;
        const int ow = tw / d.sW;
        if (ow >= d.OW) continue;
        acc += col[static_cast<int64_t>((c * d.KH + kh) * d.KW + kw) * L + oh * d.OW + ow];
      }
    }
    storeFromFloat(gx, gt, ((static_cast<int64_t>(n0) + img) * d.C + g * d.Cg + c) * d.H * d.W + static_cast<int64_t>(ih) * d.W + iw, acc);
  }
}

// cols[r][img * L + l] = x[img][g*Cg + c][ih][iw] (0 in the padding), r = (c, kh, kw), l = (oh, ow).
template <class W>
__global__ void im2colRows(const W* x, Geom d, int g, W* cols) {
  const int L = d.L();
  const int64_t NL = static_cast<int64_t>(d.N) * L, total = static_cast<int64_t>(d.R()) * NL;
  QDM_GRID_STRIDE(i, total) {
    const int64_t q = i % NL;
    const int r = static_cast<int>(i / NL), img = static_cast<int>(q / L), l = static_cast<int>(q % L);
    const int kw = r % d.KW, kh = (r / d.KW) % d.KH, c = r / (d.KW * d.KH);
    const int oh = l / d.OW, ow = l % d.OW;
    const int ih = oh * d.sH - d.pH + kh * d.dH, iw = ow * d.sW - d.pW + kw * d.dW;
    W v = 0;
    if (ih >= 0 && ih < d.H && iw >= 0 && iw < d.W) v = x[((static_cast<int64_t>(img) * d.C + g * d.Cg + c) * d.H + ih) * d.W + iw];
    cols[i] = v;
  }
}

// gyT[o][img * L + l] = gy[img][o][l]
template <class W>
__global__ void transposeGy(const W* gy, int N, int O, int L, W* gyT) {
  const int64_t NL = static_cast<int64_t>(N) * L, total = static_cast<int64_t>(O) * NL;
  QDM_GRID_STRIDE(i, total) {
    const int64_t o = i / NL, q = i % NL, img = q / L, l = q % L;
    gyT[i] = gy[(img * O + o) * L + l];
  }
}

Geom geomOf(const View& x, const View& w, const View& y, const ConvParams& p) {
  Geom d;
  d.N = static_cast<int>(x.shape[0]); d.C = static_cast<int>(x.shape[1]); d.H = static_cast<int>(x.shape[2]); d.W = static_cast<int>(x.shape[3]);
  d.O = static_cast<int>(w.shape[0]); d.KH = static_cast<int>(w.shape[2]); d.KW = static_cast<int>(w.shape[3]);
  d.OH = static_cast<int>(y.shape[2]); d.OW = static_cast<int>(y.shape[3]);
  d.sH = static_cast<int>(p.strideH); d.sW = static_cast<int>(p.strideW); d.pH = static_cast<int>(p.padH); d.pW = static_cast<int>(p.padW);
  d.dH = static_cast<int>(p.dilH); d.dW = static_cast<int>(p.dilW); d.G = static_cast<int>(p.groups);
  d.Cg = d.C / d.G; d.Og = d.O / d.G;
  return d;
}
// Operands of different dtypes (e.g. f16 activations with an f32 weight) are computed in f32,
// as the CPU does: the narrower one is widened into a workspace (freed after the enqueues).
__global__ void widenKernel(const void* src, DType t, float* dst, int64_t n) {
  QDM_GRID_STRIDE(i, n) dst[i] = loadAsFloat(src, t, i);
}
struct Widened {
  View a, b;
  void* wa = nullptr;
  void* wb = nullptr;
  Widened(const View& x, const View& y) : a(x), b(y) {
    if (x.dtype == y.dtype) return;
    if (x.dtype != DType::F32) a = widen(x, wa);
    if (y.dtype != DType::F32) b = widen(y, wb);
  }
  ~Widened() {
    if (wa) freeDevice(wa);
    if (wb) freeDevice(wb);
  }
  Widened(const Widened&) = delete;
  Widened& operator=(const Widened&) = delete;
  static View widen(const View& v, void*& work) {
    const int64_t n = v.numel();
    work = allocDevice(static_cast<size_t>(std::max<int64_t>(n, 1)) * sizeof(float));
    widenKernel<<<gridFor(n, 256), 256, 0, stream()>>>(v.data, v.dtype, static_cast<float*>(work), n);
    checkLaunch("conv2d (widen mixed dtypes to f32)");
    View out = v;  // contiguous: same shape and strides
    out.data = work;
    out.dtype = DType::F32;
    return out;
  }
};
}  // namespace

void conv2dForward(const View& x, const View& w, const View& bias, const View& y, const ConvParams& p) {
  const Geom d = geomOf(x, w, y, p);
  if (y.numel() == 0) return;
  if (x.numel() == 0 || d.R() == 0) throw KernelError("QDM_BAD_ARGUMENT", "conv2dForward: empty input or kernel");
  const Widened in(x, w);
  if (in.a.dtype == DType::F16) forwardTyped<__half>(d, in.a, in.b, bias, y);
  else if (in.a.dtype == DType::BF16) forwardTyped<__nv_bfloat16>(d, in.a, in.b, bias, y);
  else forwardTyped<float>(d, in.a, in.b, bias, y);
}

void conv2dBackwardInput(const View& gyIn, const View& wIn, const View& gx, const ConvParams& p) {
  const Geom d = geomOf(gx, wIn, gyIn, p);
  if (gx.numel() == 0) return;
  const Widened in(gyIn, wIn);
  const View& gy = in.a;
  const View& w = in.b;
  const int64_t R = d.R(), L = d.L();
  const int64_t perImage = R * L * static_cast<int64_t>(sizeof(float));
  const int64_t chunk = std::max<int64_t>(1, std::min<int64_t>(d.N, (256LL << 20) / std::max<int64_t>(perImage, 1)));
  float* cols = static_cast<float*>(allocDevice(static_cast<size_t>(chunk * perImage)));
  for (int g = 0; g < d.G; ++g)
    for (int n0 = 0; n0 < d.N; n0 += static_cast<int>(chunk)) {
      const int nb = static_cast<int>(std::min<int64_t>(chunk, d.N - n0));
      GemmDesc gd;
      gd.batch = nb; gd.M = R; gd.N = L; gd.K = d.Og;
      gd.a = elemPtr(w, static_cast<int64_t>(g) * d.Og * R); gd.at = w.dtype; gd.bsa = 0; gd.rsa = 1; gd.csa = R;
      gd.b = elemPtr(gy, (static_cast<int64_t>(n0) * d.O + static_cast<int64_t>(g) * d.Og) * L); gd.bt = gy.dtype;
      gd.bsb = static_cast<int64_t>(d.O) * L; gd.rsb = L; gd.csb = 1;
      gd.c = cols; gd.ct = DType::F32; gd.bsc = R * L; gd.rsc = L; gd.csc = 1;
      runGemm(gd);
      const int64_t total = static_cast<int64_t>(nb) * d.Cg * d.H * d.W;
      col2im<<<gridFor(total, 256), 256, 0, stream()>>>(cols, d, g, n0, nb, gx.data, gx.dtype);
      checkLaunch("conv2dBackwardInput (col2im)");
    }
  freeDevice(cols);
}

void conv2dBackwardWeight(const View& xIn, const View& gyIn, const View& gw, const ConvParams& p) {
  const Geom d = geomOf(xIn, gw, gyIn, p);
  if (gw.numel() == 0) return;
  const Widened in(xIn, gyIn);
  const View& x = in.a;
  const View& gy = in.b;
  const int64_t R = d.R(), L = d.L(), NL = static_cast<int64_t>(d.N) * L;
  const int64_t es = static_cast<int64_t>(dtypeSize(x.dtype));
  void* gyT = allocDevice(static_cast<size_t>(d.O * NL * es));
  void* cols = allocDevice(static_cast<size_t>(std::max<int64_t>(R * NL, 1) * es));
  const int64_t tTotal = d.O * NL, cTotal = R * NL;
  if (es == 2) transposeGy<uint16_t><<<gridFor(tTotal, 256), 256, 0, stream()>>>(static_cast<const uint16_t*>(gy.data), d.N, d.O, d.L(), static_cast<uint16_t*>(gyT));
  else transposeGy<uint32_t><<<gridFor(tTotal, 256), 256, 0, stream()>>>(static_cast<const uint32_t*>(gy.data), d.N, d.O, d.L(), static_cast<uint32_t*>(gyT));
  checkLaunch("conv2dBackwardWeight (transpose)");
  for (int g = 0; g < d.G; ++g) {
    if (es == 2) im2colRows<uint16_t><<<gridFor(cTotal, 256), 256, 0, stream()>>>(static_cast<const uint16_t*>(x.data), d, g, static_cast<uint16_t*>(cols));
    else im2colRows<uint32_t><<<gridFor(cTotal, 256), 256, 0, stream()>>>(static_cast<const uint32_t*>(x.data), d, g, static_cast<uint32_t*>(cols));
    checkLaunch("conv2dBackwardWeight (im2col)");
    GemmDesc gd;
    gd.batch = 1; gd.M = d.Og; gd.N = R; gd.K = NL;
    gd.a = elemPtr(gyT, x.dtype, static_cast<int64_t>(g) * d.Og * NL); gd.at = x.dtype; gd.rsa = NL; gd.csa = 1;
    gd.b = cols; gd.bt = x.dtype; gd.rsb = 1; gd.csb = NL;
    gd.c = elemPtr(gw.data, gw.dtype, static_cast<int64_t>(g) * d.Og * R); gd.ct = gw.dtype; gd.rsc = R; gd.csc = 1;
    runGemm(gd);
  }
  freeDevice(gyT);
  freeDevice(cols);
}

}  // namespace qdm::cuda
