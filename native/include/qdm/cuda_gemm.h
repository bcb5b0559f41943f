// CUDA matmul and conv2d launchers (src/cuda/gemm.cu, src/cuda/conv.cu), called by
// src/binding/bind_cuda_gemm.cpp with the argument lists of the CPU bindings (bind_gemm.cpp,
// bind_conv.cpp). Operands are device views; the work is enqueued on currentStream().
#pragma once
#include <cstdint>

#include "qdm/view.h"

namespace qdm::cuda {

// How f32 x f32 products run: Tensor = TF32 tensor cores (default; relative error about 3e-4),
// Simt = exact fp32 FMA (slow; for tests and for callers that need full precision). f16/bf16
// operands always use the f16/bf16 tensor cores unless Simt is forced.
enum class GemmMode { Auto = 0, Simt = 1 };
void setGemmMode(GemmMode m);
GemmMode gemmMode();

// out[b] = alpha * a[b] @ b[b] + beta * out[b] for 3-d views a [B,M,K], b [B,K,N], out [B,M,N]
// with any strides (batch stride 0 broadcasts); beta == 0 never reads out. a and b f32, f16 or
// bf16 (of different dtypes: both computed in f32 / TF32, as the CPU computes in f32); out f32,
// f16 or bf16.
void matmul(const View& a, const View& b, const View& out, float alpha, float beta);

struct ConvParams { int64_t strideH = 1, strideW = 1, padH = 0, padW = 0, dilH = 1, dilW = 1, groups = 1; };
// NCHW, contiguous operands, every one f32, f16 or bf16; two inputs of different dtypes are
// computed in f32 (as on the CPU); bias (data == nullptr when absent) any float dtype.
void conv2dForward(const View& x, const View& w, const View& bias, const View& y, const ConvParams& p);
void conv2dBackwardInput(const View& gy, const View& w, const View& gx, const ConvParams& p);
void conv2dBackwardWeight(const View& x, const View& gy, const View& gw, const ConvParams& p);

}  // namespace qdm::cuda
