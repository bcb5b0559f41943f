// AVX2+FMA GEMM micro-kernel: a 6x16 register tile (12 ymm accumulators, one broadcast of A
// and two loads of B per k), the shape BLIS uses on Zen. Also the FMA-peak microbenchmark.
// Compiled with -mavx2 -mfma; only called after qdm::cpu::hasAvx2() said yes.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "cpu/gemm_internal.h"

namespace qdm::cpu::gemm {
namespace {

constexpr int MR = 6, NR = 16;

void ukernel6x16(int64_t kc, const float* __restrict a, const float* __restrict b, float* c, int64_t rsc,
                 int64_t csc, float beta, int m, int n) {
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
  __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
  for (int64_t k = 0; k < kc; ++k) {
    _mm_prefetch(reinterpret_cast<const char*>(b + 8 * NR), _MM_HINT_T0);
    __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
    __m256 a0 = _mm256_broadcast_ss(a + 0), a1 = _mm256_broadcast_ss(a + 1);
    c00 = _mm256_fmadd_ps(a0, b0, c00); c01 = _mm256_fmadd_ps(a0, b1, c01);
    c10 = _mm256_fmadd_ps(a1, b0, c10); c11 = _mm256_fmadd_ps(a1, b1, c11);
    a0 = _mm256_broadcast_ss(a + 2); a1 = _mm256_broadcast_ss(a + 3);
    c20 = _mm256_fmadd_ps(a0, b0, c20); c21 = _mm256_fmadd_ps(a0, b1, c21);
    c30 = _mm256_fmadd_ps(a1, b0, c30); c31 = _mm256_fmadd_ps(a1, b1, c31);
    a0 = _mm256_broadcast_ss(a + 4); a1 = _mm256_broadcast_ss(a + 5);
    c40 = _mm256_fmadd_ps(a0, b0, c40); c41 = _mm256_fmadd_ps(a0, b1, c41);
    c50 = _mm256_fmadd_ps(a1, b0, c50); c51 = _mm256_fmadd_ps(a1, b1, c51);
    a += MR; b += NR;
  }
  __m256 acc[MR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
  if (m == MR && n == NR && csc == 1) {
    const __m256 vb = _mm256_set1_ps(beta);
    for (int i = 0; i < MR; ++i) {
      float* ci = c + i * rsc;
      if (beta == 0.0f) {
        _mm256_storeu_ps(ci, acc[i][0]); _mm256_storeu_ps(ci + 8, acc[i][1]);
      } else {
        _mm256_storeu_ps(ci, _mm256_fmadd_ps(vb, _mm256_loadu_ps(ci), acc[i][0]));
        _mm256_storeu_ps(ci + 8, _mm256_fmadd_ps(vb, _mm256_loadu_ps(ci + 8), acc[i][1]));
      }
    }
    return;
  }
  alignas(32) float t[MR * NR];
  for (int i = 0; i < MR; ++i) { _mm256_store_ps(t + i * NR, acc[i][0]); _mm256_store_ps(t + i * NR + 8, acc[i][1]); }
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j) {
      float& cij = c[i * rsc + j * csc];
      cij = beta == 0.0f ? t[i * NR + j] : std::fma(beta, cij, t[i * NR + j]);
    }
}

// 12 independent FMA chains of 8 lanes: 192 flops per iteration.
float fmaChains(int64_t iters, float seed) {
  __m256 c[12];
  for (int i = 0; i < 12; ++i) c[i] = _mm256_set1_ps(seed + i);
  const __m256 m = _mm256_set1_ps(0.999999f), a = _mm256_set1_ps(1e-6f);
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) c[i] = _mm256_fmadd_ps(c[i], m, a);
  }
  __m256 s = c[0];
  for (int i = 1; i < 12; ++i) s = _mm256_add_ps(s, c[i]);
  alignas(32) float o[8];
  _mm256_store_ps(o, s);
  return o[0] + o[7];
}

}  // namespace

// Blocks tuned on the AMD EPYC (Zen, 32 KiB L1d, 512 KiB L2 per core) development machine: kc = 384
// keeps a 24 KiB B micro-panel in L1; a small mc (60 x 384 A block, 90 KiB) measured best in L2
// (sweep of kc 256..512, mc 48..192, nc 1020..4080 at n = 1024 and 2048).
KernelDesc avx2Kernel() { return {"avx2", MR, NR, 60, 384, 4080, ukernel6x16}; }

double peakAvx2(int threads, double seconds) {
  threads = std::max(1, threads);
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  std::vector<double> rate(threads, 0.0);
  std::vector<float> sink(threads, 0.0f);
  std::vector<std::thread> ts;
  const int64_t chunk = 1 << 18;  // 50 MFLOP, about 0.5 ms
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
      rate[t] = static_cast<double>(iters) * 192.0 / el * 1e-9;
    });
  while (ready.load() < threads) std::this_thread::yield();
  go = true;
  for (auto& th : ts) th.join();
  double total = 0;
  for (double r : rate) total += r;
  return sink[0] == 12345.0f ? total + 1e-9 : total;
}

}  // namespace qdm::cpu::gemm
