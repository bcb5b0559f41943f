// Launchers of the CUDA quant family: fake quantization with LSQ gradients, integer packing,
// and the 8-bit tensor-core GEMM (W8A8 int8, W4A8 int8, fp8 e4m3, W4 -> e4m3) with its weight
// pack and activation-quantize kernels. Implemented in src/cuda/quant.cu and src/cuda/qgemm.cu;
// called by src/binding/bind_cuda_quant.cpp (host compiler: no CUDA header here).
//
// Every launcher enqueues on currentStream(), never synchronises and never reads device memory
// on the host, so a forward can be captured into a CUDA graph.
#pragma once
#include <cstdint>
#include <string>

#include "qdm/view.h"

namespace qdm::cuda {

// Same meaning as qdm::cpu::QuantLayout (qdm/quant.h): mode 0 tensor, 1 channel, 2 group, 3 separable.
struct FakeQuantLayout {
  int mode = 0;
  int64_t n = 0, channels = 1, inner = 1, groupSize = 1, cols = 1;
  int64_t params() const;
};

// x / gradOut / out / gradX: f32, f16 or bf16, contiguous; scale, colScale, zero and the
// parameter gradients: f32 contiguous. Null views (data == nullptr) are absent operands.
void fakeQuantForward(const View& x, const float* scale, const float* colScale, const float* zero, const View& out,
                      const FakeQuantLayout& L, float qmin, float qmax);
void fakeQuantBackward(const View& x, const float* scale, const float* colScale, const float* zero, const View& gradOut,
                       const View& gradX, float* gradScale, float* gradColScale, float* gradZero, const FakeQuantLayout& L,
                       float qmin, float qmax);
// codes: i8, u8 or packed i4 (low nibble first), contiguous, n elements.
void quantizePack(const View& x, const float* scale, const float* colScale, const float* zero, const View& codes,
                  const FakeQuantLayout& L, float qmin, float qmax);
void dequantize(const View& codes, const float* scale, const float* colScale, const float* zero, const View& out,
                const FakeQuantLayout& L);

// ---- 8-bit GEMM (qgemm.cu) ---------------------------------------------------------------
// out[t, o] = sa[t] * sw[o] * sum_k (qa[t,k] - za[t]) (qw[o,k] - zw[o]) + (XA B)[t, o] + bias[o]
// Weights are packed once (qgemmPackWeights) into the fragment order of mma.m16n8k32: panels of
// 128 output rows, K padded to 64; per (panel, 64-wide k tile) 16 blocks of 8 rows, each block
// 32 lanes x 16 bytes (8-bit) or 32 lanes x 8 bytes (4-bit, unsigned nibbles code + 8).
constexpr int kQgPanelN = 128;
constexpr int kQgTileK = 64;
int64_t qgemmPackedBytes(int64_t n, int64_t k, int bits);

// codes: i8 [n, k] (bits 8), i4 [n, k] (bits 4) or f8e4m3 [n, k] (bits 8, fp8 path), contiguous.
// rowSums (int32 [n], may be null): sum_k code (integer codes only).
void qgemmPackWeights(const View& codes, int bits, uint8_t* packed, int32_t* rowSums);

enum class QgemmKind : int { Int8 = 0, Fp8 = 1 };

struct QgemmArgs {
  QgemmKind kind = QgemmKind::Int8;
  int wbits = 8;              // 8 or 4
  const void* a = nullptr;    // activation codes [M, K], row stride lda (bytes): i8 or e4m3
  int64_t M = 0, N = 0, K = 0, lda = 0;
  const uint8_t* packed = nullptr;  // qgemmPackWeights output
  const int32_t* wRowSums = nullptr;  // [N]; needed only with aZero
  const float* aScale = nullptr;  // aScale[t * aScaleStride]
  const float* aZero = nullptr;   // aZero[t * aScaleStride] or null (integer-valued; int8 only)
  int64_t aScaleStride = 1;       // 1 per token, 0 per tensor
  const float* wScale = nullptr;  // [N]
  const float* wZero = nullptr;   // [N] or null (integer-valued; int8 only)
  View bias;                      // [N] f32/f16/bf16, data null when absent
  View lowXA;                     // [M, r] f32/f16/bf16 contiguous, data null when absent
  View lowB;                      // [r, N] f32/f16/bf16 contiguous
  View out;                       // [M, N] (row stride = out.strides[0]) f32/f16/bf16
};
// Throws KernelError("QDM_UNSUPPORTED", ...) for fp8 on a device below sm_89.
void qgemm(const QgemmArgs& args);

// Which kernel W8 GEMMs take: "mma" (mma.sync, the default everywhere) or "wgmma" (Hopper,
// sm_90a; opt-in because it has not yet run on a GPU). path: "auto" (wgmma only when the device
// is sm_90 and QDM_QGEMM_WGMMA=1, read once), "mma", "wgmma" (QDM_UNSUPPORTED unless sm_90), or
// null to only ask. Returns the path now in effect on the current device. Process-wide.
const char* qgemmCudaPath(const char* path);

// Host-only emulation of the wgmma path's data layout (qgemm_wgmma_check.cu): packs random
// weights as qgemmPackWeights does, stages them and the activations as the kernel does, runs
// wgmma as the PTX ISA defines it on those bytes and compares with a plain GEMM. mutation != 0
// deliberately breaks one layout fact (the check must then fail). Returns mismatching outputs.
struct WgmmaLayoutReport { int64_t outputs = 0, mismatches = 0; std::string firstError; };
WgmmaLayoutReport qgemmWgmmaLayoutCheck(uint32_t seed, int mutation);

// Activation quantization of x [T, K] (f32/f16/bf16, contiguous) into codes [T, K] (i8 or f8e4m3,
// row stride = codes.strides[0]), scaleOut/zeroOut f32 [T] (zeroOut may be null for fp8):
//   int8 static:  code = clamp(rne(x / fp32(scale * col[k])) + zero, qmin, qmax) - shift,
//                 shift = 128 when qmax > 127; scaleOut[t] = scale, zeroOut[t] = zero - shift;
//   int8 dynamic: r_t = max_k |x / col[k]| / qmax (1 for an all-zero row),
//                 code = clamp(rne(x / fp32(r_t * col[k])), -qmax, qmax); scaleOut = r_t, zeroOut = 0;
//   fp8 (always dynamic): r_t = max_k |x / col[k]| / 448 (1 for zero rows), code = e4m3_rn(x / fp32(r_t * col[k])).
// col may be null (factor 1).
void quantizeActivations(const View& x, int64_t T, int64_t K, bool dynamic, float scale, float zero, float qmin,
                         float qmax, const float* col, const View& codes, float* scaleOut, float* zeroOut);

}  // namespace qdm::cuda
