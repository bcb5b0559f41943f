#include "qdm/cpu.h"

namespace qdm {
const char* dtypeName(DType d) {
  switch (d) {
    case DType::F32: return "f32"; case DType::F16: return "f16"; case DType::BF16: return "bf16";
    case DType::I8: return "i8"; case DType::U8: return "u8"; case DType::I32: return "i32";
    case DType::I64: return "i64"; case DType::I4: return "i4"; case DType::F8E4M3: return "f8e4m3";
    case DType::F64: return "f64";
  }
  return "?";
}
}  // namespace qdm

namespace qdm::cpu {
bool hasAvx2() { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }
bool hasAvx512() { return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl"); }
bool hasAvx512Vnni() { return hasAvx512() && __builtin_cpu_supports("avx512vnni"); }
const char* isaName() {
  if (hasAvx512Vnni()) return "avx512-vnni";
  if (hasAvx512()) return "avx512";
  if (hasAvx2()) return "avx2";
  return "scalar";
}
}  // namespace qdm::cpu
