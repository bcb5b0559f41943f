// Row gathers and scatter-adds (embedding, index_select, their gradients). Indices are
// checked before any write; scatter-add runs column-parallel so each output element is summed
// in index order by one thread (deterministic).
#include <cstring>
#include <string>

#include "qdm/nn.h"
#include "qdm/parallel.h"

namespace qdm::cpu {
namespace {
inline int64_t idxAt(const View& idx, int64_t k) {
  return idx.dtype == DType::I64 ? idx.ptr<int64_t>()[k * idx.strides[0]] : idx.ptr<int32_t>()[k * idx.strides[0]];
}
void checkIdx(const View& idx, int64_t rows, const char* op) {
  if (idx.dtype != DType::I64 && idx.dtype != DType::I32) throw KernelError("QDM_DTYPE", std::string(op) + ": indices must be i64 or i32");
  for (int64_t k = 0; k < idx.shape[0]; ++k) {
    int64_t i = idxAt(idx, k);
    if (i < 0 || i >= rows) throw KernelError("QDM_BAD_ARGUMENT", std::string(op) + ": index " + std::to_string(i) + " out of range for size " + std::to_string(rows));
  }
}
}  // namespace

void indexRows(const View& src, const View& idx, const View& out, int64_t rows) {
  checkIdx(idx, rows, "index");
  const int64_t K = idx.shape[0], D = out.shape[1];
  const float* s = src.ptr<float>(); float* o = out.ptr<float>();
  parallelFor(K, std::max<int64_t>(1, 8192 / std::max<int64_t>(D, 1)), [&](int64_t k0, int64_t k1) {
    for (int64_t k = k0; k < k1; ++k) std::memcpy(o + k * D, s + idxAt(idx, k) * D, sizeof(float) * D);
  });
}

void indexAddRows(const View& src, const View& idx, const View& out, int64_t rows) {
  checkIdx(idx, rows, "index backward");
  const int64_t K = idx.shape[0], D = src.shape[1];
  const float* s = src.ptr<float>(); float* o = out.ptr<float>();
  parallelFor(D, 64, [&](int64_t d0, int64_t d1) {
    for (int64_t k = 0; k < K; ++k) {
      float* orow = o + idxAt(idx, k) * D; const float* srow = s + k * D;
      for (int64_t d = d0; d < d1; ++d) orow[d] += srow[d];
    }
  });
}

}  // namespace qdm::cpu
