// Single-precision GEMM on arbitrary strides (BLIS-style: any layout, packing hides it):
//   C[m,n] = alpha * sum_k A[m,k] * B[k,n] + beta * C[m,n]
// A is addressed A[m*rsa + k*csa], B as B[k*rsb + n*csb], C as C[m*rsc + n*csc].
// beta == 0 means C is write-only (NaNs in C are not propagated).
#pragma once
#include <cstdint>

namespace qdm::cpu {

void sgemm(int64_t M, int64_t N, int64_t K, float alpha,
           const float* A, int64_t rsa, int64_t csa,
           const float* B, int64_t rsb, int64_t csb,
           float beta, float* C, int64_t rsc, int64_t csc);

// Batched form: operand i of the batch starts at base + i * batchStride (stride 0 broadcasts).
void sgemmBatched(int64_t batch, int64_t M, int64_t N, int64_t K, float alpha,
                  const float* A, int64_t bsa, int64_t rsa, int64_t csa,
                  const float* B, int64_t bsb, int64_t rsb, int64_t csb,
                  float beta, float* C, int64_t bsc, int64_t rsc, int64_t csc);

// Peak fp32 FMA throughput of this machine in GFLOP/s with `threads` threads (microbenchmark).
double measurePeakGflops(int threads, double seconds);

}  // namespace qdm::cpu
