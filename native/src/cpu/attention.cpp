// Fused CPU attention (see qdm/attention.h). One task = one (batch item, block of up to 256 query rows).
//
// The products run on the GEMM micro-kernel (cpu/gemm_internal.h) with packing done here, laid
// out so that nothing is packed twice and the score tile never needs a packing pass:
//   * Q^T (scaled) is packed once per task as the B operand of S^T = K Q^T, in nr-query panels;
//   * per block of KB keys, K is packed as the A operand (mr-key panels) and S^T is written by
//     the micro-kernel straight into [query panel][key][nr] order, which is exactly the packed
//     B operand of the second product, O^T += V^T P^T (A = V^T packed per key block);
//   * in that layout each query is one SIMD lane, so the online softmax (column max, exp(s - m),
//     column sum, rescaling of O^T by exp(m_old - m_new)) is plain vector code along keys;
//   * O^T lives in a task-local [Dv, QB] tile and is divided by the row sums and transposed
//     into the output once at the end. Nothing [Lq, Lk]-sized is ever allocated.
//
// Determinism: each output row belongs to exactly one task and every task runs its key blocks
// in a fixed order, so results are bit-identical for any thread count.
// Fully masked rows (every score -inf) have a zero row sum and come out as zeros. PyTorch
// returns NaN there; zeros keep a masked-out padding row from poisoning everything downstream.
#include "qdm/attention.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "cpu/gemm_internal.h"
#include "qdm/cpu.h"
#include "qdm/parallel.h"

namespace qdm::cpu {
namespace attn {
void colMaxAvx2(const float* s, int64_t rows, int W, float* m);
void expSubColsAvx2(float* s, int64_t rows, int W, const float* shift, float* sum);
}  // namespace attn

namespace {

// Keys per step. The score tile (up to 256 x 256 floats, 256 KiB) stays in L2.
constexpr int64_t KB = 256;
// Query rows per task: large blocks amortise the per-task packing of each K and V block (1 thread,
// L = 1024, D = 40: 64 rows 37, 128 rows 46 (with sgemmSerial), 256 rows 61 GFLOP/s), small ones
// give enough tasks to spread over the threads. Chosen from the shape alone; the result does not
// depend on it anyway (each score and output element is computed the same way in any block).
int64_t queryBlock(int64_t batch, int64_t Lq) {
  for (int64_t qb : {256, 128})
    if (batch * ((Lq + qb - 1) / qb) >= 16) return qb;
  return 64;
}
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

inline int64_t roundUp(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

void colMaxScalar(const float* s, int64_t rows, int W, float* m) {
  for (int64_t j = 0; j < rows; ++j)
    for (int c = 0; c < W; ++c) m[c] = s[j * W + c] > m[c] ? s[j * W + c] : m[c];
}
void expSubColsScalar(float* s, int64_t rows, int W, const float* shift, float* sum) {
  for (int c = 0; c < W; ++c) sum[c] = 0.0f;
  for (int64_t j = 0; j < rows; ++j)
    for (int c = 0; c < W; ++c) { float& x = s[j * W + c]; x = std::exp(x - shift[c]); sum[c] += x; }
}

// A growable 64-byte aligned scratch buffer (the micro-kernel loads packed panels aligned).
struct Scratch {
  std::unique_ptr<float, decltype(&std::free)> p{nullptr, &std::free};
  size_t cap = 0;
  float* get(size_t n) {
    if (n > cap) {
      size_t bytes = (n * sizeof(float) + 63) / 64 * 64;
      p.reset(static_cast<float*>(std::aligned_alloc(64, bytes)));
      if (!p) throw std::bad_alloc();
      cap = n;
    }
    return p.get();
  }
};

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

// Packs `rows` rows of a [rows, cols] strided matrix as A panels (mr rows, column-major within
// a panel: dst[panel][col][r]), rows past `rows` zero-filled.
template <int MR>
void packFullPanel(const float* s, int64_t cols, int64_t rs, int64_t cs, float* d) {
  const float* r[MR];
  for (int i = 0; i < MR; ++i) r[i] = s + i * rs;
  for (int64_t c = 0; c < cols; ++c, d += MR)
    for (int i = 0; i < MR; ++i) d[i] = r[i][c * cs];
}

void packRowsA(const float* src, int64_t rows, int64_t cols, int64_t rs, int64_t cs, int mr, float* dst) {
  for (int64_t r0 = 0; r0 < rows; r0 += mr) {
    const int64_t nb = std::min<int64_t>(mr, rows - r0);
    float* d = dst + r0 * cols;
    const float* s = src + r0 * rs;
    if (nb == mr && mr == 6) { packFullPanel<6>(s, cols, rs, cs, d); continue; }
    if (nb == mr && mr == 12) { packFullPanel<12>(s, cols, rs, cs, d); continue; }
    if (nb == mr && mr == 4) { packFullPanel<4>(s, cols, rs, cs, d); continue; }
    for (int64_t c = 0; c < cols; ++c, d += mr) {
      for (int64_t r = 0; r < nb; ++r) d[r] = s[r * rs + c * cs];
      for (int64_t r = nb; r < mr; ++r) d[r] = 0.0f;
    }
  }
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
  if (Lk == 0 || D == 0) {
    // No keys: an empty softmax, zeros. No head dim: every score is 0, so the mean of v rows
    // (plus mask) -- too rare to fuse; the caller routes D == 0 elsewhere.
    if (D == 0 && Lk > 0) throw KernelError("QDM_BAD_ARGUMENT", "attentionForward: head dim 0 is not supported");
    std::fill(op, op + batch * Lq * Dv, 0.0f);
    return;
  }

  const auto qOff = batchOffsets(q, batch), kOff = batchOffsets(k, batch), vOff = batchOffsets(v, batch);
  const auto mOff = mask ? batchOffsets(*mask, batch) : std::vector<int64_t>();
  const int64_t qrs = q.strides[nd - 2], qcs = q.strides[nd - 1], krs = k.strides[nd - 2], kcs = k.strides[nd - 1];
  const int64_t vrs = v.strides[nd - 2], vcs = v.strides[nd - 1];
  const int64_t mrs = mask ? mask->strides[nd - 2] : 0, mcs = mask ? mask->strides[nd - 1] : 0;
  const float *qp = q.ptr<float>(), *kp = k.ptr<float>(), *vp = v.ptr<float>(), *mp = mask ? mask->ptr<float>() : nullptr;

  const gemm::KernelDesc& kd = gemm::activeKernel();
  const int mr = kd.mr, nr = kd.nr;
  const bool simd = hasAvx2() && nr % 8 == 0;
  auto colMax = simd ? attn::colMaxAvx2 : colMaxScalar;
  auto expSubCols = simd ? attn::expSubColsAvx2 : expSubColsScalar;
  const int64_t QB = queryBlock(batch, Lq);
  const int64_t QBp = roundUp(QB, nr);       // query columns of the score and output tiles
  const int64_t KBp = roundUp(KB, mr);       // key rows per query panel of the score tile
  const int64_t DvP = roundUp(Dv, mr);       // output channels, in mr panels
  const int64_t nqb = (Lq + QB - 1) / QB;

  parallelTasks(batch * nqb, [&](int64_t task) {
    const int64_t b = task / nqb, i0 = (task % nqb) * QB, mb = std::min(QB, Lq - i0);
    const int64_t panels = (mb + nr - 1) / nr, cols = panels * nr;
    thread_local Scratch sQ, sK, sV, sS, sO, sRow;
    float* Qt = sQ.get(static_cast<size_t>(QBp * D));     // B of S^T = K Q^T: [panel][D][nr]
    float* Kp = sK.get(static_cast<size_t>(KBp * D));     // A: [key panel][D][mr]
    float* Vt = sV.get(static_cast<size_t>(DvP * KB));    // A of O^T += V^T P^T: [chan panel][key][mr]
    float* St = sS.get(static_cast<size_t>(QBp * KBp));   // [query panel][key][nr]
    float* Ot = sO.get(static_cast<size_t>(DvP * QBp));   // [Dv][QBp]
    float* row = sRow.get(static_cast<size_t>(5 * QBp));
    float *m = row, *l = row + QBp, *bmax = row + 2 * QBp, *shift = row + 3 * QBp, *bsum = row + 4 * QBp;
    std::fill(m, m + cols, kNegInf);
    std::fill(l, l + cols, 0.0f);
    std::fill(Ot, Ot + DvP * QBp, 0.0f);

    // Q^T panels, scaled; queries past mb are zero (their scores are 0 and never stored).
    const float* Q = qp + qOff[b] + i0 * qrs;
    for (int64_t p = 0; p < panels; ++p) {
      float* d = Qt + p * D * nr;
      const int64_t nb = std::min<int64_t>(nr, mb - p * nr);
      for (int64_t kk = 0; kk < D; ++kk, d += nr) {
        for (int64_t c = 0; c < nb; ++c) d[c] = scale * Q[(p * nr + c) * qrs + kk * qcs];
        for (int64_t c = nb; c < nr; ++c) d[c] = 0.0f;
      }
    }

    for (int64_t j0 = 0; j0 < Lk; j0 += KB) {
      const int64_t nk = std::min(KB, Lk - j0);
      packRowsA(kp + kOff[b] + j0 * krs, nk, D, krs, kcs, mr, Kp);
      packRowsA(vp + vOff[b] + j0 * vrs, Dv, nk, vcs, vrs, mr, Vt);  // V^T: rows are channels
      // S^T[key, query] for every (key panel, query panel) tile, written in packed-B order.
      for (int64_t p = 0; p < panels; ++p)
        for (int64_t r0 = 0; r0 < nk; r0 += mr)
          kd.ukernel(D, Kp + r0 * D, Qt + p * D * nr, St + p * KBp * nr + r0 * nr, nr, 1, 0.0f,
                     static_cast<int>(std::min<int64_t>(mr, nk - r0)), nr);
      if (mp) {
        const float* M = mp + mOff[b] + i0 * mrs + j0 * mcs;
        for (int64_t i = 0; i < mb; ++i) {
          float* s = St + (i / nr) * KBp * nr + (i % nr);
          const float* mi = M + i * mrs;
          for (int64_t j = 0; j < nk; ++j) s[j * nr] += mi[j * mcs];
        }
      }
      // Online softmax, one query per column.
      bool rescale = false;
      for (int64_t p = 0; p < panels; ++p) {
        float* bm = bmax + p * nr;
        std::copy(m + p * nr, m + (p + 1) * nr, bm);
        colMax(St + p * KBp * nr, nk, nr, bm);
      }
      for (int64_t c = 0; c < cols; ++c) {
        // A column with every score so far -inf shifts by 0: exp(-inf) = 0, no NaN.
        shift[c] = bmax[c] == kNegInf ? 0.0f : bmax[c];
        if (bmax[c] != m[c]) rescale = true;
      }
      for (int64_t p = 0; p < panels; ++p) expSubCols(St + p * KBp * nr, nk, nr, shift + p * nr, bsum + p * nr);
      if (rescale) {
        for (int64_t c = 0; c < cols; ++c) {
          const float alpha = m[c] == kNegInf ? 0.0f : std::exp(m[c] - bmax[c]);
          l[c] *= alpha;
          shift[c] = alpha;  // reused as the per-column rescale factor
        }
        for (int64_t ch = 0; ch < Dv; ++ch) {
          float* o = Ot + ch * QBp;
          for (int64_t c = 0; c < cols; ++c) o[c] *= shift[c];
        }
      }
      for (int64_t c = 0; c < cols; ++c) { l[c] += bsum[c]; m[c] = bmax[c]; }
      // O^T[ch, query] += sum_j V^T[ch, j] P^T[j, query]
      for (int64_t c0 = 0; c0 < Dv; c0 += mr)
        for (int64_t p = 0; p < panels; ++p)
          kd.ukernel(nk, Vt + c0 * nk, St + p * KBp * nr, Ot + c0 * QBp + p * nr, QBp, 1, 1.0f,
                     static_cast<int>(std::min<int64_t>(mr, Dv - c0)), nr);
    }
    float* O = op + (b * Lq + i0) * Dv;
    for (int64_t i = 0; i < mb; ++i) l[i] = l[i] > 0.0f ? 1.0f / l[i] : 0.0f;
    for (int64_t i = 0; i < mb; ++i)
      for (int64_t ch = 0; ch < Dv; ++ch) O[i * Dv + ch] = Ot[ch * QBp + i] * l[i];
  });
}

}  // namespace qdm::cpu
