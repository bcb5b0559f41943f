// Strided GEMM entry shared by matmul (gemm.cu) and the conv backward passes (conv.cu).
#pragma once
#include <cstdint>

#include "qdm/view.h"

namespace qdm::cuda::gemm {
// C[z][m,n] = alpha * sum_k A[z][m,k] B[z][k,n] + beta * C[z][m,n], element (z,m,k) of A at
// a + z*bsa + m*rsa + k*csa (elements), likewise B and C. Picks the tensor-core kernel (packing
// operands that are neither K- nor M/N-contiguous, or not 16-byte aligned, into a workspace;
// mixed operand dtypes run in TF32 on operands widened to f32) or the SIMT kernel (K == 0, or
// GemmMode::Simt).
struct GemmDesc {
  int64_t batch = 1, M = 0, N = 0, K = 0;
  const void* a = nullptr; DType at = DType::F32; int64_t bsa = 0, rsa = 0, csa = 0;
  const void* b = nullptr; DType bt = DType::F32; int64_t bsb = 0, rsb = 0, csb = 0;
  void* c = nullptr; DType ct = DType::F32; int64_t bsc = 0, rsc = 0, csc = 0;
  float alpha = 1.0f, beta = 0.0f;
};
void runGemm(const GemmDesc& d);
}  // namespace qdm::cuda::gemm
