// AVX2+FMA softmax helpers for the fused attention kernel (attention.cpp): column max and the
// exp(s - m) pass with its column sums, over score tiles that hold one query per column.
// Compiled with -mavx2 -mfma; only called after qdm::cpu::hasAvx2() said yes.
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

}  // namespace

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
