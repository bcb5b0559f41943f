// AVX2 int8 micro-kernels for qgemm (layouts in qdm/qgemm.h): 4 activation rows x 16 weight rows.
//   W8: vpmaddubsw(|a|, sign(w, a)) (|a| packed beside a, see KernelDesc::w8Abs) is exact because |a| <= 128 and |w| <= 127 (a pair sums to at
//       most 2 * 128 * 127 = 32512 < 32767), then vpmaddwd with ones widens to int32: per 32
//       multiply-adds one vpsignb, one vpmaddubsw, one vpmaddwd and one vpaddd.
//   W4: the unsigned nibble (w + 8 in [0, 15]) is the u8 operand and the activation the s8 one; a
//       pair is at most 2 * 15 * 128 = 3840, so eight k-groups add up in int16 (<= 30720) before one
//       vpmaddwd: per 32 multiply-adds about one vpmaddubsw and one vpaddw, plus the unpack (one
//       vpand for 8 rows, one vpsrlw + vpand for the other 8). Half the weight bytes and fewer
//       multiplies than W8.
// Compiled with -mavx2; only called after qdm::cpu::hasAvx2() said yes.
#include <immintrin.h>

#include <cstring>

#include "qdm/qgemm.h"

namespace qdm::cpu::qgemm::detail {
namespace {

constexpr int MR = 4;

inline __m256i bcast4(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm256_set1_epi32(v);
}

void w8x4(int64_t kg, const int8_t* a, const uint8_t* w, int32_t* acc) {
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i c00 = _mm256_setzero_si256(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00;
  for (int64_t g = 0; g < kg; ++g, a += 2 * MR * 4, w += 64) {
    const __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w));
    const __m256i w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 32));
#define QDM_ROW(i, c0, c1)                                                                            \
    {                                                                                                 \
      const __m256i av = bcast4(a + (i) * 4), aa = bcast4(a + (MR + (i)) * 4);                       \
      c0 = _mm256_add_epi32(c0, _mm256_madd_epi16(_mm256_maddubs_epi16(aa, _mm256_sign_epi8(w0, av)), ones)); \
      c1 = _mm256_add_epi32(c1, _mm256_madd_epi16(_mm256_maddubs_epi16(aa, _mm256_sign_epi8(w1, av)), ones)); \
    }
    QDM_ROW(0, c00, c01) QDM_ROW(1, c10, c11) QDM_ROW(2, c20, c21) QDM_ROW(3, c30, c31)
#undef QDM_ROW
  }
  __m256i* o = reinterpret_cast<__m256i*>(acc);
  _mm256_storeu_si256(o + 0, c00); _mm256_storeu_si256(o + 1, c01);
  _mm256_storeu_si256(o + 2, c10); _mm256_storeu_si256(o + 3, c11);
  _mm256_storeu_si256(o + 4, c20); _mm256_storeu_si256(o + 5, c21);
  _mm256_storeu_si256(o + 6, c30); _mm256_storeu_si256(o + 7, c31);
}

// float(x) * s + b with the portable loop's two roundings: -mfma would let the compiler contract
// the multiply and the add into one FMA (one rounding), which made AVX2 outputs differ from the
// scalar kernel's in the last bit; the empty asm pins the product to a register.
inline __m256 mulAdd2(__m256 x, __m256 s, __m256 b) {
  __m256 p = _mm256_mul_ps(x, s);
  asm("" : "+x"(p));
  return _mm256_add_ps(p, b);
}

// Two activation rows per pass over the panel (the kernel makes two passes): 4 int32 and 4 int16
// accumulators, the unpacked weights, the mask and two broadcasts stay in registers. (One pass over
// four rows needs more than 16 ymm registers and spills every group.) Re-unpacking the panel costs
// 3 of 11 operations per group and pass; the panel is in L1 for the second pass.
inline void w4rows2(int64_t kg, const int8_t* a, const uint8_t* w, int32_t* out) {
  const __m256i ones = _mm256_set1_epi16(1), low = _mm256_set1_epi8(0x0F);
  __m256i c00 = _mm256_setzero_si256(), c01 = c00, c10 = c00, c11 = c00;
  for (int64_t g = 0; g < kg;) {
    const int64_t end = g + 8 < kg ? g + 8 : kg;  // eight groups in int16: |sum| <= 8 * 3840
    __m256i s00 = _mm256_setzero_si256(), s01 = s00, s10 = s00, s11 = s00;
    for (; g < end; ++g, a += MR * 4, w += 32) {
      const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w));
      const __m256i lo = _mm256_and_si256(x, low), hi = _mm256_and_si256(_mm256_srli_epi16(x, 4), low);
      const __m256i a0 = bcast4(a), a1 = bcast4(a + 4);
      s00 = _mm256_add_epi16(s00, _mm256_maddubs_epi16(lo, a0));
      s01 = _mm256_add_epi16(s01, _mm256_maddubs_epi16(hi, a0));
      s10 = _mm256_add_epi16(s10, _mm256_maddubs_epi16(lo, a1));
      s11 = _mm256_add_epi16(s11, _mm256_maddubs_epi16(hi, a1));
    }
    c00 = _mm256_add_epi32(c00, _mm256_madd_epi16(s00, ones)); c01 = _mm256_add_epi32(c01, _mm256_madd_epi16(s01, ones));
    c10 = _mm256_add_epi32(c10, _mm256_madd_epi16(s10, ones)); c11 = _mm256_add_epi32(c11, _mm256_madd_epi16(s11, ones));
  }
  __m256i* o = reinterpret_cast<__m256i*>(out);
  _mm256_storeu_si256(o + 0, c00); _mm256_storeu_si256(o + 1, c01);
  _mm256_storeu_si256(o + 2, c10); _mm256_storeu_si256(o + 3, c11);
}

void w4x4(int64_t kg, const int8_t* a, const uint8_t* w, int32_t* out) {
  w4rows2(kg, a, w, out);
  w4rows2(kg, a + 8, w, out + 2 * kQPanel);
}

// W8 activation packing (layout in qdm/qgemm.h, w8Abs): eight groups per step, a 4 x 8 transpose
// of 4-byte groups with unpacks, then per group the 16 codes and their 16 absolute values.
void packAbs4(const int8_t* const* rows, int64_t kg, int8_t* dst) {
  int64_t g = 0;
  for (; g + 8 <= kg; g += 8, dst += 8 * 2 * MR * 4) {
    const __m256i r0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rows[0] + g * 4));
    const __m256i r1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rows[1] + g * 4));
    const __m256i r2 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rows[2] + g * 4));
    const __m256i r3 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rows[3] + g * 4));
    const __m256i t0 = _mm256_unpacklo_epi32(r0, r1), t1 = _mm256_unpackhi_epi32(r0, r1);
    const __m256i t2 = _mm256_unpacklo_epi32(r2, r3), t3 = _mm256_unpackhi_epi32(r2, r3);
    // u[q]: 128-bit lane 0 holds group q, lane 1 group q + 4 (4 rows x 4 codes each)
    const __m256i u[4] = {_mm256_unpacklo_epi64(t0, t2), _mm256_unpackhi_epi64(t0, t2), _mm256_unpacklo_epi64(t1, t3), _mm256_unpackhi_epi64(t1, t3)};
#pragma GCC unroll 4
    for (int q = 0; q < 4; ++q) {
      const __m256i v = _mm256_abs_epi8(u[q]);  // |-128| = 0x80, read as u8 128
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + q * 32), _mm256_permute2x128_si256(u[q], v, 0x20));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + (q + 4) * 32), _mm256_permute2x128_si256(u[q], v, 0x31));
    }
  }
  for (; g < kg; ++g, dst += 2 * MR * 4)
    for (int i = 0; i < MR; ++i)
      for (int kk = 0; kk < 4; ++kk) {
        const int8_t c = rows[i][g * 4 + kk];
        dst[i * 4 + kk] = c;
        dst[(MR + i) * 4 + kk] = static_cast<int8_t>(static_cast<uint8_t>(c < 0 ? -c : c));
      }
}

}  // namespace

// 32 codes per iteration with the scalar arithmetic (vdivps is correctly rounded like the scalar
// division, vroundps with TO_NEAREST_INT is nearbyint in the default mode); the tail goes scalar.
void quantRowAvx2(const float* x, int64_t K, float s, const float* col, float z, float qmin, float qmax, float shift, int8_t* out) {
  const __m256 vs = _mm256_set1_ps(s), vz = _mm256_set1_ps(z), lo = _mm256_set1_ps(qmin), hi = _mm256_set1_ps(qmax), vsh = _mm256_set1_ps(shift);
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  int64_t k = 0;
  for (; k + 32 <= K; k += 32) {
    __m256i q[4];
    for (int j = 0; j < 4; ++j) {
      const __m256 sk = col ? _mm256_mul_ps(vs, _mm256_loadu_ps(col + k + 8 * j)) : vs;
      __m256 v = _mm256_round_ps(_mm256_div_ps(_mm256_loadu_ps(x + k + 8 * j), sk), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      v = _mm256_sub_ps(_mm256_min_ps(_mm256_max_ps(_mm256_add_ps(v, vz), lo), hi), vsh);
      q[j] = _mm256_cvtps_epi32(v);
    }
    const __m256i b = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + k), _mm256_permutevar8x32_epi32(b, order));
  }
  if (k < K) quantRowScalar(x + k, K - k, s, col ? col + k : nullptr, z, qmin, qmax, shift, out + k);
}

float absMaxAvx2(const float* x, const float* col, int64_t K) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  __m256 m = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 8 <= K; k += 8) {
    __m256 v = _mm256_loadu_ps(x + k);
    if (col) v = _mm256_div_ps(v, _mm256_loadu_ps(col + k));
    m = _mm256_max_ps(m, _mm256_andnot_ps(sign, v));
  }
  alignas(32) float t[8];
  _mm256_store_ps(t, m);
  float r = k < K ? absMaxScalar(x + k, col ? col + k : nullptr, K - k) : 0.0f;
  for (float v : t) r = r > v ? r : v;
  return r;
}

void epilogueRowsAvx2(const int32_t* acc, int m, const float* sa, const int32_t* rowConst, const int32_t* colCorr, const float* sw,
                      const float* bias, float* out, int64_t rsT) {
  const __m256 sw0 = _mm256_loadu_ps(sw), sw1 = _mm256_loadu_ps(sw + 8), b0 = _mm256_loadu_ps(bias), b1 = _mm256_loadu_ps(bias + 8);
  const __m256i k0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(colCorr)), k1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(colCorr + 8));
  for (int i = 0; i < m; ++i) {
    const __m256i c = _mm256_set1_epi32(rowConst[i]);
    const __m256 s = _mm256_set1_ps(sa[i]);
    const __m256i* r = reinterpret_cast<const __m256i*>(acc + i * kQPanel);
    const __m256 v0 = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_sub_epi32(_mm256_loadu_si256(r), c), k0));
    const __m256 v1 = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_sub_epi32(_mm256_loadu_si256(r + 1), c), k1));
    _mm256_storeu_ps(out + i * rsT, mulAdd2(v0, _mm256_mul_ps(s, sw0), b0));
    _mm256_storeu_ps(out + i * rsT + 8, mulAdd2(v1, _mm256_mul_ps(s, sw1), b1));
  }
}

KernelDesc avx2Kernel() { return {"avx2", MR, 0, true, w8x4, w4x4, quantRowAvx2, absMaxAvx2, epilogueRowsAvx2, packAbs4}; }

}  // namespace qdm::cpu::qgemm::detail
