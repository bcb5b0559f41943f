// CUDA launchers of the nn family (src/cuda/norm.cu, softmax.cu, attention.cu), called by
// src/binding/bind_cuda_nn.cpp with the CPU bindings' argument lists (bind_nn.cpp,
// bind_attention.cpp). Operands are device views (data == nullptr for an absent optional one);
// every float operand may be f32, f16 or bf16, math runs in f32; work goes on currentStream().
#pragma once
#include <cstdint>

#include "qdm/view.h"

namespace qdm::cuda {

// x, y [N, C, S] contiguous; w, b [C] or absent; mean, rstd [N, G] (written).
// silu: y = silu(groupnorm(x)) (the fused groupNormSiluForward; mean/rstd as without it).
void groupNormForward(const View& x, const View& w, const View& b, const View& y, const View& mean, const View& rstd, int64_t G, float eps, bool silu);
// gx [N, C, S]; gw, gb [C] or absent (reduced deterministically, no atomics).
void groupNormBackward(const View& x, const View& gy, const View& w, const View& mean, const View& rstd, const View& gx, const View& gw, const View& gb, int64_t G);
// x, y [M, D] contiguous; w, b [D] or absent; mean, rstd [M].
void layerNormForward(const View& x, const View& w, const View& b, const View& y, const View& mean, const View& rstd, float eps);
void layerNormBackward(const View& x, const View& gy, const View& w, const View& mean, const View& rstd, const View& gx, const View& gw, const View& gb);
// Row softmax (or log-softmax) of x [M, D] into y; backward from y and gy into gx.
void softmaxForward(const View& x, const View& y, bool log);
void softmaxBackward(const View& y, const View& gy, const View& gx, bool log);

// softmax(q k^T * scale + mask) v: q [..., Lq, D], k [..., Lk, D], v [..., Lk, Dv], mask
// [..., Lq, Lk] additive (data == nullptr: none), out [..., Lq, Dv] contiguous; same rank and
// batch shape (stride-0 batch dims broadcast); q, k, v, mask any strides. D, Dv <= 160.
// Tensor cores (mma.sync m16n8k16, f32 accumulation): f16 or bf16 operands run as they are;
// f32 (or mixed) operands are converted to f16 first. Fully masked rows give zeros, as on the CPU.
// lse (data == nullptr: not wanted): f32 contiguous [batch * Lq], the natural-log log-sum-exp of
// each row's scaled, masked scores (+inf for a fully masked row, -inf with no keys), for the
// backward.
constexpr int64_t kAttentionMaxHeadDim = 160;
void attentionForward(const View& q, const View& k, const View& v, const View& mask, const View& out, const View& lse, float scale);
// Gradients of attentionForward (flash-attention-2 backward, P recomputed from lse): gq, gk, gv
// contiguous, shaped like q, k, v with the full batch shape (a caller with broadcast operands sums
// over the broadcast dims itself), any float dtype. gradOut like out, any strides. No gradient
// for the mask. Deterministic (no atomics).
void attentionBackward(const View& q, const View& k, const View& v, const View& mask, const View& out, const View& gradOut, const View& lse,
                       const View& gq, const View& gk, const View& gv, float scale);

}  // namespace qdm::cuda
