// Real low-bit GEMM on the CPU: int8 x int8 -> int32 accumulation -> f32 epilogue (W8A8, W4A8,
// W4A4), activation quantization, and a quantized conv2d built on it.
//
//   out[t, o] = sa[t] * sw[o] * sum_k (qa[t,k] - za[t]) * (qw[o,k] - zw[o]) + bias[o]
//
// t runs over activation rows (tokens, or output pixels of a conv), o over weight rows (output
// channels). The zero-point terms are outer products done in the epilogue from precomputed code
// sums, never in the main loop. Weights are packed ONCE (qgemmPackWeights) into panels of
// kQPanel = 16 rows, K padded to a multiple of 4, in the order the micro-kernels read them:
//   W8: per group of 4 k, 16 rows x 4 signed bytes (64 bytes); codes in [-127, 127] (-128 is
//       clamped to -127 at pack time: the AVX2 kernel's vpmaddubsw pair sum is exact only then);
//   W4: per group of 4 k, 32 bytes; byte b holds (w[r, k] + 8) in its low nibble and
//       (w[r + 8, k] + 8) in its high nibble (r = b / 4, k = b % 4): unsigned nibbles, so the
//       in-register unpack is one mask (low) or one shift and mask (high), and the weight can be
//       the unsigned operand of vpmaddubsw/vpdpbusd; the +8 bias is removed in the epilogue.
// Activations are signed int8 codes in [-128, 127] (an asymmetric u8 code a with zero point z
// is stored as a - 128 with zero point z - 128: the same differences, so exact).
// Layout of the output: out[t * rsT + o * rsO] (linear: rsT = N, rsO = 1; conv: rsT = 1, rsO = P).
#pragma once
#include <cstdint>
#include <functional>

#include "qdm/view.h"

namespace qdm::cpu::qgemm {

constexpr int kQPanel = 16;

// Bytes of the packed weight buffer for n rows of k codes at `bits` (8 or 4).
int64_t packedBytes(int64_t n, int64_t k, int bits);
// codes: i8 (bits 8) or i4 (bits 4), contiguous [n, k], or conv weights [O, C, kh, kw] whose
// reduction is then packed in (kh, kw, c) order (the channels-last im2row of conv2d). Writes the panels and
// rowSums[o] = sum_k qw[o, k] (after the -128 clamp).
void packWeights(const View& codes, int bits, uint8_t* packed, int32_t* rowSums);

struct Weights {
  const uint8_t* packed;
  const int32_t* rowSums;
  const float* scale;  // [n]
  const float* zero;   // [n] or nullptr (integer-valued)
  const float* bias;   // [n] or nullptr
  int64_t n, k;
  int bits;
};

// Produces activation row t (K codes), either a pointer into existing codes or written into
// `scratch` (K bytes, per thread): conv2d builds its im2row rows this way, one at a time while the
// GEMM packs them, so no P x K im2row matrix is ever materialized.
using RowFn = std::function<const int8_t*(int64_t t, int8_t* scratch)>;

struct Activations {
  const int8_t* codes;  // row t at codes + t * ld (unless rowFn is set)
  int64_t rows, ld;
  const float* scale;   // scale[t * scaleStride]
  const float* zero;    // zero[t * scaleStride] (integer-valued)
  int64_t scaleStride;  // 1: per row, 0: per tensor
  const RowFn* rowFn = nullptr;
  // Optional low-rank branch added in the tile epilogue: out += xa[t, :] . b[:, o]
  // (xa [rows, rank] and b [rank, n], row-major f32; LoRA / SVDQuant).
  const float* lowRankXa = nullptr;
  const float* lowRankB = nullptr;
  int64_t lowRank = 0;
};

// out as described above. threaded: may use the pool (never pass true from inside a pool task).
void gemm(const Activations& a, const Weights& w, float* out, int64_t rsT, int64_t rsO, bool threaded = true);

// Activation quantization of x [T, K] (contiguous f32) to int8 codes [T, K]:
//   static:  code = clamp(rne(x / s_k) + z, qmin, qmax) - shift, s_k = fp32(scale * col[k])
//            (or scale without col), shift = 128 when qmax > 127 (u8 codes); scaleOut[t] = scale,
//            zeroOut[t] = z - shift;
//   dynamic: r_t = max_k |x / col[k]| / qmax (1 when the row is all zero), symmetric
//            code = clamp(rne(x / fp32(r_t * col[k])), -qmax, qmax); scaleOut[t] = r_t, zeroOut 0.
// rne = round half to even (std::nearbyint), the fakeQuant rounding.
void quantizeActivations(const float* x, int64_t T, int64_t K, bool dynamic, float scale, float zero, float qmin,
                         float qmax, const float* col, int8_t* codes, float* scaleOut, float* zeroOut);

// quantizeActivations and gemm in one pass over x: each row is quantized as the GEMM packs it (no
// code matrix). Same codes, scales and output as the two calls; scaleOut/zeroOut [T] receive the
// activation parameters. out: [T, w.n] contiguous.
void linearQuantizing(const float* x, int64_t T, int64_t K, bool dynamic, float scale, float zero, float qmin, float qmax,
                      const float* col, const Weights& w, float* out, float* scaleOut, float* zeroOut,
                      const float* lowRankXa = nullptr, const float* lowRankB = nullptr, int64_t lowRank = 0);

struct QConvParams { int64_t kh, kw, strideH = 1, strideW = 1, padH = 0, padW = 0, dilH = 1, dilW = 1; };
// x: f32 [N, C, H, W] contiguous; weights [O, C*kh*kw] packed; out f32 [N, O, OH, OW]. The input is
// quantized once with the static per-tensor (scale, zero, qmin, qmax); col (length C, or null) is
// an input-channel factor divided into x first. Padding uses the zero-point code.
void conv2d(const View& x, const Weights& w, const QConvParams& p, float scale, float zero, float qmin, float qmax,
            const float* col, const View& out);

// The micro-kernel in use ("avx512-vnni", "avx2", "scalar") and its activation rows per tile.
const char* kernelName();
int kernelRows();
// Tests: "auto", "avx512-vnni", "avx2", "scalar"; false when not usable on this machine.
bool forceKernel(const char* name);

// ---- between the driver (qgemm.cpp) and the ISA micro-kernels (qgemm_avx2.cpp, qgemm_avx512.cpp) ----
namespace detail {
// One tile of mr activation rows x kQPanel weight rows over kg groups of 4 k:
//   a: packed activation micro-panel, a[(g * mr + i) * 4 + kk] (signed codes, rows past T zero); when
//      the kernel asks for w8Abs, the W8 panels hold per group the mr x 4 codes and then their
//      absolute values (as u8: |-128| = 128), a[(g * 2 mr + mr + i) * 4 + kk], saving a vpabsb per row;
//   w: one packed weight panel (layout above); acc: int32 [mr][kQPanel], overwritten with the raw sums
//   W8: raw = sum qa * qw + w8ActBias * rowSumW[j]   (VNNI feeds qa ^ 0x80 = qa + 128 as the u8 operand)
//   W4: raw = sum qa * (qw + 8)                       (the +8 is removed with 8 * rowSumA[i])
using MicroKernel = void (*)(int64_t kg, const int8_t* a, const uint8_t* w, int32_t* acc);
// Activation quantization of one row (same arithmetic on every ISA: fp32 division, round half to
// even, clamp): out[k] = clamp(rne(x[k] / s_k) + z, qmin, qmax) - shift, s_k = s * col[k] (fp32) or s;
// absMax(x, col, K) = max_k |x[k] / col[k]| (or |x[k]|).
using QuantRow = void (*)(const float* x, int64_t K, float s, const float* col, float z, float qmin, float qmax, float shift, int8_t* out);
using AbsMax = float (*)(const float* x, const float* col, int64_t K);
// Epilogue of a full-width tile (16 columns, contiguous output rows) in the common case where the
// integer correction separates into one constant per row and one per column (no weight zero points;
// the tile's rows share one activation zero point): out[i * rsT + j] = float(acc[i][j] - rowConst[i]
// - colCorr[j]) * (sa[i] * sw[j]) + bias[j], int32 wrap-around subtractions, then a multiply and an
// add rounded exactly as the portable loop (no FMA).
using EpilogueRows = void (*)(const int32_t* acc, int m, const float* sa, const int32_t* rowConst, const int32_t* colCorr,
                              const float* sw, const float* bias, float* out, int64_t rsT);
// W8 activation packing for w8Abs kernels: one micro-panel from rows[i] (i < mr), each kg * 4 codes
// (zero-padded), in the layout above (codes, then absolute values, per group).
using PackAbs = void (*)(const int8_t* const* rows, int64_t kg, int8_t* dst);
struct KernelDesc { const char* name; int mr; int w8ActBias; bool w8Abs; MicroKernel w8, w4; QuantRow quantRow; AbsMax absMax; EpilogueRows epilogue; PackAbs packAbs; };
void epilogueRowsAvx2(const int32_t* acc, int m, const float* sa, const int32_t* rowConst, const int32_t* colCorr, const float* sw,
                      const float* bias, float* out, int64_t rsT);
void quantRowScalar(const float* x, int64_t K, float s, const float* col, float z, float qmin, float qmax, float shift, int8_t* out);
float absMaxScalar(const float* x, const float* col, int64_t K);
void quantRowAvx2(const float* x, int64_t K, float s, const float* col, float z, float qmin, float qmax, float shift, int8_t* out);
float absMaxAvx2(const float* x, const float* col, int64_t K);
KernelDesc avx2Kernel();
KernelDesc avx512VnniKernel();
}  // namespace detail

}  // namespace qdm::cpu::qgemm
