// PLACEHOLDER reference GEMM (correct, slow): the blocked, packed, ISA-dispatched kernel
// replaces this file. Kept simple so every other part can be built and tested meanwhile.
#include <chrono>
#include <vector>

#include "qdm/gemm.h"
#include "qdm/parallel.h"

namespace qdm::cpu {

void sgemm(int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t rsa, int64_t csa,
           const float* B, int64_t rsb, int64_t csb, float beta, float* C, int64_t rsc, int64_t csc) {
  parallelFor(M, 4, [&](int64_t m0, int64_t m1) {
    std::vector<double> row(N);
    for (int64_t m = m0; m < m1; ++m) {
      std::fill(row.begin(), row.end(), 0.0);
      for (int64_t k = 0; k < K; ++k) {
        double a = A[m * rsa + k * csa];
        const float* b = B + k * rsb;
        for (int64_t n = 0; n < N; ++n) row[n] += a * b[n * csb];
      }
      for (int64_t n = 0; n < N; ++n) {
        float& c = C[m * rsc + n * csc];
        c = static_cast<float>(alpha * row[n] + (beta == 0.0f ? 0.0 : beta * c));
      }
    }
  });
}

void sgemmBatched(int64_t batch, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t bsa, int64_t rsa,
                  int64_t csa, const float* B, int64_t bsb, int64_t rsb, int64_t csb, float beta, float* C, int64_t bsc,
                  int64_t rsc, int64_t csc) {
  for (int64_t b = 0; b < batch; ++b)
    sgemm(M, N, K, alpha, A + b * bsa, rsa, csa, B + b * bsb, rsb, csb, beta, C + b * bsc, rsc, csc);
}

double measurePeakGflops(int threads, double seconds) { (void)threads; (void)seconds; return 0.0; }

}  // namespace qdm::cpu
