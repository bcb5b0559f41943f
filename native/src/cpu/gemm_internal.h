// Internal interface between the portable GEMM driver (gemm.cpp) and the ISA-specific
// micro-kernels (gemm_avx2.cpp, gemm_avx512.cpp, scalar in gemm.cpp). A micro-kernel
// computes one MR x NR tile from packed panels:
//   a: MR x kc, stored k-major (a[k*MR + i]), alpha already applied, rows past M zero-padded;
//   b: kc x NR, stored k-major (b[k*NR + j]), columns past N zero-padded; both 64-byte aligned;
//   writes the top-left m x n of the tile: C = acc + beta*C (beta == 0: C is write-only).
#pragma once
#include <cstdint>

namespace qdm::cpu::gemm {

using MicroKernel = void (*)(int64_t kc, const float* a, const float* b, float* c, int64_t rsc,
                             int64_t csc, float beta, int m, int n);

struct KernelDesc {
  const char* name;
  int mr, nr;      // register tile
  int mc, kc, nc;  // cache blocks: A block mc x kc in L2, B micro-panel kc x nr in L1
  MicroKernel ukernel;
};

KernelDesc avx2Kernel();
KernelDesc avx512Kernel();
double peakAvx2(int threads, double seconds);
double peakAvx512(int threads, double seconds);

// The kernel the driver uses on this machine (avx512 > avx2 > scalar), chosen once.
const KernelDesc& activeKernel();
// Override for tests: "avx512", "avx2", "scalar"; returns false if not usable here.
bool forceKernel(const char* name);

// sgemm without touching the thread pool: for callers that already run inside parallelTasks
// (batched GEMM on small matrices, convolution over batch x groups). Same results as sgemm.
void sgemmSerial(int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t rsa,
                 int64_t csa, const float* B, int64_t rsb, int64_t csb, float beta, float* C,
                 int64_t rsc, int64_t csc);

}  // namespace qdm::cpu::gemm
