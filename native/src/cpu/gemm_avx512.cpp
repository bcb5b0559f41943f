// AVX-512 GEMM micro-kernel: a 12x32 register tile (24 zmm accumulators, one broadcast of A
// and two loads of B per k), structurally the AVX2 6x16 kernel with twice the rows and lanes.
// Compiled with AVX-512 flags; only called after qdm::cpu::hasAvx512() said yes (the GPU
// machine's Xeon). Not runnable on the AMD development machines: keep it simple.
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <thread>
#include <vector>

#include "cpu/gemm_internal.h"

namespace qdm::cpu::gemm {
namespace {

constexpr int MR = 12, NR = 32;

void ukernel12x32(int64_t kc, const float* __restrict a, const float* __restrict b, float* c, int64_t rsc,
                  int64_t csc, float beta, int m, int n) {
  __m512 acc[MR][2];
#pragma GCC unroll 12
  for (int i = 0; i < MR; ++i) { acc[i][0] = _mm512_setzero_ps(); acc[i][1] = _mm512_setzero_ps(); }
  for (int64_t k = 0; k < kc; ++k) {
    __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16);
#pragma GCC unroll 12
    for (int i = 0; i < MR; ++i) {
      __m512 ai = _mm512_set1_ps(a[i]);
      acc[i][0] = _mm512_fmadd_ps(ai, b0, acc[i][0]);
      acc[i][1] = _mm512_fmadd_ps(ai, b1, acc[i][1]);
    }
    a += MR; b += NR;
  }
  if (m == MR && n == NR && csc == 1) {
    const __m512 vb = _mm512_set1_ps(beta);
#pragma GCC unroll 12
    for (int i = 0; i < MR; ++i) {
      float* ci = c + i * rsc;
      if (beta == 0.0f) {
        _mm512_storeu_ps(ci, acc[i][0]); _mm512_storeu_ps(ci + 16, acc[i][1]);
      } else {
        _mm512_storeu_ps(ci, _mm512_fmadd_ps(vb, _mm512_loadu_ps(ci), acc[i][0]));
        _mm512_storeu_ps(ci + 16, _mm512_fmadd_ps(vb, _mm512_loadu_ps(ci + 16), acc[i][1]));
      }
    }
    return;
  }
  alignas(64) float t[MR * NR];
  for (int i = 0; i < MR; ++i) { _mm512_store_ps(t + i * NR, acc[i][0]); _mm512_store_ps(t + i * NR + 16, acc[i][1]); }
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j) {
      float& cij = c[i * rsc + j * csc];
      cij = beta == 0.0f ? t[i * NR + j] : std::fma(beta, cij, t[i * NR + j]);
    }
}

// 12 independent FMA chains of 16 lanes: 384 flops per iteration.
float fmaChains(int64_t iters, float seed) {
  __m512 c[12];
  for (int i = 0; i < 12; ++i) c[i] = _mm512_set1_ps(seed + i);
  const __m512 m = _mm512_set1_ps(0.999999f), a = _mm512_set1_ps(1e-6f);
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) c[i] = _mm512_fmadd_ps(c[i], m, a);
  }
  __m512 s = c[0];
  for (int i = 1; i < 12; ++i) s = _mm512_add_ps(s, c[i]);
  return _mm512_reduce_add_ps(s);
}

}  // namespace

KernelDesc avx512Kernel() { return {"avx512", MR, NR, 144, 256, 4096, ukernel12x32}; }

double peakAvx512(int threads, double seconds) {
  threads = std::max(1, threads);
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  std::vector<double> rate(threads, 0.0);
  std::vector<float> sink(threads, 0.0f);
  std::vector<std::thread> ts;
  const int64_t chunk = 1 << 17;
  for (int t = 0; t < threads; ++t)
    ts.emplace_back([&, t] {
      ++ready;
      while (!go.load()) std::this_thread::yield();
      auto t0 = std::chrono::steady_clock::now();
      int64_t iters = 0;
      double el = 0;
      do {
        sink[t] += fmaChains(chunk, static_cast<float>(t));
        iters += chunk;
        el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      } while (el < seconds);
      rate[t] = static_cast<double>(iters) * 384.0 / el * 1e-9;
    });
  while (ready.load() < threads) std::this_thread::yield();
  go = true;
  for (auto& th : ts) th.join();
  double total = 0;
  for (double r : rate) total += r;
  return sink[0] == 12345.0f ? total + 1e-9 : total;
}

}  // namespace qdm::cpu::gemm
