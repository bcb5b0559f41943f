// AVX2+FMA row helpers for the fused attention kernel (attention.cpp): row max and the
// exp(s - m) pass with its row sum. Compiled with -mavx2 -mfma; only called after
// qdm::cpu::hasAvx2() said yes.
//
// exp is the Cephes expf scheme: n = round(x log2 e), r = x - n ln 2 (two-part ln 2), a degree-6
// polynomial for e^r, then 2^n through the exponent bits. Relative error about 1e-7 over the
// range; arguments below -87.3 (including -inf from masks) give exactly 0, NaN stays NaN.
#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <limits>

namespace qdm::cpu::attn {
namespace {

inline __m256 exp256(__m256 x) {
  const __m256 hi = _mm256_set1_ps(88.3762626647949f), lo = _mm256_set1_ps(-87.3365447504f);
  // min/max with x second: a NaN x passes through.
  __m256 xc = _mm256_max_ps(lo, _mm256_min_ps(hi, x));
  __m256 n = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), xc);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  __m256 r2 = _mm256_mul_ps(r, r);
  __m256 y = _mm256_add_ps(_mm256_fmadd_ps(p, r2, r), _mm256_set1_ps(1.0f));
  __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  y = _mm256_mul_ps(y, _mm256_castsi256_ps(e));
  // Below the clamp the true value underflows: return 0 (x < lo is false for NaN).
  return _mm256_andnot_ps(_mm256_cmp_ps(x, lo, _CMP_LT_OQ), y);
}

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}
inline float hmax(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

}  // namespace

float rowMaxAvx2(const float* s, int64_t n) {
  __m256 m = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) m = _mm256_max_ps(m, _mm256_loadu_ps(s + j));
  float r = hmax(m);
  for (; j < n; ++j) r = s[j] > r ? s[j] : r;
  return r;
}

// s[j] = exp(s[j] - m) in place; returns the sum of the new values.
float expSubSumAvx2(float* s, int64_t n, float m) {
  const __m256 vm = _mm256_set1_ps(m);
  __m256 acc = _mm256_setzero_ps();
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(s + j), vm));
    _mm256_storeu_ps(s + j, e);
    acc = _mm256_add_ps(acc, e);
  }
  if (j < n) {
    // The tail goes through the same vector exp, padded with -inf (exp gives 0).
    alignas(32) float t[8];
    for (int i = 0; i < 8; ++i) t[i] = j + i < n ? s[j + i] : -std::numeric_limits<float>::infinity();
    __m256 e = exp256(_mm256_sub_ps(_mm256_load_ps(t), vm));
    _mm256_store_ps(t, e);
    acc = _mm256_add_ps(acc, e);
    for (int i = 0; j + i < n; ++i) s[j + i] = t[i];
  }
  return hsum(acc);
}

}  // namespace qdm::cpu::attn

namespace qdm::cpu::attn {

// Column layouts: s is rows x W (W a multiple of 8), one query per column.
// m[c] = max(m[c], max_j s[j, c])
void colMaxAvx2(const float* s, int64_t rows, int W, float* m) {
  for (int c = 0; c < W; c += 8) {
    __m256 acc = _mm256_loadu_ps(m + c);
    for (int64_t j = 0; j < rows; ++j) acc = _mm256_max_ps(acc, _mm256_loadu_ps(s + j * W + c));
    _mm256_storeu_ps(m + c, acc);
  }
}

// s[j, c] = exp(s[j, c] - shift[c]) in place; sum[c] = sum_j of the new values.
void expSubColsAvx2(float* s, int64_t rows, int W, const float* shift, float* sum) {
  for (int c = 0; c < W; c += 8) {
    const __m256 vm = _mm256_loadu_ps(shift + c);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t j = 0; j < rows; ++j) {
      float* p = s + j * W + c;
      __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(p), vm));
      _mm256_storeu_ps(p, e);
      acc = _mm256_add_ps(acc, e);
    }
    _mm256_storeu_ps(sum + c, acc);
  }
}

}  // namespace qdm::cpu::attn
