// N-d iteration over several operands that share an output shape (broadcast operands carry
// stride 0). Dimensions are coalesced first, so a contiguous case runs as one flat loop and
// the innermost loop is a plain strided loop the compiler can vectorise.
#pragma once
#include <array>
#include <cstdint>

#include "qdm/parallel.h"
#include "qdm/view.h"

namespace qdm {

template <int N>
struct StridedPlan {
  int ndim = 0;
  int64_t shape[kMaxDims];
  int64_t strides[N][kMaxDims];
  int64_t numel = 1;
};

// Operands' strides are given against `shape` (already broadcast).
template <int N>
StridedPlan<N> makePlan(int ndim, const int64_t* shape, const std::array<const int64_t*, N>& strides) {
  StridedPlan<N> p;
  // drop size-1 dims, then merge dims that are contiguous for every operand
  int d = 0;
  for (int i = 0; i < ndim; ++i) {
    if (shape[i] == 1) continue;
    p.shape[d] = shape[i];
    for (int k = 0; k < N; ++k) p.strides[k][d] = strides[k][i];
    ++d;
  }
  int m = 0;
  for (int i = 0; i < d; ++i) {
    if (m > 0) {
      bool merge = true;
      for (int k = 0; k < N; ++k) if (p.strides[k][m - 1] != p.strides[k][i] * p.shape[i]) { merge = false; break; }
      if (merge) {
        p.shape[m - 1] *= p.shape[i];
        for (int k = 0; k < N; ++k) p.strides[k][m - 1] = p.strides[k][i];
        continue;
      }
    }
    p.shape[m] = p.shape[i];
    for (int k = 0; k < N; ++k) p.strides[k][m] = p.strides[k][i];
    ++m;
  }
  if (m == 0) { m = 1; p.shape[0] = 1; for (int k = 0; k < N; ++k) p.strides[k][0] = 0; }
  p.ndim = m;
  for (int i = 0; i < ndim; ++i) p.numel *= shape[i];
  return p;
}

// fn(offsets[N], count, innerStrides[N]) is called for runs along the innermost dim.
template <int N, typename F>
void forEachRun(const StridedPlan<N>& p, F&& fn, int64_t grainElems = 32768) {
  if (p.numel == 0) return;
  const int last = p.ndim - 1;
  const int64_t inner = p.shape[last];
  const int64_t outer = p.numel / inner;
  std::array<int64_t, N> innerStrides;
  for (int k = 0; k < N; ++k) innerStrides[k] = p.strides[k][last];
  auto runRows = [&](int64_t r0, int64_t r1) {
    std::array<int64_t, N> off;
    for (int64_t r = r0; r < r1; ++r) {
      int64_t rem = r;
      off.fill(0);
      for (int i = last - 1; i >= 0; --i) {
        int64_t idx = rem % p.shape[i];
        rem /= p.shape[i];
        for (int k = 0; k < N; ++k) off[k] += idx * p.strides[k][i];
      }
      fn(off, inner, innerStrides);
    }
  };
  if (outer == 1 && inner > grainElems) {
    // one long run: split it
    parallelFor(inner, grainElems, [&](int64_t b, int64_t e) {
      std::array<int64_t, N> off;
      for (int k = 0; k < N; ++k) off[k] = b * innerStrides[k];
      fn(off, e - b, innerStrides);
    });
    return;
  }
  int64_t rowsPerChunk = inner >= grainElems ? 1 : (grainElems + inner - 1) / inner;
  parallelFor(outer, rowsPerChunk, runRows);
}

}  // namespace qdm
