// Low-bit GEMM driver (see qdm/qgemm.h for the math and the packed layouts), the portable scalar
// micro-kernels, activation quantization and the quantized conv2d.
//
// Loop structure: the activations are packed per call into micro-panels of mr rows (k in groups
// of 4, row sums on the side); tiles of (MC activation rows) x (8 weight panels) are spread over
// the pool. Inside a tile each 16-row weight panel stays in L1/L2 while the mr-row activation
// micro-panels of the block stream past it. K is never split, so each output element comes from
// one micro-kernel call (integer sums are exact anyway: results never depend on the thread count).
// The micro-kernel returns raw int32 sums; the epilogue (here, portable) removes the packing biases
// and zero-point terms in int32 (wrap-around arithmetic, exact whenever the true sum fits, which
// K <= 32768 guarantees), then scales to f32 and adds the bias.
#include "qdm/qgemm.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "qdm/cpu.h"
#include "qdm/gemm.h"
#include "qdm/parallel.h"

namespace qdm::cpu::qgemm {
using detail::KernelDesc;
using detail::MicroKernel;
namespace {

constexpr int64_t kMaxK = 32768;
constexpr int SMR = 4;

// ---- scalar micro-kernels (same packed layouts, plain integer loops) ----
void scalarW8(int64_t kg, const int8_t* a, const uint8_t* w, int32_t* acc) {
  int32_t t[SMR][kQPanel] = {};
  for (int64_t g = 0; g < kg; ++g, a += SMR * 4, w += 64) {
    const int8_t* ws = reinterpret_cast<const int8_t*>(w);
    for (int i = 0; i < SMR; ++i)
      for (int j = 0; j < kQPanel; ++j)
        for (int kk = 0; kk < 4; ++kk) t[i][j] += int32_t(a[i * 4 + kk]) * int32_t(ws[j * 4 + kk]);
  }
  std::memcpy(acc, t, sizeof t);
}
void scalarW4(int64_t kg, const int8_t* a, const uint8_t* w, int32_t* acc) {
  int32_t t[SMR][kQPanel] = {};
  for (int64_t g = 0; g < kg; ++g, a += SMR * 4, w += 32) {
    for (int b = 0; b < 32; ++b) {
      const int r = b / 4, kk = b % 4;
      const int32_t lo = w[b] & 15, hi = w[b] >> 4;
      for (int i = 0; i < SMR; ++i) {
        t[i][r] += int32_t(a[i * 4 + kk]) * lo;
        t[i][r + 8] += int32_t(a[i * 4 + kk]) * hi;
      }
    }
  }
  std::memcpy(acc, t, sizeof t);
}
KernelDesc scalarKernel() { return {"scalar", SMR, 0, false, scalarW8, scalarW4, detail::quantRowScalar, detail::absMaxScalar, nullptr, nullptr}; }

const KernelDesc* bestKernel() {
  static const KernelDesc avx512 = detail::avx512VnniKernel(), avx2 = detail::avx2Kernel(), scalar = scalarKernel();
  if (hasAvx512Vnni()) return &avx512;
  if (hasAvx2()) return &avx2;
  return &scalar;
}
std::atomic<const KernelDesc*> forced{nullptr};
const KernelDesc& active() {
  const KernelDesc* f = forced.load();
  return f ? *f : *bestKernel();
}

inline int64_t groupsOf(int64_t k) { return (k + 3) / 4; }
inline int64_t panelBytes(int64_t k, int bits) { return groupsOf(k) * (bits == 8 ? 64 : 32); }

int32_t codeAt(const View& codes, int64_t e) {
  if (codes.dtype == DType::I4) {
    const uint8_t byte = static_cast<const uint8_t*>(codes.data)[e / 2];
    const int nib = (e % 2 == 0) ? (byte & 15) : (byte >> 4);
    return nib >= 8 ? nib - 16 : nib;
  }
  return static_cast<const int8_t*>(codes.data)[e];
}

// Portable packer (scalar and VNNI kernels): per group of 4 k, the mr rows' 4 codes side by side.
void packRowsPlain(const int8_t* const* rows, int mr, int64_t kg, int8_t* dst) {
  for (int64_t g = 0; g < kg; ++g)
    for (int i = 0; i < mr; ++i) std::memcpy(dst + (g * mr + i) * 4, rows[i] + g * 4, 4);
}

// Packs activation micro-panels [p0, p1) (mr rows each, groups of 4 k; W8 with w8Abs: each group
// followed by the absolute values, written by the kernel's packAbs); rowSum[t] = sum_k qa[t, k].
// rowSum is only written when wanted (W4's nibble bias and weight zero points need it).
void packActivations(const Activations& a, int64_t K, const KernelDesc& kd, bool abs, int8_t* dst, int32_t* rowSum, int64_t p0, int64_t p1) {
  const int mr = kd.mr;
  const int64_t kg = groupsOf(K), panel = kg * 4 * mr * (abs ? 2 : 1);
  thread_local std::vector<int8_t> scratch, pad;
  if (a.rowFn) scratch.resize(static_cast<size_t>(K * mr));
  pad.resize(static_cast<size_t>(kg * 4 * (mr + 1)));
  // Plain pointers: in the shared addon every thread_local access goes through __tls_get_addr.
  int8_t* const scr = scratch.data();
  int8_t* const padded = pad.data();
  int8_t* const zeroRow = padded + kg * 4 * mr;  // rows past T
  std::memset(zeroRow, 0, static_cast<size_t>(kg * 4));
  const int8_t* rows[16];
  for (int64_t p = p0; p < p1; ++p) {
    for (int i = 0; i < mr; ++i) {
      const int64_t t = p * mr + i;
      if (t >= a.rows) { rows[i] = zeroRow; continue; }
      const int8_t* s = a.rowFn ? (*a.rowFn)(t, scr + i * K) : a.codes + t * a.ld;
      if (K % 4 != 0) {  // zero-pad the last group
        int8_t* d = padded + i * kg * 4;
        std::memcpy(d, s, static_cast<size_t>(K));
        std::memset(d + K, 0, static_cast<size_t>(kg * 4 - K));
        s = d;
      }
      if (rowSum) {
        int32_t sum = 0;  // a plain loop over the row (vectorized by the compiler)
        for (int64_t k = 0; k < K; ++k) sum += s[k];
        rowSum[t] = sum;
      }
      rows[i] = s;
    }
    if (abs) kd.packAbs(rows, kg, dst + p * panel);
    else packRowsPlain(rows, mr, kg, dst + p * panel);
  }
}

// Portable epilogue of one tile: acc [mr][16] raw sums -> out for the m x n valid part. gemm sends
// full panels to the kernel's vector epilogue instead when the correction separates (see there).
struct PanelTerms { int32_t rsW[kQPanel], zw[kQPanel], Kzw[kQPanel]; float sw[kQPanel], bias[kQPanel]; bool anyZw; int64_t o0, n; };

void epilogue(const int32_t* acc, int m, int n, int64_t t0, const Activations& a, const int32_t* rowSumA,
              const PanelTerms& pt, int bits, int w8ActBias, float* out, int64_t rsT, int64_t rsO) {
  float y[kQPanel];
  for (int i = 0; i < m; ++i) {
    const int64_t t = t0 + i;
    const float sa = a.scale[t * a.scaleStride];
    const uint32_t za = static_cast<uint32_t>(static_cast<int32_t>(a.zero[t * a.scaleStride]));
    const uint32_t rsA = (bits == 4 || pt.anyZw) ? static_cast<uint32_t>(rowSumA[t]) : 0u;  // only computed when used
    const uint32_t biasA = za + static_cast<uint32_t>(bits == 8 ? w8ActBias : 0);
    const uint32_t bias4 = bits == 4 ? 8u : 0u;
    const int32_t* r = acc + i * kQPanel;
    // sum (qa - za)(qw - zw) = raw - (packing bias + za) rsW - (nibble bias + zw) rsA + K za zw
    if (biasA == 0 && !pt.anyZw) {  // the common case: a per-row constant (0 for symmetric W8)
      const int32_t rowConst = static_cast<int32_t>(bias4 * rsA);
      for (int j = 0; j < kQPanel; ++j) y[j] = static_cast<float>(r[j] - rowConst) * (sa * pt.sw[j]) + pt.bias[j];
    } else {
      for (int j = 0; j < kQPanel; ++j) {
        const uint32_t v = static_cast<uint32_t>(r[j]) - biasA * static_cast<uint32_t>(pt.rsW[j]) -
                           (bias4 + static_cast<uint32_t>(pt.zw[j])) * rsA + za * static_cast<uint32_t>(pt.Kzw[j]);
        y[j] = static_cast<float>(static_cast<int32_t>(v)) * (sa * pt.sw[j]) + pt.bias[j];
      }
    }
    if (a.lowRank > 0) {  // the low-rank branch, added to the tile (no second pass over the output)
      const float* xa = a.lowRankXa + t * a.lowRank;
      for (int64_t q = 0; q < a.lowRank; ++q) {
        const float xv = xa[q];
        const float* b = a.lowRankB + q * pt.n + pt.o0;
        for (int j = 0; j < n; ++j) y[j] += xv * b[j];
      }
    }
    float* o = out + t * rsT;
    if (rsO == 1 && n == kQPanel) std::memcpy(o, y, sizeof y);  // fixed size: inlined vector stores
    else if (rsO == 1) for (int j = 0; j < n; ++j) o[j] = y[j];
    else for (int j = 0; j < n; ++j) o[j * rsO] = y[j];
  }
}

void panelTerms(const Weights& w, int64_t p, PanelTerms& pt) {
  pt.anyZw = false;
  pt.o0 = p * kQPanel;
  pt.n = w.n;
  for (int j = 0; j < kQPanel; ++j) {
    const int64_t o = p * kQPanel + j;
    const bool in = o < w.n;
    pt.rsW[j] = in ? w.rowSums[o] : 0;
    pt.zw[j] = in && w.zero ? static_cast<int32_t>(w.zero[o]) : 0;
    pt.anyZw = pt.anyZw || pt.zw[j] != 0;
    pt.Kzw[j] = static_cast<int32_t>(static_cast<uint32_t>(w.k) * static_cast<uint32_t>(pt.zw[j]));
    pt.sw[j] = in ? w.scale[o] : 0.0f;
    pt.bias[j] = in && w.bias ? w.bias[o] : 0.0f;
  }
}

}  // namespace

namespace detail {
void quantRowScalar(const float* x, int64_t K, float s, const float* col, float z, float qmin, float qmax, float shift, int8_t* out) {
  for (int64_t k = 0; k < K; ++k) {
    const float sk = col ? s * col[k] : s;
    out[k] = static_cast<int8_t>(std::min(std::max(std::nearbyint(x[k] / sk) + z, qmin), qmax) - shift);
  }
}
float absMaxScalar(const float* x, const float* col, int64_t K) {
  float m = 0.0f;
  for (int64_t k = 0; k < K; ++k) m = std::max(m, std::fabs(col ? x[k] / col[k] : x[k]));
  return m;
}
}  // namespace detail

int64_t packedBytes(int64_t n, int64_t k, int bits) { return (n + kQPanel - 1) / kQPanel * panelBytes(k, bits); }

void packWeights(const View& codes, int bits, uint8_t* packed, int32_t* rowSums) {
  if (bits != 8 && bits != 4) throw KernelError("QDM_BAD_ARGUMENT", "qgemmPackWeights: bits must be 8 or 4, got " + std::to_string(bits));
  if ((codes.ndim != 2 && codes.ndim != 4) || !codes.contiguous())
    throw KernelError("QDM_BAD_ARGUMENT", "qgemmPackWeights: codes must be a contiguous 2-d [n, k] or 4-d [O, C, kh, kw] view");
  const DType need = bits == 8 ? DType::I8 : DType::I4;
  if (codes.dtype != need) throw KernelError("QDM_DTYPE", std::string("qgemmPackWeights: ") + std::to_string(bits) + "-bit weights need " + dtypeName(need) + " codes, got " + dtypeName(codes.dtype));
  // 4-d conv weights: the reduction is reordered from (c, kh, kw) to (kh, kw, c), the order of
  // the channels-last im2row rows of conv2d below.
  const bool conv = codes.ndim == 4;
  const int64_t C = conv ? codes.shape[1] : 1, KH = conv ? codes.shape[2] : 1, KW = conv ? codes.shape[3] : 1;
  const int64_t n = codes.shape[0], k = conv ? C * KH * KW : codes.shape[1], kg = groupsOf(k), pb = panelBytes(k, bits);
  auto srcK = [&](int64_t kk) { return conv ? ((kk % C) * KH + (kk / C) / KW) * KW + (kk / C) % KW : kk; };
  const int64_t panels = (n + kQPanel - 1) / kQPanel;
  parallelFor(panels, 1, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      uint8_t* d = packed + p * pb;
      for (int j = 0; j < kQPanel; ++j) {
        const int64_t o = p * kQPanel + j;
        int32_t sum = 0;
        for (int64_t kk = 0; kk < kg * 4; ++kk) {
          int32_t q = 0;
          if (o < n && kk < k) q = std::max(codeAt(codes, o * k + srcK(kk)), bits == 8 ? -127 : -8);
          sum += q;
          const int64_t g = kk / 4, b = kk % 4;
          if (bits == 8) {
            d[g * 64 + j * 4 + b] = static_cast<uint8_t>(static_cast<int8_t>(q));
          } else {
            uint8_t& byte = d[g * 32 + (j % 8) * 4 + b];
            const uint8_t nib = static_cast<uint8_t>(q + 8);
            byte = j < 8 ? static_cast<uint8_t>((byte & 0xF0) | nib) : static_cast<uint8_t>((byte & 0x0F) | (nib << 4));
          }
        }
        if (o < n) rowSums[o] = sum;
      }
    }
  });
}

void gemm(const Activations& a, const Weights& w, float* out, int64_t rsT, int64_t rsO, bool threaded) {
  const int64_t T = a.rows, N = w.n, K = w.k;
  if (T <= 0 || N <= 0) return;
  if (K > kMaxK) throw KernelError("QDM_UNSUPPORTED", "qgemm: K = " + std::to_string(K) + " is over the supported " + std::to_string(kMaxK));
  const KernelDesc& kd = active();
  const int mr = kd.mr;
  const int64_t kg = groupsOf(K), pb = panelBytes(K, w.bits);
  const bool withAbs = kd.w8Abs && w.bits == 8;
  const int64_t aPanelBytes = kg * 4 * mr * (withAbs ? 2 : 1);
  const int64_t aPanels = (T + mr - 1) / mr, wPanels = (N + kQPanel - 1) / kQPanel;
  const bool par = threaded && numThreads() > 1 && T * N * K >= 64 * 64 * 64;

  thread_local std::vector<int8_t> apack;
  thread_local std::vector<int32_t> rowSumA;
  apack.resize(static_cast<size_t>(aPanels * aPanelBytes));
  rowSumA.resize(static_cast<size_t>(T));
  int8_t* ap = apack.data();
  int32_t* rsa = rowSumA.data();
  // Symmetric W8 without weight zero points never reads the activation row sums.
  int32_t* const rsWanted = (w.bits == 4 || w.zero) ? rsa : nullptr;
  if (par) parallelFor(aPanels, 16, [&](int64_t p0, int64_t p1) { packActivations(a, K, kd, withAbs, ap, rsWanted, p0, p1); });
  else packActivations(a, K, kd, withAbs, ap, rsWanted, 0, aPanels);

  // The epilogue terms, once per call rather than per tile (a tile is only 4 x 16 outputs: at
  // K = 320 the per-tile scalar set-up was about 3 % of the layer). Without weight zero points the
  // integer correction is (za + packing bias) rsW[j] + nibble bias rsA[t]; when every row shares za
  // (per-tensor or dynamic activation quantizers: every caller but explicit per-row zero points)
  // that is one constant per column plus one per row, and full panels take the vector epilogue.
  thread_local std::vector<PanelTerms> terms;
  thread_local std::vector<int32_t> colCorrAll, rowConstAll;
  terms.resize(static_cast<size_t>(wPanels));
  for (int64_t p = 0; p < wPanels; ++p) panelTerms(w, p, terms[static_cast<size_t>(p)]);
  const float za0 = a.zero[0];
  bool callFast = kd.epilogue && rsO == 1 && a.lowRank == 0 && mr <= 16 && (a.scaleStride == 0 || a.scaleStride == 1);
  for (int64_t t = 1; callFast && a.scaleStride == 1 && t < T; ++t) callFast = a.zero[t] == za0;
  const PanelTerms* const pts = terms.data();
  int32_t* colCorr = nullptr;
  int32_t* rowConst = nullptr;
  float saShared[16];
  if (callFast) {
    colCorrAll.resize(static_cast<size_t>(wPanels * kQPanel));
    colCorr = colCorrAll.data();
    const uint32_t biasA = static_cast<uint32_t>(static_cast<int32_t>(za0)) + static_cast<uint32_t>(w.bits == 8 ? kd.w8ActBias : 0);
    for (int64_t p = 0; p < wPanels; ++p)
      for (int j = 0; j < kQPanel; ++j) colCorr[p * kQPanel + j] = static_cast<int32_t>(biasA * static_cast<uint32_t>(pts[p].rsW[j]));
    rowConstAll.assign(static_cast<size_t>(w.bits == 4 ? T : 16), 0);
    rowConst = rowConstAll.data();
    if (w.bits == 4) for (int64_t t = 0; t < T; ++t) rowConst[t] = static_cast<int32_t>(8u * static_cast<uint32_t>(rsa[t]));
    for (float& s : saShared) s = a.scale[0];
  }

  const MicroKernel uk = w.bits == 8 ? kd.w8 : kd.w4;
  const int64_t MC = static_cast<int64_t>(mr) * 16, PG = 8;  // 64 rows x 8 panels (swept on the EPYC: flat within noise)
  const int64_t rowBlocks = (T + MC - 1) / MC, colGroups = (wPanels + PG - 1) / PG;
  auto task = [&](int64_t tIdx) {
    const int64_t ib = tIdx / colGroups, gi = tIdx % colGroups;
    const int64_t r0 = ib * MC, r1 = std::min(T, r0 + MC);
    alignas(64) int32_t acc[16 * kQPanel];
    for (int64_t p = gi * PG; p < std::min(wPanels, (gi + 1) * PG); ++p) {
      const PanelTerms& pt = pts[p];
      const uint8_t* wp = w.packed + p * pb;
      const int n = static_cast<int>(std::min<int64_t>(kQPanel, N - p * kQPanel));
      const bool fast = callFast && n == kQPanel && !pt.anyZw;
      for (int64_t t0 = r0; t0 < r1; t0 += mr) {
        // Start the output rows' cache-line fetches (for writing) now, under the micro-kernel: the
        // epilogue's stores would otherwise miss and hold up the store queue (about 1.5 % at K = 320).
        if (rsO == 1) for (int i = 0; i < mr && t0 + i < T; ++i) __builtin_prefetch(out + (t0 + i) * rsT + p * kQPanel, 1);
        uk(kg, ap + (t0 / mr) * aPanelBytes, wp, acc);
        const int m = static_cast<int>(std::min<int64_t>(mr, T - t0));
        if (fast)
          kd.epilogue(acc, m, a.scaleStride != 0 ? a.scale + t0 : saShared, w.bits == 4 ? rowConst + t0 : rowConst,
                      colCorr + p * kQPanel, pt.sw, pt.bias, out + t0 * rsT + p * kQPanel, rsT);
        else
          epilogue(acc, m, n, t0, a, rsa, pt, w.bits, kd.w8ActBias, out + p * kQPanel * rsO, rsT, rsO);
      }
    }
  };
  if (par) parallelTasks(rowBlocks * colGroups, task);
  else for (int64_t t = 0; t < rowBlocks * colGroups; ++t) task(t);
}

namespace {
// The checks and the per-row arithmetic shared by quantizeActivations and linearQuantizing.
struct RowQuantizer {
  const KernelDesc& kd;
  bool dynamic;
  float scale, zero, qmin, qmax, shift;
  const float* col;
  void operator()(const float* xr, int64_t K, int8_t* codes, float* scaleOut, float* zeroOut) const {
    if (dynamic) {
      float r = kd.absMax(xr, col, K) / qmax;
      if (!(r > 0.0f) || !std::isfinite(r)) r = 1.0f;
      kd.quantRow(xr, K, r, col, 0.0f, -qmax, qmax, 0.0f, codes);
      *scaleOut = r;
      *zeroOut = 0.0f;
    } else {
      kd.quantRow(xr, K, scale, col, zero, qmin, qmax, shift, codes);
      *scaleOut = scale;
      *zeroOut = zero - shift;
    }
  }
};
RowQuantizer rowQuantizer(const char* op, bool dynamic, float scale, float zero, float qmin, float qmax, const float* col) {
  const std::string name(op);
  if (!dynamic && !(scale > 0.0f)) throw KernelError("QDM_BAD_ARGUMENT", name + ": the scale must be positive");
  if (dynamic && !(qmax >= 1.0f && qmax <= 127.0f)) throw KernelError("QDM_BAD_ARGUMENT", name + ": dynamic qmax must lie in [1, 127]");
  const float shift = (!dynamic && qmax > 127.0f) ? 128.0f : 0.0f;
  if (!dynamic && (qmin - shift < -128.0f || qmax - shift > 127.0f))
    throw KernelError("QDM_BAD_ARGUMENT", name + ": the range [" + std::to_string(qmin) + ", " + std::to_string(qmax) + "] does not fit 8 bits");
  return {active(), dynamic, scale, zero, qmin, qmax, shift, col};
}
}  // namespace

void quantizeActivations(const float* x, int64_t T, int64_t K, bool dynamic, float scale, float zero, float qmin,
                         float qmax, const float* col, int8_t* codes, float* scaleOut, float* zeroOut) {
  const RowQuantizer q = rowQuantizer("quantizeActivations", dynamic, scale, zero, qmin, qmax, col);
  parallelFor(T, std::max<int64_t>(1, 16384 / std::max<int64_t>(K, 1)), [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) q(x + t * K, K, codes + t * K, scaleOut + t, zeroOut + t);
  });
}

void linearQuantizing(const float* x, int64_t T, int64_t K, bool dynamic, float scale, float zero, float qmin, float qmax,
                      const float* col, const Weights& w, float* out, float* scaleOut, float* zeroOut, const float* lowRankXa,
                      const float* lowRankB, int64_t lowRank) {
  if (K != w.k) throw KernelError("QDM_SHAPE_MISMATCH", "qgemmLinearQuantizing: x has " + std::to_string(K) + " features, the weights take " + std::to_string(w.k));
  const RowQuantizer q = rowQuantizer("qgemmLinearQuantizing", dynamic, scale, zero, qmin, qmax, col);
  // Each row is quantized when the GEMM packs it, straight into the packer's scratch: no code
  // matrix is written or read back, and the row is still in L1 for the packer.
  const RowFn quantRow = [&](int64_t t, int8_t* dst) -> const int8_t* {
    q(x + t * K, K, dst, scaleOut + t, zeroOut + t);
    return dst;
  };
  Activations a{nullptr, T, K, scaleOut, zeroOut, 1, &quantRow, lowRankXa, lowRankB, lowRank};
  gemm(a, w, out, w.n, 1, true);
}

void conv2d(const View& x, const Weights& w, const QConvParams& p, float scale, float zero, float qmin, float qmax,
            const float* col, const View& out) {
  auto fail = [](const std::string& m) { throw KernelError("QDM_SHAPE_MISMATCH", "quantConv2d: " + m); };
  if (x.ndim != 4 || out.ndim != 4 || !x.contiguous() || !out.contiguous()) fail("x and out must be contiguous 4-d views");
  if (x.dtype != DType::F32 || out.dtype != DType::F32) throw KernelError("QDM_DTYPE", "quantConv2d: f32 input and output only");
  if (!(scale > 0.0f)) throw KernelError("QDM_BAD_ARGUMENT", "quantConv2d: the activation scale must be positive");
  const int64_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3];
  const int64_t OH = out.shape[2], OW = out.shape[3], P = OH * OW, Kc = C * p.kh * p.kw;
  if (w.k != Kc) fail("weight reduction size " + std::to_string(w.k) + " != C*kh*kw = " + std::to_string(Kc));
  if (out.shape[0] != N || out.shape[1] != w.n) fail("output batch/channels mismatch");
  const float shift = qmax > 127.0f ? 128.0f : 0.0f;
  if (qmin - shift < -128.0f || qmax - shift > 127.0f) throw KernelError("QDM_BAD_ARGUMENT", "quantConv2d: the activation range does not fit 8 bits");
  const int8_t zc = static_cast<int8_t>(zero - shift);  // a float 0 is the code z, and so is the padding
  const float* px = x.ptr<float>();
  float* py = out.ptr<float>();
  const bool direct = p.kh == 1 && p.kw == 1 && p.strideH == 1 && p.strideW == 1 && p.padH == 0 && p.padW == 0;
  thread_local std::vector<int8_t> hwcBuf;  // grows once, never re-zeroed
  hwcBuf.resize(static_cast<size_t>(H * W * C));
  int8_t* hwc = hwcBuf.data();  // (a pointer: the lambdas below run on pool threads)
  const float za = zero - shift;
  // im2row row of output pixel q, built on demand by the GEMM's activation packing.
  const RowFn im2row = [&](int64_t q, int8_t* dst) -> const int8_t* {
    const int64_t oh = q / OW, ow = q % OW;
    int8_t* d = dst;
    for (int64_t kh = 0; kh < p.kh; ++kh) {
      const int64_t ih = oh * p.strideH - p.padH + kh * p.dilH;
      for (int64_t kw = 0; kw < p.kw; ++kw, d += C) {
        const int64_t iw = ow * p.strideW - p.padW + kw * p.dilW;
        if (ih < 0 || ih >= H || iw < 0 || iw >= W) std::memset(d, static_cast<uint8_t>(zc), C);
        else std::memcpy(d, hwc + (ih * W + iw) * C, C);
      }
    }
    return dst;
  };
  for (int64_t n = 0; n < N; ++n) {
    const float* xi = px + n * C * H * W;
    // Quantize once, channels last: an im2row row is then kh*kw runs of C contiguous codes,
    // matching the (kh, kw, c) reduction order the 4-d weights were packed in.
    // Blocks of 64 pixels: each channel's run is quantized by the (vectorized) row kernel into a
    // small buffer, then transposed into place.
    const KernelDesc& kd = active();
    constexpr int64_t kBlock = 64;
    parallelFor((H * W + kBlock - 1) / kBlock, std::max<int64_t>(1, 128 / std::max<int64_t>(C, 1)), [&](int64_t b0, int64_t b1) {
      thread_local std::vector<int8_t> tmp;
      tmp.resize(static_cast<size_t>(C * kBlock));
      int8_t* const tb = tmp.data();
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t s0 = b * kBlock, len = std::min(kBlock, H * W - s0);
        for (int64_t c = 0; c < C; ++c) {
          const float s = col ? scale * col[c] : scale;
          kd.quantRow(xi + c * H * W + s0, len, s, nullptr, zero, qmin, qmax, shift, tb + c * kBlock);
        }
        for (int64_t i = 0; i < len; ++i) {
          int8_t* d = hwc + (s0 + i) * C;
          for (int64_t c = 0; c < C; ++c) d[c] = tb[c * kBlock + i];
        }
      }
    });
    Activations acts{hwc, P, Kc, &scale, &za, 0, direct ? nullptr : &im2row};
    gemm(acts, w, py + n * w.n * P, 1, P, true);
  }
}

const char* kernelName() { return active().name; }
int kernelRows() { return active().mr; }

bool forceKernel(const char* name) {
  static const KernelDesc avx512 = detail::avx512VnniKernel(), avx2 = detail::avx2Kernel(), scalar = scalarKernel();
  const std::string s = name ? name : "";
  if (s == "auto" || s.empty()) { forced.store(nullptr); return true; }
  if (s == "avx512-vnni" && hasAvx512Vnni()) { forced.store(&avx512); return true; }
  if (s == "avx2" && hasAvx2()) { forced.store(&avx2); return true; }
  if (s == "scalar") { forced.store(&scalar); return true; }
  return false;
}

}  // namespace qdm::cpu::qgemm
