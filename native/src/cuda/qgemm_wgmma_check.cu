// Host-only emulator of the wgmma path's data layout (qgemm.cu, qgemmWgmmaKernel); no GPU needed.
//
// Kernel side, through the very helpers the kernel uses (qgemm_layout.h): weights are packed as
// packKernel packs them, a CTA's activation and weight k tiles are placed in a fake shared memory
// as its cp.async copies place them, the A registers are loaded as the kernel loads them, and the
// B descriptor is built as the kernel builds it.
// Hardware side, written from the definitions and not from those helpers: wgmma m64n128k32 for
// 8-bit types reads its A fragment per CUTLASS's ALayout_64x32 and B through the descriptor
// (PTX ISA "Matrix Descriptor Format": start / SBO / swizzle fields; canonical K-major layout with
// 64-byte swizzle = CUTLASS Layout_K_SW64_Atom: rows 64 bytes apart inside an 8-row atom, atoms SBO
// apart, then Swizzle<2,4,3> on the byte address), and leaves D per CUTLASS's CLayout_64xN. The
// accumulators are then read back through the kernel's (row, col) mapping and compared with a
// plain GEMM of the original codes.
// Both kinds (s8, e4m3) move the same bytes the same way, so the check runs on integer codes.
// mutation: 0 none; 1 B copied without the swizzle; 2 the A words of the two k steps swapped;
// 3 the B tile off the 512-byte grid. Each must produce mismatches, so the check has teeth.
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "cuda/qgemm_layout.h"
#include "qdm/cuda_quant.h"

namespace qdm::cuda {
namespace {
namespace L = qglayout;

// A CuTe layout of rank 3 per mode: coordinate i of a mode is taken colexicographically.
struct Mode { int shape[3]; int stride[3]; };
int apply(const Mode& m, int x) {
  int off = 0;
  for (int d = 0; d < 3; ++d) { off += (x % m.shape[d]) * m.stride[d]; x /= m.shape[d]; }
  return off;
}
// (thread, value) -> column-major index into the M x K (A) or M x N (C) tile of one warpgroup.
constexpr Mode kAThr{{4, 8, 4}, {256, 1, 16}}, kAVal{{4, 2, 2}, {64, 8, 1024}};  // ALayout_64x32 (8-bit)
constexpr Mode kCThr{{4, 8, 4}, {128, 1, 16}}, kCVal{{2, 2, 16}, {64, 8, 512}};  // CLayout_64xN, N = 128

struct Rng {
  uint32_t s;
  uint32_t next() { s ^= s << 13; s ^= s >> 17; s ^= s << 5; return s; }
  int code() { return int(next() % 255) - 127; }
};

// The byte wgmma reads for B[n][k] (k < 32) of one k32 step, from the descriptor alone.
int64_t bAddress(uint64_t desc, int n, int k) {
  const int64_t start = int64_t(desc & 0x3FFF) << 4, sbo = int64_t((desc >> 32) & 0x3FFF) << 4;
  const int64_t addr = start + (n / 8) * sbo + (n % 8) * 64 + k;  // 8 rows of 64 bytes per atom
  return addr ^ ((addr >> 3) & 0x30);                              // Swizzle<2,4,3>: bits [4,6) ^= bits [7,9)
}

}  // namespace

WgmmaLayoutReport qgemmWgmmaLayoutCheck(uint32_t seed, int mutation) {
  // Two CTA columns (panels) and two CTA rows' worth of M so panel and row offsets matter; K has a
  // partial last tile.
  constexpr int M = 200, N = 256, K = 200, BM = 128, BN = 128;
  const int KT = (K + 63) / 64;
  WgmmaLayoutReport rep;
  Rng rng{seed * 2654435761u + 1};
  std::vector<int8_t> A(size_t(M) * K), W(size_t(N) * K);
  for (auto& v : A) v = int8_t(rng.code());
  for (auto& v : W) v = int8_t(rng.code());

  // packKernel, 8-bit: flat lane c = ((panel * KT + kt) * 16 + block) * 32 + lane writes 16 bytes.
  const int panels = (N + 127) / 128;
  std::vector<uint8_t> packed(size_t(panels) * KT * 128 * 64);
  for (int64_t c = 0; c < int64_t(panels) * KT * 16 * 32; ++c) {
    const int lane = int(c & 31), block = int((c >> 5) & 15);
    const int64_t pk = c >> 9, kt = pk % KT, panel = pk / KT;
    const int64_t n = panel * 128 + block * 8 + (lane >> 2);
    for (int byte = 0; byte < 16; ++byte) {
      const int64_t k = kt * 64 + L::packedByteK(lane, byte);
      packed[size_t(c * 16 + byte)] = (n < N && k < K) ? uint8_t(W[size_t(n * K + k)]) : 0;
    }
  }

  // A fake shared memory: the stage's A tile at a 1024-aligned address (as the kernel aligns it),
  // its B tile right after. The swizzle acts on absolute address bits, so (mutation 3) a B tile
  // off the 512-byte grid must fail.
  const uint32_t kBase = mutation == 3 ? 0x2400 + 128 : 0x2400;
  constexpr uint32_t kBOff = BM * 64;
  std::vector<uint8_t> smem(kBOff + BN * 64);
  auto fail = [&](const std::string& msg) { if (rep.firstError.empty()) rep.firstError = msg; };

  for (int m0 = 0; m0 < M; m0 += BM)
    for (int n0 = 0; n0 < N; n0 += BN) {
      int32_t acc[2][128][64] = {};  // [warpgroup][thread][register], as the hardware leaves D
      for (int kt = 0; kt < KT; ++kt) {
        // loadATile / the kernel's B copy: 16-byte chunk c of tile row r.
        for (int r = 0; r < BM; ++r)
          for (int c = 0; c < 4; ++c)
            for (int b = 0; b < 16; ++b) {
              const int64_t m = m0 + r, k = int64_t(kt) * 64 + c * 16 + b;
              smem[L::aTileOffset(r, c) + b] = (m < M && k < K) ? uint8_t(A[size_t(m * K + k)]) : 0;
            }
        const uint8_t* src = packed.data() + L::packedTileOffset(n0 / 128, KT, kt);
        for (int c = 0; c < BN * 4; ++c) {
          const int off = mutation == 1 ? (c >> 2) * 64 + (c & 3) * 16 : L::bTileOffset(c >> 2, c & 3);  // 1: no swizzle
          std::memcpy(&smem[kBOff + off], src + c * 16, 16);
        }
        for (int wg = 0; wg < 2; ++wg)
          for (int step = 0; step < 2; ++step) {
            // Registers as the kernel loads them, then the A operand as wgmma reads those registers.
            int8_t a[64][32];
            for (int t = 0; t < 128; ++t) {
              const int warp = t >> 5, lane = t & 31;
              for (int r = 0; r < 4; ++r) {
                const int row = wg * 64 + L::aRow(warp, lane, r);
                const int word = L::aWord(mutation == 2 ? 1 - step : step, r);  // 2: k steps swapped
                const uint8_t* reg = &smem[L::aTileOffset(row, L::aChunk(lane)) + 4 * word];
                for (int j = 0; j < 4; ++j) {
                  const int idx = apply(kAThr, t) + apply(kAVal, r * 4 + j);
                  a[idx % 64][idx / 64] = int8_t(reg[j]);
                }
              }
            }
            const uint64_t desc = L::bDescriptor(kBase + kBOff + step * L::kBStepBytes);
            if ((desc >> 62) != 2 || ((desc >> 49) & 7) != 0) fail("descriptor: expected 64-byte swizzle with base offset 0");
            for (int t = 0; t < 128; ++t)
              for (int v = 0; v < 64; ++v) {
                const int idx = apply(kCThr, t) + apply(kCVal, v), m = idx % 64, n = idx / 64;
                int32_t s = 0;
                for (int k = 0; k < 32; ++k) {
                  const int64_t addr = bAddress(desc, n, k) - kBase;
                  if (addr < kBOff || addr >= int64_t(smem.size())) { fail("descriptor reads outside the B stage"); continue; }
                  s += int32_t(a[m][k]) * int32_t(int8_t(smem[size_t(addr)]));
                }
                acc[wg][t][v] += s;
              }
          }
      }
      // The kernel's epilogue mapping against a plain GEMM.
      for (int wg = 0; wg < 2; ++wg)
        for (int t = 0; t < 128; ++t)
          for (int v = 0; v < 64; ++v) {
            const int64_t row = m0 + wg * 64 + L::accRow(t >> 5, t & 31, v), col = n0 + L::accCol(t & 31, v);
            if (row >= M || col >= N) continue;
            int32_t ref = 0;
            for (int k = 0; k < K; ++k) ref += int32_t(A[size_t(row * K + k)]) * int32_t(W[size_t(col * K + k)]);
            ++rep.outputs;
            if (acc[wg][t][v] != ref) {
              if (rep.mismatches++ == 0)
                fail("out[" + std::to_string(row) + ", " + std::to_string(col) + "] = " + std::to_string(acc[wg][t][v]) + ", expected " + std::to_string(ref));
            }
          }
    }
  return rep;
}

}  // namespace qdm::cuda
