// Counter-based random numbers on the GPU with exactly the CPU's mapping (cpu/random.cpp):
// Philox4x32-10, counter = offset + i (low word c0, high word c1, c2 = c3 = 0), key = the
// 64-bit seed (k0 low, k1 high); uniform from (a << 21) ^ (b >> 11) as 53 bits, Box-Muller in
// double. The same (seed, offset) gives the same numbers on both devices (up to the last bit of
// the double log/cos, which CUDA's libdevice and glibc may round differently).
#include <string>

#include "cuda/ew_common.cuh"
#include "qdm/cuda_elementwise.h"
#include "qdm/opcodes.h"

namespace qdm::cuda {
namespace {
using namespace ew;

struct U4 { uint32_t v[4]; };

__device__ __forceinline__ U4 philox(unsigned long long counter, unsigned long long seed) {
  uint32_t c0 = static_cast<uint32_t>(counter), c1 = static_cast<uint32_t>(counter >> 32), c2 = 0, c3 = 0;
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
#pragma unroll
  for (int r = 0; r < 10; ++r) {
    unsigned long long p0 = static_cast<unsigned long long>(0xD2511F53u) * c0;
    unsigned long long p1 = static_cast<unsigned long long>(0xCD9E8D57u) * c2;
    uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ c1 ^ k0;
    uint32_t n1 = static_cast<uint32_t>(p1);
    uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ c3 ^ k1;
    uint32_t n3 = static_cast<uint32_t>(p0);
    c0 = n0; c1 = n1; c2 = n2; c3 = n3;
    k0 += 0x9E3779B9u; k1 += 0xBB67AE85u;
  }
  U4 out;
  out.v[0] = c0; out.v[1] = c1; out.v[2] = c2; out.v[3] = c3;
  return out;
}

// (0, 1]: never 0, so log() in Box-Muller is finite.
__device__ __forceinline__ double unitOpen(uint32_t a, uint32_t b) {
  unsigned long long bits = (static_cast<unsigned long long>(a) << 21) ^ static_cast<unsigned long long>(b >> 11);
  bits &= (1ull << 53) - 1;
  return (static_cast<double>(bits) + 1.0) * (1.0 / 9007199254740992.0);
}

__global__ void randomKernel(int dist, int64_t n, float* out, unsigned long long seed, unsigned long long offset, float p0, float p1) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    U4 r = philox(offset + static_cast<unsigned long long>(i), seed);
    if (dist == RNG_UNIFORM) {
      double u = unitOpen(r.v[0], r.v[1]) - 0x1p-53;  // [0, 1)
      // Same expression and types as the CPU (float p0/p1 promoted to double), without FMA contraction.
      out[i] = static_cast<float>(__dadd_rn(static_cast<double>(p0), __dmul_rn(static_cast<double>(p1 - p0), u)));
    } else {
      double u1 = unitOpen(r.v[0], r.v[1]), u2 = unitOpen(r.v[2], r.v[3]);
      double z = sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
      out[i] = static_cast<float>(__dadd_rn(static_cast<double>(p0), __dmul_rn(static_cast<double>(p1), z)));
    }
  }
}
}  // namespace

void random(int dist, const View& out, uint64_t seed, uint64_t offset, float p0, float p1) {
  if (out.dtype != DType::F32 || !out.contiguous()) throw KernelError("QDM_BAD_ARGUMENT", "random: output must be contiguous f32");
  if (dist != RNG_UNIFORM && dist != RNG_NORMAL) throw KernelError("QDM_BAD_ARGUMENT", "random: unknown distribution " + std::to_string(dist));
  const int64_t n = out.numel();
  if (n == 0) return;
  randomKernel<<<gridFor(n), kThreads, 0, stream()>>>(dist, n, out.ptr<float>(), seed, offset, p0, p1);
  checkLaunch("random");
}
}  // namespace qdm::cuda
