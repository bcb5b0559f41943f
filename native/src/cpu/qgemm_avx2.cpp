// AVX2 int8 micro-kernels for qgemm (layouts in qdm/qgemm.h): 4 activation rows x 16 weight rows.
//   W8: vpmaddubsw(|a|, sign(w, a)) is exact because |a| <= 128 and |w| <= 127 (a pair sums to at
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
  for (int64_t g = 0; g < kg; ++g, a += MR * 4, w += 64) {
    const __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w));
    const __m256i w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 32));
#define QDM_ROW(i, c0, c1)                                                                            \
    {                                                                                                 \
      const __m256i av = bcast4(a + (i) * 4), aa = _mm256_abs_epi8(av);                              \
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

void w4x4(int64_t kg, const int8_t* a, const uint8_t* w, int32_t* acc) {
  const __m256i ones = _mm256_set1_epi16(1), low = _mm256_set1_epi8(0x0F);
  __m256i c[MR][2];
  for (int i = 0; i < MR; ++i) c[i][0] = c[i][1] = _mm256_setzero_si256();
  for (int64_t g = 0; g < kg;) {
    const int64_t end = g + 8 < kg ? g + 8 : kg;  // eight groups in int16: |sum| <= 8 * 3840
    __m256i s00 = _mm256_setzero_si256(), s01 = s00, s10 = s00, s11 = s00, s20 = s00, s21 = s00, s30 = s00, s31 = s00;
    for (; g < end; ++g, a += MR * 4, w += 32) {
      const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w));
      const __m256i lo = _mm256_and_si256(x, low), hi = _mm256_and_si256(_mm256_srli_epi16(x, 4), low);
#define QDM_ROW(i, s0, s1)                                              \
      {                                                                 \
        const __m256i av = bcast4(a + (i) * 4);                         \
        s0 = _mm256_add_epi16(s0, _mm256_maddubs_epi16(lo, av));        \
        s1 = _mm256_add_epi16(s1, _mm256_maddubs_epi16(hi, av));        \
      }
      QDM_ROW(0, s00, s01) QDM_ROW(1, s10, s11) QDM_ROW(2, s20, s21) QDM_ROW(3, s30, s31)
#undef QDM_ROW
    }
    c[0][0] = _mm256_add_epi32(c[0][0], _mm256_madd_epi16(s00, ones)); c[0][1] = _mm256_add_epi32(c[0][1], _mm256_madd_epi16(s01, ones));
    c[1][0] = _mm256_add_epi32(c[1][0], _mm256_madd_epi16(s10, ones)); c[1][1] = _mm256_add_epi32(c[1][1], _mm256_madd_epi16(s11, ones));
    c[2][0] = _mm256_add_epi32(c[2][0], _mm256_madd_epi16(s20, ones)); c[2][1] = _mm256_add_epi32(c[2][1], _mm256_madd_epi16(s21, ones));
    c[3][0] = _mm256_add_epi32(c[3][0], _mm256_madd_epi16(s30, ones)); c[3][1] = _mm256_add_epi32(c[3][1], _mm256_madd_epi16(s31, ones));
  }
  __m256i* o = reinterpret_cast<__m256i*>(acc);
  for (int i = 0; i < MR; ++i) { _mm256_storeu_si256(o + 2 * i, c[i][0]); _mm256_storeu_si256(o + 2 * i + 1, c[i][1]); }
}

}  // namespace

KernelDesc avx2Kernel() { return {"avx2", MR, 0, w8x4, w4x4}; }

}  // namespace qdm::cpu::qgemm::detail
