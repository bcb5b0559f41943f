// Counter-based random numbers (Philox4x32-10, Salmon et al. 2011). Element i of a call
// depends only on (seed, offset + i), so results are identical for any thread count, and the
// same stream can be reproduced on the GPU.
#include <cmath>

#include "qdm/cpu.h"
#include "qdm/opcodes.h"
#include "qdm/parallel.h"

namespace qdm::cpu {
namespace {

struct U4 { uint32_t v[4]; };

inline U4 philox(uint64_t counter, uint64_t seed) {
  uint32_t c0 = static_cast<uint32_t>(counter), c1 = static_cast<uint32_t>(counter >> 32), c2 = 0, c3 = 0;
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int r = 0; r < 10; ++r) {
    uint64_t p0 = static_cast<uint64_t>(0xD2511F53u) * c0;
    uint64_t p1 = static_cast<uint64_t>(0xCD9E8D57u) * c2;
    uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ c1 ^ k0;
    uint32_t n1 = static_cast<uint32_t>(p1);
    uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ c3 ^ k1;
    uint32_t n3 = static_cast<uint32_t>(p0);
    c0 = n0; c1 = n1; c2 = n2; c3 = n3;
    k0 += 0x9E3779B9u; k1 += 0xBB67AE85u;
  }
  return {{c0, c1, c2, c3}};
}

// (0, 1]: never 0, so log() in Box-Muller is finite.
inline double unitOpen(uint32_t a, uint32_t b) {
  uint64_t bits = (static_cast<uint64_t>(a) << 21) ^ static_cast<uint64_t>(b >> 11);
  bits &= (1ull << 53) - 1;
  return (static_cast<double>(bits) + 1.0) * (1.0 / 9007199254740992.0);
}

}  // namespace

void random(int dist, const View& out, uint64_t seed, uint64_t offset, float p0, float p1) {
  if (out.dtype != DType::F32 || !out.contiguous()) throw KernelError("QDM_BAD_ARGUMENT", "random: output must be contiguous f32");
  float* o = out.ptr<float>();
  parallelFor(out.numel(), 1 << 14, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      U4 r = philox(offset + static_cast<uint64_t>(i), seed);
      if (dist == RNG_UNIFORM) {
        double u = unitOpen(r.v[0], r.v[1]) - 0x1p-53;  // [0, 1)
        o[i] = static_cast<float>(p0 + (p1 - p0) * u);
      } else {
        double u1 = unitOpen(r.v[0], r.v[1]), u2 = unitOpen(r.v[2], r.v[3]);
        double z = std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
        o[i] = static_cast<float>(p0 + p1 * z);
      }
    }
  });
}

}  // namespace qdm::cpu
