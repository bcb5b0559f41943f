// Fused CPU attention (see qdm/attention.h). One task = one (batch item, block of QB query rows).
// For each block of KB keys the task computes S = scale * Q K^T into a thread-local tile
// (sgemmSerial, packed and cache-resident), adds the mask, updates the running row max m and
// row sum l, turns S into P = exp(S - m) in place, rescales the output rows by exp(m_old - m)
// and accumulates O += P V (sgemmSerial with beta = 1). The output rows are the accumulator, so
// nothing [Lq, Lk]-sized is ever allocated. Division by l happens once at the end.
//
// Determinism: each output row belongs to exactly one task and every task runs its key blocks
// in a fixed order, so results are bit-identical for any thread count.
// Fully masked rows (every score -inf) have l = 0 and come out as zeros. PyTorch returns NaN
// there; zeros keep a masked-out padding row from poisoning everything downstream.
#include "qdm/attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "cpu/gemm_internal.h"
#include "qdm/cpu.h"
#include "qdm/parallel.h"

namespace qdm::cpu {
namespace attn {
float rowMaxAvx2(const float* s, int64_t n);
float expSubSumAvx2(float* s, int64_t n, float m);
}  // namespace attn

namespace {

// Query rows per task and keys per step. The S tile (QB x KB floats, 128 KiB) stays in L2; 128
// rows amortise the per-task packing of each K and V block (64 rows measured ~20 % slower).
constexpr int64_t QB = 128;
constexpr int64_t KB = 256;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

float rowMaxScalar(const float* s, int64_t n) {
  float r = kNegInf;
  for (int64_t j = 0; j < n; ++j) r = s[j] > r ? s[j] : r;
  return r;
}
float expSubSumScalar(float* s, int64_t n, float m) {
  float sum = 0.0f;
  for (int64_t j = 0; j < n; ++j) { s[j] = std::exp(s[j] - m); sum += s[j]; }
  return sum;
}

std::string shapeOf(const View& v) {
  std::string s = "[";
  for (int i = 0; i < v.ndim; ++i) s += (i ? "," : "") + std::to_string(v.shape[i]);
  return s + "]";
}

[[noreturn]] void bad(const std::string& msg) { throw KernelError("QDM_SHAPE_MISMATCH", "attentionForward: " + msg); }

// Element offsets of every batch item (the leading ndim-2 dims) of a view.
std::vector<int64_t> batchOffsets(const View& v, int64_t batch) {
  const int nb = v.ndim - 2;
  std::vector<int64_t> off(static_cast<size_t>(batch));
  for (int64_t b = 0; b < batch; ++b) {
    int64_t rem = b, o = 0;
    for (int d = nb - 1; d >= 0; --d) { o += (rem % v.shape[d]) * v.strides[d]; rem /= v.shape[d]; }
    off[static_cast<size_t>(b)] = o;
  }
  return off;
}

}  // namespace

void attentionForward(const View& q, const View& k, const View& v, const View* mask, const View& out, float scale) {
  const View* all[] = {&q, &k, &v, &out, mask};
  const char* names[] = {"q", "k", "v", "out", "mask"};
  const int nd = q.ndim;
  if (nd < 2) bad("operands must be at least 2-d, got q " + shapeOf(q));
  for (int i = 0; i < 5; ++i) {
    if (!all[i]) continue;
    if (all[i]->dtype != DType::F32) throw KernelError("QDM_DTYPE", std::string("attentionForward: ") + names[i] + " must be f32, got " + dtypeName(all[i]->dtype));
    if (all[i]->ndim != nd) bad(std::string(names[i]) + " " + shapeOf(*all[i]) + " has a different rank from q " + shapeOf(q));
    for (int d = 0; d < nd - 2; ++d)
      if (all[i]->shape[d] != q.shape[d]) bad(std::string(names[i]) + " " + shapeOf(*all[i]) + " and q " + shapeOf(q) + " have different batch shapes");
  }
  const int64_t Lq = q.shape[nd - 2], D = q.shape[nd - 1], Lk = k.shape[nd - 2], Dv = v.shape[nd - 1];
  if (k.shape[nd - 1] != D || v.shape[nd - 2] != Lk || out.shape[nd - 2] != Lq || out.shape[nd - 1] != Dv)
    bad("q " + shapeOf(q) + ", k " + shapeOf(k) + ", v " + shapeOf(v) + ", out " + shapeOf(out) + " do not agree");
  if (mask && (mask->shape[nd - 2] != Lq || mask->shape[nd - 1] != Lk)) bad("mask " + shapeOf(*mask) + " is not [..., Lq, Lk] for q " + shapeOf(q) + ", k " + shapeOf(k));
  if (!out.contiguous()) throw KernelError("QDM_BAD_ARGUMENT", "attentionForward: out must be contiguous");

  int64_t batch = 1;
  for (int d = 0; d < nd - 2; ++d) batch *= q.shape[d];
  if (batch == 0 || Lq == 0 || Dv == 0) return;
  float* op = out.ptr<float>();
  if (Lk == 0) { std::fill(op, op + batch * Lq * Dv, 0.0f); return; }

  const auto qOff = batchOffsets(q, batch), kOff = batchOffsets(k, batch), vOff = batchOffsets(v, batch);
  const auto mOff = mask ? batchOffsets(*mask, batch) : std::vector<int64_t>();
  const int64_t qrs = q.strides[nd - 2], qcs = q.strides[nd - 1], krs = k.strides[nd - 2], kcs = k.strides[nd - 1];
  const int64_t vrs = v.strides[nd - 2], vcs = v.strides[nd - 1];
  const int64_t mrs = mask ? mask->strides[nd - 2] : 0, mcs = mask ? mask->strides[nd - 1] : 0;
  const float *qp = q.ptr<float>(), *kp = k.ptr<float>(), *vp = v.ptr<float>(), *mp = mask ? mask->ptr<float>() : nullptr;
  const bool avx2 = hasAvx2();
  auto rowMax = avx2 ? attn::rowMaxAvx2 : rowMaxScalar;
  auto expSubSum = avx2 ? attn::expSubSumAvx2 : expSubSumScalar;
  const int64_t nqb = (Lq + QB - 1) / QB;

  parallelTasks(batch * nqb, [&](int64_t task) {
    const int64_t b = task / nqb, i0 = (task % nqb) * QB, mb = std::min(QB, Lq - i0);
    thread_local std::vector<float> tile;
    if (tile.size() < static_cast<size_t>(QB * KB)) tile.resize(static_cast<size_t>(QB * KB));
    float* S = tile.data();
    float m[QB], l[QB];
    std::fill(m, m + mb, kNegInf);
    std::fill(l, l + mb, 0.0f);
    float* O = op + (b * Lq + i0) * Dv;
    std::fill(O, O + mb * Dv, 0.0f);
    const float* Q = qp + qOff[b] + i0 * qrs;
    for (int64_t j0 = 0; j0 < Lk; j0 += KB) {
      const int64_t nk = std::min(KB, Lk - j0);
      // S[mb, nk] = scale * Q[mb, D] K[j0:j0+nk, D]^T
      gemm::sgemmSerial(mb, nk, D, scale, Q, qrs, qcs, kp + kOff[b] + j0 * krs, kcs, krs, 0.0f, S, KB, 1);
      if (mp) {
        const float* M = mp + mOff[b] + i0 * mrs + j0 * mcs;
        for (int64_t r = 0; r < mb; ++r) {
          float* s = S + r * KB;
          const float* mr = M + r * mrs;
          if (mcs == 1) for (int64_t j = 0; j < nk; ++j) s[j] += mr[j];
          else for (int64_t j = 0; j < nk; ++j) s[j] += mr[j * mcs];
        }
      }
      for (int64_t r = 0; r < mb; ++r) {
        float* s = S + r * KB;
        const float mNew = std::max(m[r], rowMax(s, nk));
        if (mNew == kNegInf) {  // every key so far masked: contributes nothing
          std::fill(s, s + nk, 0.0f);
          continue;
        }
        const float alpha = m[r] == kNegInf ? 0.0f : std::exp(m[r] - mNew);
        const float rowSum = expSubSum(s, nk, mNew);
        l[r] = l[r] * alpha + rowSum;
        if (alpha != 1.0f) {
          float* o = O + r * Dv;
          for (int64_t c = 0; c < Dv; ++c) o[c] *= alpha;
        }
        m[r] = mNew;
      }
      // O[mb, Dv] += P[mb, nk] V[j0:j0+nk, Dv]
      gemm::sgemmSerial(mb, Dv, nk, 1.0f, S, KB, 1, vp + vOff[b] + j0 * vrs, vrs, vcs, 1.0f, O, Dv, 1);
    }
    for (int64_t r = 0; r < mb; ++r) {
      const float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
      float* o = O + r * Dv;
      for (int64_t c = 0; c < Dv; ++c) o[c] *= inv;
    }
  });
}

}  // namespace qdm::cpu
