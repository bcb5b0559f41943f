// Fused (flash-style) CPU attention: softmax(q k^T * scale + mask) v without materialising the
// [Lq, Lk] score matrix. Query blocks walk key blocks with an online softmax (running row max
// and sum, the accumulator rescaled when the max grows), so memory stays O(block) and the two
// products run as packed GEMMs on cache-resident tiles.
#pragma once
#include "qdm/view.h"

namespace qdm::cpu {
// q [..., Lq, D], k [..., Lk, D], v [..., Lk, Dv], mask [..., Lq, Lk] (additive, or null),
// out [..., Lq, Dv]. All f32, the same rank, and the same batch shape `...` (broadcast operands
// carry stride 0); q, k, v and mask take any strides, out must be contiguous.
// Rows whose keys are all masked (-inf) come out as zeros, not NaN.
// Each output row is computed by one task in a fixed order: bits do not depend on the thread count.
void attentionForward(const View& q, const View& k, const View& v, const View* mask, const View& out, float scale);
}  // namespace qdm::cpu
