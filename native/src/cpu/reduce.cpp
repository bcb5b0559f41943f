// Reductions over any set of dims. Each output element is reduced by one thread in a fixed
// order with a double accumulator, so results do not depend on the thread count. When there
// are few outputs but long reductions (a loss), the reduction is cut into fixed-size chunks
// whose partial sums are combined in order: still independent of the thread count.
#include <cmath>
#include <limits>
#include <vector>

#include "cpu/strided.h"
#include "qdm/cpu.h"
#include "qdm/opcodes.h"

namespace qdm::cpu {
namespace {

struct Acc {
  double sum = 0;
  double best = 0;
  int64_t bestIdx = -1;
  bool nan = false;
};

constexpr int64_t kChunk = 1 << 16;

}  // namespace

void reduce(int op, const View& x, const bool* reduced, const View& out) {
  if (x.dtype != DType::F32) throw KernelError("QDM_DTYPE", std::string("reduce: expected f32, got ") + dtypeName(x.dtype));
  bool argOut = op == R_ARGMAX || op == R_ARGMIN;
  if (argOut ? out.dtype != DType::I64 : out.dtype != DType::F32)
    throw KernelError("QDM_DTYPE", "reduce: wrong output dtype");
  // Split dims into kept (outer) and reduced (inner) lists.
  int64_t keptShape[kMaxDims], keptStrides[kMaxDims], redShape[kMaxDims], redStrides[kMaxDims];
  int nk = 0, nr = 0;
  for (int i = 0; i < x.ndim; ++i) {
    if (reduced[i]) { redShape[nr] = x.shape[i]; redStrides[nr] = x.strides[i]; ++nr; }
    else { keptShape[nk] = x.shape[i]; keptStrides[nk] = x.strides[i]; ++nk; }
  }
  int64_t K = 1, R = 1;
  for (int i = 0; i < nk; ++i) K *= keptShape[i];
  for (int i = 0; i < nr; ++i) R *= redShape[i];
  if (out.numel() != K) throw KernelError("QDM_SHAPE_MISMATCH", "reduce: output size does not match kept dims");
  if (R == 0 && (op == R_MAX || op == R_MIN || argOut))
    throw KernelError("QDM_BAD_ARGUMENT", "reduce: max/min/argmax over an empty dimension");
  // out's shape is exactly the kept dims (the TS layer reshapes for keepdim).
  int64_t outStrides[kMaxDims];
  if (out.ndim != nk) throw KernelError("QDM_SHAPE_MISMATCH", "reduce: output rank must equal the number of kept dims");
  for (int i = 0; i < nk; ++i) {
    if (out.shape[i] != keptShape[i]) throw KernelError("QDM_SHAPE_MISMATCH", "reduce: output shape differs from kept dims");
    outStrides[i] = out.strides[i];
  }
  const float* px = x.ptr<float>();
  const int64_t* rs = redStrides;

  // Index of the r-th reduced element (row-major over reduced dims) -> offset.
  auto redOffset = [&](int64_t r) {
    int64_t off = 0;
    for (int i = nr - 1; i >= 0; --i) { int64_t idx = r % redShape[i]; r /= redShape[i]; off += idx * rs[i]; }
    return off;
  };
  auto keptOffsets = [&](int64_t k, int64_t& inOff, int64_t& outOff) {
    inOff = 0; outOff = 0;
    for (int i = nk - 1; i >= 0; --i) { int64_t idx = k % keptShape[i]; k /= keptShape[i]; inOff += idx * keptStrides[i]; outOff += idx * outStrides[i]; }
  };
  // Accumulate reduced elements [r0, r1) of output k into acc. Walks the innermost reduced dim as a run.
  const int64_t innerN = nr > 0 ? redShape[nr - 1] : 1;
  const int64_t innerS = nr > 0 ? redStrides[nr - 1] : 0;
  auto accumulate = [&](int64_t base, int64_t r0, int64_t r1, Acc& acc) {
    int64_t r = r0;
    while (r < r1) {
      int64_t inner = r % innerN;
      int64_t run = std::min(innerN - inner, r1 - r);
      const float* p = px + base + redOffset(r);
      for (int64_t i = 0; i < run; ++i) {
        float v = p[i * innerS];
        int64_t idx = r + i;
        switch (op) {
          case R_SUM: case R_MEAN: acc.sum += v; break;
          case R_SUMSQ: acc.sum += static_cast<double>(v) * v; break;
          case R_PROD: acc.sum = (acc.bestIdx < 0 ? 1.0 : acc.sum) * v; acc.bestIdx = 0; break;
          case R_MAX: case R_ARGMAX:
            if (v != v) { if (!acc.nan) { acc.nan = true; acc.bestIdx = idx; acc.best = v; } }
            else if (!acc.nan && (acc.bestIdx < 0 || v > acc.best)) { acc.best = v; acc.bestIdx = idx; }
            break;
          case R_MIN: case R_ARGMIN:
            if (v != v) { if (!acc.nan) { acc.nan = true; acc.bestIdx = idx; acc.best = v; } }
            else if (!acc.nan && (acc.bestIdx < 0 || v < acc.best)) { acc.best = v; acc.bestIdx = idx; }
            break;
        }
      }
      r += run;
    }
  };
  auto merge = [&](Acc& into, const Acc& from) {
    switch (op) {
      case R_SUM: case R_MEAN: case R_SUMSQ: into.sum += from.sum; break;
      case R_PROD: if (from.bestIdx >= 0) { into.sum = (into.bestIdx < 0 ? 1.0 : into.sum) * from.sum; into.bestIdx = 0; } break;
      default:
        if (from.bestIdx < 0 || into.nan) break;
        if (from.nan) { into = from; break; }
        if (into.bestIdx < 0 || ((op == R_MAX || op == R_ARGMAX) ? from.best > into.best : from.best < into.best)) into = from;
    }
  };
  auto finish = [&](const Acc& acc, int64_t outOff) {
    if (argOut) { out.ptr<int64_t>()[outOff] = acc.bestIdx; return; }
    double v;
    switch (op) {
      case R_MEAN: v = R ? acc.sum / static_cast<double>(R) : NAN; break;
      case R_MAX: case R_MIN: v = acc.best; break;
      case R_PROD: v = acc.bestIdx < 0 ? 1.0 : acc.sum; break;
      default: v = acc.sum;
    }
    out.ptr<float>()[outOff] = static_cast<float>(v);
  };

  if (K >= 4 * numThreads() || R <= kChunk) {
    parallelFor(K, std::max<int64_t>(1, kChunk / std::max<int64_t>(R, 1)), [&](int64_t k0, int64_t k1) {
      for (int64_t k = k0; k < k1; ++k) {
        int64_t inOff, outOff; keptOffsets(k, inOff, outOff);
        Acc acc; accumulate(inOff, 0, R, acc); finish(acc, outOff);
      }
    });
    return;
  }
  int64_t chunks = (R + kChunk - 1) / kChunk;
  for (int64_t k = 0; k < K; ++k) {
    int64_t inOff, outOff; keptOffsets(k, inOff, outOff);
    std::vector<Acc> parts(chunks);
    parallelFor(chunks, 1, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) accumulate(inOff, c * kChunk, std::min(R, (c + 1) * kChunk), parts[c]);
    });
    Acc acc;
    for (auto& p : parts) merge(acc, p);
    finish(acc, outOff);
  }
}

}  // namespace qdm::cpu
