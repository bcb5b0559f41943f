// Index math shared by the 8-bit GEMM kernels (qgemm.cu) and the host-side layout emulator
// (qgemm_wgmma_check.cu), so that the emulator checks the very functions the kernels use.
// Everything here is constexpr and callable from host and device code.
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define QDM_HD __host__ __device__
#else
#define QDM_HD
#endif

namespace qdm::cuda::qglayout {

// ---- packed weights (qgemmPackWeights, 8-bit) -------------------------------------------------
// One 64-byte k tile of a 128-row panel is 16 blocks of 8 rows; lane l of a block stores 16 bytes
// at l * 16: row l / 4 of the block, k offsets (l % 4) * 4 + packedByteK(byte). Since l * 16 =
// (l / 4) * 64 + (l % 4) * 16, the tile is plain row-major [128 rows][64 bytes] with k permuted
// inside each row: byte p = 16q + 8s + 4h + j holds k = 32s + 16h + 4q + j.
QDM_HD constexpr int packedByteK(int lane, int byte) {
  return (lane & 3) * 4 + ((byte >> 3) & 1) * 32 + ((byte >> 2) & 1) * 16 + (byte & 3);
}

// Byte offset of k tile kt of panel `panel` in the packed buffer (K padded to KT tiles).
QDM_HD constexpr int64_t packedTileOffset(int64_t panel, int KT, int kt) { return (panel * KT + kt) * 128 * 64; }

// ---- activation tile in shared memory (both kernels) ------------------------------------------
// [rows][64 bytes], 16-byte chunk c of row r at chunk c ^ ((r >> 1) & 3): conflict-free for the
// ldmatrix phases of the mma.sync kernel, and the same pattern as the 64-byte wgmma swizzle.
QDM_HD constexpr int aTileOffset(int row, int chunk) { return row * 64 + ((chunk ^ ((row >> 1) & 3)) << 4); }

// ---- wgmma path (sm_90a) ------------------------------------------------------------------------
// B (weights) stage: a packed k tile copied row by row into the canonical K-major 64-byte-swizzle
// layout (8-row atoms of 8 x 64 bytes, 512 bytes apart; 16-byte chunk c of row r of an atom at
// c ^ ((r >> 1) & 3), i.e. byte-address bits [4,6) ^= bits [7,9) of a 512-byte-aligned atom).
// Because the layout is the packed one with chunks swizzled, one packed 16-byte chunk c of tile
// row r lands at bTileOffset(r, c).
QDM_HD constexpr int bTileOffset(int row, int chunk) { return aTileOffset(row, chunk); }
constexpr int kBAtomStride = 512;  // bytes between 8-row atoms (the descriptor's SBO)
constexpr int kBStepBytes = 32;    // one k32 step of 8-bit codes: 32 bytes of the permuted row

// Shared-memory matrix descriptor of wgmma (PTX ISA "Matrix Descriptor Format"): start address,
// leading byte offset (unused for swizzled K-major layouts; 1 by convention), stride byte offset
// (all >> 4), base offset 0 (atoms 512-byte aligned), swizzle mode 2 = 64 bytes in bits 62-63.
QDM_HD constexpr uint64_t bDescriptor(uint32_t smemStart) {
  return uint64_t((smemStart & 0x3FFFFu) >> 4) | (uint64_t(1) << 16) | (uint64_t(kBAtomStride >> 4) << 32) | (uint64_t(2) << 62);
}

// A (activations) from registers. Register r of the m64nNk32 A fragment of thread (warp w of the
// warpgroup, lane = 4g + t) holds rows 16w + g + 8 (r & 1), wgmma k 4t + 16 (r >> 1) + [0, 4).
// With B's k permutation that wgmma k is, for k step `step` of the 64-byte tile, the tile's k
// 16t + 8 step + 4 (r >> 1) + [0, 4): word aWord(step, r) of 16-byte chunk t of that row. One
// 16-byte load per row therefore feeds both k steps.
QDM_HD constexpr int aRow(int warp, int lane, int reg) { return warp * 16 + (lane >> 2) + (reg & 1) * 8; }
QDM_HD constexpr int aChunk(int lane) { return lane & 3; }
QDM_HD constexpr int aWord(int step, int reg) { return step * 2 + (reg >> 1); }

// Accumulator i of thread (warp w, lane = 4g + t) of m64nN: row 16w + g + 8 ((i / 2) % 2),
// column 8 (i / 4) + 2t + i % 2.
QDM_HD constexpr int accRow(int warp, int lane, int i) { return warp * 16 + (lane >> 2) + ((i >> 1) & 1) * 8; }
QDM_HD constexpr int accCol(int lane, int i) { return (i >> 2) * 8 + (lane & 3) * 2 + (i & 1); }

// ---- shared epilogue convention ------------------------------------------------------------------
// The epilogue takes a thread's accumulators as acc[mt][nt][h * 2 + e] at tile row rowL0 + 16 mt + 8 h
// and column colL0 + 8 nt + e. The wgmma fragment is that with one mt and N / 8 nt, rowL0 = its
// row of i = 0 and colL0 its column of i = 0; checked at compile time below.
QDM_HD constexpr int epiRow(int rowL0, int idx, int nt) { return rowL0 + (idx / (4 * nt)) * 16 + ((idx >> 1) & 1) * 8; }
QDM_HD constexpr int epiCol(int colL0, int idx, int nt) { return colL0 + ((idx / 4) % nt) * 8 + (idx & 1); }
constexpr bool accMatchesEpilogue(int n) {
  for (int w = 0; w < 4; ++w)
    for (int lane = 0; lane < 32; ++lane)
      for (int i = 0; i < n / 2; ++i)
        if (accRow(w, lane, i) != epiRow(accRow(w, lane, 0), i, n / 8) || accCol(lane, i) != epiCol(accCol(lane, 0), i, n / 8)) return false;
  return true;
}
static_assert(accMatchesEpilogue(128), "wgmma accumulator mapping must match the shared epilogue's indexing");

}  // namespace qdm::cuda::qglayout
