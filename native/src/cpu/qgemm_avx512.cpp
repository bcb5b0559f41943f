// AVX-512 VNNI micro-kernels for qgemm (layouts in qdm/qgemm.h): 8 activation rows x 16 weight
// rows, one zmm accumulator per activation row. vpdpbusd adds four u8 x s8 products straight into
// int32 without 16-bit saturation, so:
//   W8: the activation goes in as the u8 operand a ^ 0x80 = a + 128 (one xor per broadcast, not
//       per product) and the weight as s8; the +128 * rowSumW it adds is removed in the epilogue
//       (KernelDesc::w8ActBias = 128). AVX-512 has no vpsignb, so the AVX2 abs/sign trick would
//       cost a masked subtract per product instead.
//   W4: the unsigned nibble (w + 8) is the u8 operand and the activation the s8 one, as on AVX2.
// Compiled with AVX-512 + VNNI flags; only called after qdm::cpu::hasAvx512Vnni() said yes (the GPU
// machine's Xeon). Not runnable on the AVX2-only development machines.
#include <immintrin.h>

#include <cstring>

#include "qdm/qgemm.h"

namespace qdm::cpu::qgemm::detail {
namespace {

constexpr int MR = 8;

inline __m512i bcast4(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm512_set1_epi32(v);
}

void w8x8(int64_t kg, const int8_t* a, const uint8_t* w, int32_t* acc) {
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
  __m512i c[MR];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) c[i] = _mm512_setzero_si512();
  for (int64_t g = 0; g < kg; ++g, a += MR * 4, w += 64) {
    const __m512i wv = _mm512_loadu_si512(w);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) c[i] = _mm512_dpbusd_epi32(c[i], _mm512_xor_si512(bcast4(a + i * 4), flip), wv);
  }
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) _mm512_storeu_si512(acc + i * kQPanel, c[i]);
}

void w4x8(int64_t kg, const int8_t* a, const uint8_t* w, int32_t* acc) {
  const __m256i low = _mm256_set1_epi8(0x0F);
  __m512i c[MR];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) c[i] = _mm512_setzero_si512();
  for (int64_t g = 0; g < kg; ++g, a += MR * 4, w += 32) {
    const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w));
    const __m256i lo = _mm256_and_si256(x, low), hi = _mm256_and_si256(_mm256_srli_epi16(x, 4), low);
    const __m512i wv = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) c[i] = _mm512_dpbusd_epi32(c[i], wv, bcast4(a + i * 4));
  }
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) _mm512_storeu_si512(acc + i * kQPanel, c[i]);
}

}  // namespace

// Activation quantization is memory-bound: the AVX2 row functions serve here too.
KernelDesc avx512VnniKernel() { return {"avx512-vnni", MR, 128, false, w8x8, w4x8, quantRowAvx2, absMaxAvx2, epilogueRowsAvx2, nullptr}; }

}  // namespace qdm::cpu::qgemm::detail
