// Backend-neutral description of a tensor operand: a typed pointer plus shape and strides in
// elements. Kernels receive views, never JS objects, so the same kernel code serves the
// binding, the benchmarks and the standalone tests.
#pragma once
#include <cstdint>
#include <cstddef>
#include <stdexcept>
#include <string>

namespace qdm {

// Codes shared with packages/core/src/dtype.ts (keep in sync).
enum class DType : int32_t { F32 = 0, F16 = 1, BF16 = 2, I8 = 3, U8 = 4, I32 = 5, I64 = 6, I4 = 7, F8E4M3 = 8, F64 = 9 };

inline size_t dtypeSize(DType d) {
  switch (d) {
    case DType::F32: case DType::I32: return 4;
    case DType::F16: case DType::BF16: return 2;
    case DType::I8: case DType::U8: case DType::F8E4M3: case DType::I4: return 1;  // i4: packed, 2 per byte
    case DType::I64: case DType::F64: return 8;
  }
  return 0;
}
const char* dtypeName(DType d);

constexpr int kMaxDims = 8;

struct View {
  void* data = nullptr;  // points at element [0,...,0] (offset already applied)
  DType dtype = DType::F32;
  int ndim = 0;
  int64_t shape[kMaxDims] = {0};
  int64_t strides[kMaxDims] = {0};  // in elements

  int64_t numel() const { int64_t n = 1; for (int i = 0; i < ndim; ++i) n *= shape[i]; return n; }
  bool contiguous() const {
    int64_t s = 1;
    for (int i = ndim - 1; i >= 0; --i) { if (shape[i] != 1 && strides[i] != s) return false; s *= shape[i]; }
    return true;
  }
  template <typename T> T* ptr() const { return static_cast<T*>(data); }
};

// Thrown by kernels for bad arguments; the binding turns it into a JS QdmError with code.
struct KernelError : std::runtime_error {
  std::string code;
  KernelError(std::string c, const std::string& msg) : std::runtime_error(msg), code(std::move(c)) {}
};

}  // namespace qdm
