// Elementwise kernels: strided copy/cast, binary ops with broadcasting (stride-0 operands),
// unary ops and their fused backward, where. fp32 math; the plan coalesces dims so the
// common contiguous case is one flat, vectorisable loop.
#include <cmath>
#include <cstring>
#include <limits>

#include "cpu/half.h"
#include "cpu/strided.h"
#include "qdm/cpu.h"
#include "qdm/opcodes.h"

namespace qdm::cpu {
namespace {

inline double loadAs(const View& v, int64_t off) {
  switch (v.dtype) {
    case DType::F32: return v.ptr<float>()[off];
    case DType::F64: return v.ptr<double>()[off];
    case DType::F16: return halfToFloat(v.ptr<uint16_t>()[off]);
    case DType::BF16: return bf16ToFloat(v.ptr<uint16_t>()[off]);
    case DType::I8: return v.ptr<int8_t>()[off];
    case DType::U8: return v.ptr<uint8_t>()[off];
    case DType::I32: return v.ptr<int32_t>()[off];
    case DType::I64: return static_cast<double>(v.ptr<int64_t>()[off]);
    case DType::F8E4M3: return fp8e4m3ToFloat(v.ptr<uint8_t>()[off]);
    case DType::I4: {
      uint8_t byte = v.ptr<uint8_t>()[off >> 1];
      int nib = (off & 1) ? (byte >> 4) : (byte & 0xf);
      return nib >= 8 ? nib - 16 : nib;
    }
  }
  return 0;
}

template <typename I>
inline I saturate(double x) {
  if (std::isnan(x)) return 0;
  double lo = static_cast<double>(std::numeric_limits<I>::min()), hi = static_cast<double>(std::numeric_limits<I>::max());
  return static_cast<I>(x < lo ? lo : (x > hi ? hi : x));
}

inline void storeAs(const View& v, int64_t off, double x) {
  switch (v.dtype) {
    case DType::F32: v.ptr<float>()[off] = static_cast<float>(x); break;
    case DType::F64: v.ptr<double>()[off] = x; break;
    case DType::F16: v.ptr<uint16_t>()[off] = floatToHalf(static_cast<float>(x)); break;
    case DType::BF16: v.ptr<uint16_t>()[off] = floatToBf16(static_cast<float>(x)); break;
    // Float -> integer casts truncate toward zero (as C and PyTorch do) and saturate.
    case DType::I8: v.ptr<int8_t>()[off] = saturate<int8_t>(std::trunc(x)); break;
    case DType::U8: v.ptr<uint8_t>()[off] = saturate<uint8_t>(std::trunc(x)); break;
    case DType::I32: v.ptr<int32_t>()[off] = saturate<int32_t>(std::trunc(x)); break;
    case DType::I64: v.ptr<int64_t>()[off] = saturate<int64_t>(std::trunc(x)); break;
    case DType::F8E4M3: v.ptr<uint8_t>()[off] = floatToFp8e4m3(static_cast<float>(x)); break;
    case DType::I4: {
      int q = static_cast<int>(std::trunc(x));
      q = q < -8 ? -8 : (q > 7 ? 7 : q);
      uint8_t& byte = v.ptr<uint8_t>()[off >> 1];
      if (off & 1) byte = static_cast<uint8_t>((byte & 0x0f) | ((q & 0xf) << 4));
      else byte = static_cast<uint8_t>((byte & 0xf0) | (q & 0xf));
      break;
    }
  }
}

void checkSameShape(const View& a, const View& b, const char* op) {
  bool ok = a.ndim == b.ndim;
  for (int i = 0; ok && i < a.ndim; ++i) ok = a.shape[i] == b.shape[i];
  if (!ok) throw KernelError("QDM_SHAPE_MISMATCH", std::string(op) + ": operand shapes differ");
}

void checkF32(const View& v, const char* op) {
  if (v.dtype != DType::F32) throw KernelError("QDM_DTYPE", std::string(op) + ": expected f32, got " + dtypeName(v.dtype));
}

inline float gelu(float x) { return 0.5f * x * (1.0f + std::erf(x * 0.70710678118654752f)); }
inline float geluTanh(float x) {
  const float k = 0.7978845608028654f;
  return 0.5f * x * (1.0f + std::tanh(k * (x + 0.044715f * x * x * x)));
}
inline float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

template <typename F>
void map1(const View& x, const View& out, F f) {
  auto plan = makePlan<2>(out.ndim, out.shape, {out.strides, x.strides});
  float* o = out.ptr<float>();
  const float* a = x.ptr<float>();
  forEachRun<2>(plan, [&](const std::array<int64_t, 2>& off, int64_t n, const std::array<int64_t, 2>& st) {
    float* po = o + off[0];
    const float* pa = a + off[1];
    if (st[0] == 1 && st[1] == 1) { for (int64_t i = 0; i < n; ++i) po[i] = f(pa[i]); }
    else { for (int64_t i = 0; i < n; ++i) po[i * st[0]] = f(pa[i * st[1]]); }
  });
}

template <typename F>
void map2(const View& a, const View& b, const View& out, F f) {
  auto plan = makePlan<3>(out.ndim, out.shape, {out.strides, a.strides, b.strides});
  float* o = out.ptr<float>();
  const float* pa0 = a.ptr<float>();
  const float* pb0 = b.ptr<float>();
  forEachRun<3>(plan, [&](const std::array<int64_t, 3>& off, int64_t n, const std::array<int64_t, 3>& st) {
    float* po = o + off[0];
    const float* pa = pa0 + off[1];
    const float* pb = pb0 + off[2];
    if (st[0] == 1 && st[1] == 1 && st[2] == 1) { for (int64_t i = 0; i < n; ++i) po[i] = f(pa[i], pb[i]); }
    else if (st[0] == 1 && st[1] == 1 && st[2] == 0) { float bv = *pb; for (int64_t i = 0; i < n; ++i) po[i] = f(pa[i], bv); }
    else if (st[0] == 1 && st[1] == 0 && st[2] == 1) { float av = *pa; for (int64_t i = 0; i < n; ++i) po[i] = f(av, pb[i]); }
    else { for (int64_t i = 0; i < n; ++i) po[i * st[0]] = f(pa[i * st[1]], pb[i * st[2]]); }
  });
}

}  // namespace

void copyCast(const View& src, const View& dst) {
  checkSameShape(src, dst, "copy");
  if (src.dtype == dst.dtype && src.dtype != DType::I4) {
    size_t es = dtypeSize(src.dtype);
    auto plan = makePlan<2>(dst.ndim, dst.shape, {dst.strides, src.strides});
    uint8_t* d = static_cast<uint8_t*>(dst.data);
    const uint8_t* s = static_cast<const uint8_t*>(src.data);
    forEachRun<2>(plan, [&](const std::array<int64_t, 2>& off, int64_t n, const std::array<int64_t, 2>& st) {
      if (st[0] == 1 && st[1] == 1) { std::memcpy(d + off[0] * es, s + off[1] * es, n * es); return; }
      for (int64_t i = 0; i < n; ++i) std::memcpy(d + (off[0] + i * st[0]) * es, s + (off[1] + i * st[1]) * es, es);
    });
    return;
  }
  if (src.dtype == DType::F32 && dst.dtype == DType::F32) return;  // handled above
  // Packed int4 writes touch half-bytes: keep them on one thread to avoid torn bytes.
  auto plan = makePlan<2>(dst.ndim, dst.shape, {dst.strides, src.strides});
  auto body = [&](const std::array<int64_t, 2>& off, int64_t n, const std::array<int64_t, 2>& st) {
    for (int64_t i = 0; i < n; ++i) storeAs(dst, off[0] + i * st[0], loadAs(src, off[1] + i * st[1]));
  };
  if (dst.dtype == DType::I4) {
    forEachRun<2>(plan, body, INT64_MAX / 4);
  } else {
    forEachRun<2>(plan, body);
  }
}

void fill(const View& dst, double value) {
  if (dst.dtype == DType::F32) {
    float v = static_cast<float>(value);
    View dummy = dst;
    map1(dummy, dst, [v](float) { return v; });
    return;
  }
  auto plan = makePlan<1>(dst.ndim, dst.shape, {dst.strides});
  forEachRun<1>(plan, [&](const std::array<int64_t, 1>& off, int64_t n, const std::array<int64_t, 1>& st) {
    for (int64_t i = 0; i < n; ++i) storeAs(dst, off[0] + i * st[0], value);
  }, dst.dtype == DType::I4 ? INT64_MAX / 4 : 32768);
}

void binary(int op, const View& a, const View& b, const View& out) {
  checkF32(a, "binary"); checkF32(b, "binary"); checkF32(out, "binary");
  checkSameShape(a, out, "binary"); checkSameShape(b, out, "binary");
  switch (op) {
    case B_ADD: map2(a, b, out, [](float x, float y) { return x + y; }); break;
    case B_SUB: map2(a, b, out, [](float x, float y) { return x - y; }); break;
    case B_MUL: map2(a, b, out, [](float x, float y) { return x * y; }); break;
    case B_DIV: map2(a, b, out, [](float x, float y) { return x / y; }); break;
    case B_POW: map2(a, b, out, [](float x, float y) { return std::pow(x, y); }); break;
    case B_MAX: map2(a, b, out, [](float x, float y) { return (x != x || y != y) ? NAN : (x > y ? x : y); }); break;
    case B_MIN: map2(a, b, out, [](float x, float y) { return (x != x || y != y) ? NAN : (x < y ? x : y); }); break;
    case B_EQ: map2(a, b, out, [](float x, float y) { return x == y ? 1.0f : 0.0f; }); break;
    case B_NE: map2(a, b, out, [](float x, float y) { return x != y ? 1.0f : 0.0f; }); break;
    case B_LT: map2(a, b, out, [](float x, float y) { return x < y ? 1.0f : 0.0f; }); break;
    case B_LE: map2(a, b, out, [](float x, float y) { return x <= y ? 1.0f : 0.0f; }); break;
    case B_GT: map2(a, b, out, [](float x, float y) { return x > y ? 1.0f : 0.0f; }); break;
    case B_GE: map2(a, b, out, [](float x, float y) { return x >= y ? 1.0f : 0.0f; }); break;
    default: throw KernelError("QDM_BAD_ARGUMENT", "binary: unknown op " + std::to_string(op));
  }
}

void unary(int op, const View& x, const View& out, float p0, float p1) {
  checkF32(x, "unary"); checkF32(out, "unary"); checkSameShape(x, out, "unary");
  switch (op) {
    case U_NEG: map1(x, out, [](float v) { return -v; }); break;
    case U_ABS: map1(x, out, [](float v) { return std::fabs(v); }); break;
    case U_EXP: map1(x, out, [](float v) { return std::exp(v); }); break;
    case U_LOG: map1(x, out, [](float v) { return std::log(v); }); break;
    case U_SQRT: map1(x, out, [](float v) { return std::sqrt(v); }); break;
    case U_RSQRT: map1(x, out, [](float v) { return 1.0f / std::sqrt(v); }); break;
    case U_TANH: map1(x, out, [](float v) { return std::tanh(v); }); break;
    case U_SIGMOID: map1(x, out, [](float v) { return sigmoid(v); }); break;
    case U_SILU: map1(x, out, [](float v) { return v * sigmoid(v); }); break;
    case U_GELU: map1(x, out, [](float v) { return gelu(v); }); break;
    case U_GELU_TANH: map1(x, out, [](float v) { return geluTanh(v); }); break;
    case U_RELU: map1(x, out, [](float v) { return v > 0 ? v : (v != v ? v : 0.0f); }); break;
    case U_ROUND: map1(x, out, [](float v) { return std::nearbyint(v); }); break;
    case U_SIGN: map1(x, out, [](float v) { return v > 0 ? 1.0f : (v < 0 ? -1.0f : 0.0f); }); break;
    case U_SQUARE: map1(x, out, [](float v) { return v * v; }); break;
    case U_RECIP: map1(x, out, [](float v) { return 1.0f / v; }); break;
    case U_CLAMP: map1(x, out, [p0, p1](float v) { return v != v ? v : (v < p0 ? p0 : (v > p1 ? p1 : v)); }); break;
    case U_AFFINE: map1(x, out, [p0, p1](float v) { return p0 * v + p1; }); break;
    case U_POWS: map1(x, out, [p0](float v) { return std::pow(v, p0); }); break;
    case U_SIN: map1(x, out, [](float v) { return std::sin(v); }); break;
    case U_COS: map1(x, out, [](float v) { return std::cos(v); }); break;
    case U_FLOOR: map1(x, out, [](float v) { return std::floor(v); }); break;
    case U_CEIL: map1(x, out, [](float v) { return std::ceil(v); }); break;
    case U_LOG1P: map1(x, out, [](float v) { return std::log1p(v); }); break;
    case U_EXPM1: map1(x, out, [](float v) { return std::expm1(v); }); break;
    default: throw KernelError("QDM_BAD_ARGUMENT", "unary: unknown op " + std::to_string(op));
  }
}

void unaryBackward(int op, const View& x, const View& g, const View& out, float p0, float p1) {
  checkF32(x, "unaryBackward"); checkF32(g, "unaryBackward"); checkF32(out, "unaryBackward");
  checkSameShape(x, out, "unaryBackward"); checkSameShape(g, out, "unaryBackward");
  switch (op) {
    case U_NEG: map2(x, g, out, [](float, float d) { return -d; }); break;
    case U_ABS: map2(x, g, out, [](float v, float d) { return v > 0 ? d : (v < 0 ? -d : 0.0f); }); break;
    case U_EXP: map2(x, g, out, [](float v, float d) { return d * std::exp(v); }); break;
    case U_LOG: map2(x, g, out, [](float v, float d) { return d / v; }); break;
    case U_SQRT: map2(x, g, out, [](float v, float d) { return d * 0.5f / std::sqrt(v); }); break;
    case U_RSQRT: map2(x, g, out, [](float v, float d) { return d * -0.5f / (v * std::sqrt(v)); }); break;
    case U_TANH: map2(x, g, out, [](float v, float d) { float t = std::tanh(v); return d * (1.0f - t * t); }); break;
    case U_SIGMOID: map2(x, g, out, [](float v, float d) { float s = sigmoid(v); return d * s * (1.0f - s); }); break;
    case U_SILU: map2(x, g, out, [](float v, float d) { float s = sigmoid(v); return d * s * (1.0f + v * (1.0f - s)); }); break;
    case U_GELU: map2(x, g, out, [](float v, float d) {
      float cdf = 0.5f * (1.0f + std::erf(v * 0.70710678118654752f));
      float pdf = 0.3989422804014327f * std::exp(-0.5f * v * v);
      return d * (cdf + v * pdf);
    }); break;
    case U_GELU_TANH: map2(x, g, out, [](float v, float d) {
      const float k = 0.7978845608028654f;
      float u = k * (v + 0.044715f * v * v * v);
      float t = std::tanh(u);
      float du = k * (1.0f + 3.0f * 0.044715f * v * v);
      return d * (0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * du);
    }); break;
    case U_RELU: map2(x, g, out, [](float v, float d) { return v > 0 ? d : 0.0f; }); break;
    case U_ROUND: case U_FLOOR: case U_CEIL: case U_SIGN:
      map2(x, g, out, [](float, float) { return 0.0f; }); break;
    case U_SQUARE: map2(x, g, out, [](float v, float d) { return 2.0f * v * d; }); break;
    case U_RECIP: map2(x, g, out, [](float v, float d) { return -d / (v * v); }); break;
    case U_CLAMP: map2(x, g, out, [p0, p1](float v, float d) { return (v >= p0 && v <= p1) ? d : 0.0f; }); break;
    case U_AFFINE: map2(x, g, out, [p0](float, float d) { return p0 * d; }); break;
    case U_POWS: map2(x, g, out, [p0](float v, float d) { return p0 == 0 ? 0.0f : d * p0 * std::pow(v, p0 - 1.0f); }); break;
    case U_SIN: map2(x, g, out, [](float v, float d) { return d * std::cos(v); }); break;
    case U_COS: map2(x, g, out, [](float v, float d) { return -d * std::sin(v); }); break;
    case U_LOG1P: map2(x, g, out, [](float v, float d) { return d / (1.0f + v); }); break;
    case U_EXPM1: map2(x, g, out, [](float v, float d) { return d * std::exp(v); }); break;
    default: throw KernelError("QDM_BAD_ARGUMENT", "unaryBackward: unknown op " + std::to_string(op));
  }
  (void)p1;
}

void where(const View& cond, const View& a, const View& b, const View& out) {
  checkF32(a, "where"); checkF32(b, "where"); checkF32(out, "where");
  checkSameShape(cond, out, "where"); checkSameShape(a, out, "where"); checkSameShape(b, out, "where");
  if (cond.dtype != DType::U8) throw KernelError("QDM_DTYPE", "where: condition must be u8 (bool)");
  auto plan = makePlan<4>(out.ndim, out.shape, {out.strides, cond.strides, a.strides, b.strides});
  float* o = out.ptr<float>();
  const uint8_t* c = cond.ptr<uint8_t>();
  const float* pa = a.ptr<float>();
  const float* pb = b.ptr<float>();
  forEachRun<4>(plan, [&](const std::array<int64_t, 4>& off, int64_t n, const std::array<int64_t, 4>& st) {
    for (int64_t i = 0; i < n; ++i)
      o[off[0] + i * st[0]] = c[off[1] + i * st[1]] ? pa[off[2] + i * st[2]] : pb[off[3] + i * st[3]];
  });
}

}  // namespace qdm::cpu
