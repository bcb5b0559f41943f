// Bindings of the low-bit CPU GEMM (qdm/qgemm.h). packages/quant/src/qgemm.ts builds the
// arguments; the packed weight buffer is an i8 tensor of qgemmPackedBytes(n, k, bits) elements.
#include <algorithm>

#include "binding/common.h"
#include "qdm/cpu.h"
#include "qdm/qgemm.h"

namespace qdm::binding {
namespace {
namespace qg = cpu::qgemm;

View needDense(Napi::Env env, const Napi::Value& v, const char* what, DType dt) {
  View w = toView(env, v, what);
  if (w.dtype != dt || !w.contiguous())
    throwCode(env, "QDM_BAD_ARGUMENT", std::string(what) + ": contiguous " + dtypeName(dt) + " expected, got " + dtypeName(w.dtype));
  return w;
}
const float* optF32(Napi::Env env, const Napi::Value& v, const char* what, int64_t need) {
  if (v.IsNull() || v.IsUndefined()) return nullptr;
  View w = needDense(env, v, what, DType::F32);
  if (w.numel() != need) throwCode(env, "QDM_SHAPE_MISMATCH", std::string(what) + ": " + std::to_string(w.numel()) + " entries, expected " + std::to_string(need));
  return w.ptr<float>();
}

// Weights from (packed, rowSums, scale, zero|null, bias|null) at info[at..at+4], n x k at `bits`.
qg::Weights weightsArg(Napi::Env env, const Napi::CallbackInfo& info, size_t at, int64_t n, int64_t k, int bits) {
  if (bits != 8 && bits != 4) throwCode(env, "QDM_BAD_ARGUMENT", "qgemm: bits must be 8 or 4");
  View packed = needDense(env, info[at], "packed", DType::I8);
  if (packed.numel() != qg::packedBytes(n, k, bits)) throwCode(env, "QDM_SHAPE_MISMATCH", "qgemm: the packed weights do not match n, k and bits");
  View rs = needDense(env, info[at + 1], "rowSums", DType::I32);
  if (rs.numel() != n) throwCode(env, "QDM_SHAPE_MISMATCH", "qgemm: rowSums must have n entries");
  const float* scale = optF32(env, info[at + 2], "weight scale", n);
  if (!scale) throwCode(env, "QDM_BAD_ARGUMENT", "qgemm: the weight scale is required");
  return {packed.ptr<uint8_t>(), rs.ptr<int32_t>(), scale, optF32(env, info[at + 3], "weight zeroPoint", n),
          optF32(env, info[at + 4], "bias", n), n, k, bits};
}

// The optional low-rank branch (xa f32 [T, r], b f32 [r, N]) at info[at], info[at + 1].
void lowRankArg(Napi::Env env, const Napi::CallbackInfo& info, size_t at, int64_t T, int64_t N, qg::Activations& a) {
  if (info[at].IsNull() || info[at].IsUndefined()) return;
  View xa = needDense(env, info[at], "lowRank xa", DType::F32), b = needDense(env, info[at + 1], "lowRank b", DType::F32);
  if (xa.ndim != 2 || b.ndim != 2 || xa.shape[0] != T || b.shape[1] != N || xa.shape[1] != b.shape[0])
    throwCode(env, "QDM_SHAPE_MISMATCH", "qgemmLinear: low-rank xa [T, r] and b [r, N] expected");
  a.lowRankXa = xa.ptr<float>();
  a.lowRankB = b.ptr<float>();
  a.lowRank = xa.shape[1];
}

// The [T, K] input (codes or floats) at info[in] and the f32 [T, N] output at info[outAt].
struct Rows { View in, out; int64_t T, K, N; };
Rows rowsArg(Napi::Env env, const Napi::CallbackInfo& info, size_t in, size_t outAt, const char* what, DType dt, const char* op) {
  View x = needDense(env, info[in], what, dt), out = needDense(env, info[outAt], "out", DType::F32);
  if (x.ndim != 2 || out.ndim != 2 || out.shape[0] != x.shape[0])
    throwCode(env, "QDM_SHAPE_MISMATCH", std::string(op) + ": " + what + " [T, K] and out [T, N] expected");
  return {x, out, x.shape[0], x.shape[1], out.shape[1]};
}

// qgemmPackedBytes(n, k, bits) -> number
Napi::Value PackedBytes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Napi::Number::New(env, static_cast<double>(qg::packedBytes(intArg(info, 0), intArg(info, 1), static_cast<int>(intArg(info, 2)))));
}

// qgemmPackWeights(codes i8|i4 [n,k] or [O,C,kh,kw], packed i8, rowSums i32 [n], bits)
Napi::Value PackWeights(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&] {
    View codes = toView(env, info[0], "codes");
    View packed = needDense(env, info[1], "packed", DType::I8);
    View rs = needDense(env, info[2], "rowSums", DType::I32);
    const int bits = static_cast<int>(intArg(info, 3));
    if (codes.ndim != 2 && codes.ndim != 4) throwCode(env, "QDM_SHAPE_MISMATCH", "qgemmPackWeights: codes must be 2-d or 4-d");
    const int64_t n = codes.shape[0], k = codes.numel() / std::max<int64_t>(n, 1);
    if (packed.numel() != qg::packedBytes(n, k, bits) || rs.numel() != n)
      throwCode(env, "QDM_SHAPE_MISMATCH", "qgemmPackWeights: output buffers have the wrong size");
    qg::packWeights(codes, bits, packed.ptr<uint8_t>(), rs.ptr<int32_t>());
    return env.Undefined();
  });
}

// qgemmQuantizeActs(x f32 [T,K], codes i8 [T,K], scaleOut f32 [T], zeroOut f32 [T], dynamic, scale, zero, qmin, qmax, col|null)
Napi::Value QuantizeActs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&] {
    View x = needDense(env, info[0], "x", DType::F32), codes = needDense(env, info[1], "codes", DType::I8);
    if (x.ndim != 2 || codes.numel() != x.numel()) throwCode(env, "QDM_SHAPE_MISMATCH", "qgemmQuantizeActs: x must be [T, K] and codes the same size");
    const int64_t T = x.shape[0], K = x.shape[1];
    const float* so = optF32(env, info[2], "scaleOut", T);
    const float* zo = optF32(env, info[3], "zeroOut", T);
    if (!so || !zo) throwCode(env, "QDM_BAD_ARGUMENT", "qgemmQuantizeActs: scaleOut and zeroOut are required");
    qg::quantizeActivations(x.ptr<float>(), T, K, boolArg(info, 4), float(numberArg(info, 5, 1.0)), float(numberArg(info, 6)),
                            float(numberArg(info, 7, -128)), float(numberArg(info, 8, 127)), optF32(env, info[9], "colFactor", K),
                            codes.ptr<int8_t>(), const_cast<float*>(so), const_cast<float*>(zo));
    return env.Undefined();
  });
}

// qgemmLinear(codes i8 [T,K], actScale f32 [T]|[1], actZero f32 [T]|[1], packed, rowSums, wScale, wZero|null, bias|null,
//             out f32 [T,N], bits, xa f32 [T,r]|null, b f32 [r,N]|null)
Napi::Value Linear(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&] {
    const auto [codes, out, T, K, N] = rowsArg(env, info, 0, 8, "codes", DType::I8, "qgemmLinear");
    View sa = needDense(env, info[1], "actScale", DType::F32), za = needDense(env, info[2], "actZero", DType::F32);
    if (sa.numel() != za.numel() || (sa.numel() != T && sa.numel() != 1)) throwCode(env, "QDM_SHAPE_MISMATCH", "qgemmLinear: activation scale/zero must have T or 1 entries");
    qg::Weights w = weightsArg(env, info, 3, N, K, static_cast<int>(intArg(info, 9)));
    qg::Activations a{codes.ptr<int8_t>(), T, K, sa.ptr<float>(), za.ptr<float>(), sa.numel() == T ? 1 : 0};
    if (T == 1) a.scaleStride = 0;
    lowRankArg(env, info, 10, T, N, a);
    qg::gemm(a, w, out.ptr<float>(), N, 1, true);
    return env.Undefined();
  });
}

// qgemmLinearQuantizing(x f32 [T,K], scaleOut f32 [T], zeroOut f32 [T], dynamic, scale, zero, qmin, qmax, col|null,
//                       packed, rowSums, wScale, wZero|null, bias|null, out f32 [T,N], bits, xa f32 [T,r]|null, b f32 [r,N]|null)
// qgemmQuantizeActs + qgemmLinear without the code matrix (the activation parameters land in scaleOut / zeroOut).
Napi::Value LinearQuantizing(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&] {
    const auto [x, out, T, K, N] = rowsArg(env, info, 0, 14, "x", DType::F32, "qgemmLinearQuantizing");
    float* so = const_cast<float*>(optF32(env, info[1], "scaleOut", T));
    float* zo = const_cast<float*>(optF32(env, info[2], "zeroOut", T));
    if (!so || !zo) throwCode(env, "QDM_BAD_ARGUMENT", "qgemmLinearQuantizing: scaleOut and zeroOut are required");
    qg::Weights w = weightsArg(env, info, 9, N, K, static_cast<int>(intArg(info, 15)));
    qg::Activations lr{nullptr, T, K, nullptr, nullptr, 0};
    lowRankArg(env, info, 16, T, N, lr);
    qg::linearQuantizing(x.ptr<float>(), T, K, boolArg(info, 3), float(numberArg(info, 4, 1.0)), float(numberArg(info, 5)),
                         float(numberArg(info, 6, -128)), float(numberArg(info, 7, 127)), optF32(env, info[8], "colFactor", K), w,
                         out.ptr<float>(), so, zo, lr.lowRankXa, lr.lowRankB, lr.lowRank);
    return env.Undefined();
  });
}

// qgemmConv2d(x f32 NCHW, packed, rowSums, wScale, wZero|null, bias|null, out f32 NCHW, bits, kh, kw,
//             strideH, strideW, padH, padW, dilH, dilW, scale, zero, qmin, qmax, col f32 [C]|null)
Napi::Value Conv2d(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&] {
    View x = needDense(env, info[0], "x", DType::F32), out = needDense(env, info[6], "out", DType::F32);
    if (x.ndim != 4 || out.ndim != 4) throwCode(env, "QDM_SHAPE_MISMATCH", "qgemmConv2d: x and out must be 4-d");
    qg::QConvParams p{intArg(info, 8), intArg(info, 9), intArg(info, 10, 1), intArg(info, 11, 1), intArg(info, 12), intArg(info, 13), intArg(info, 14, 1), intArg(info, 15, 1)};
    const int64_t C = x.shape[1];
    qg::Weights w = weightsArg(env, info, 1, out.shape[1], C * p.kh * p.kw, static_cast<int>(intArg(info, 7)));
    qg::conv2d(x, w, p, float(numberArg(info, 16, 1.0)), float(numberArg(info, 17)), float(numberArg(info, 18, -128)),
               float(numberArg(info, 19, 127)), optF32(env, info[20], "colFactor", C), out);
    return env.Undefined();
  });
}

// qgemmKernelInfo(): { name, mr, available }
Napi::Value KernelInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("name", qg::kernelName());
  o.Set("mr", qg::kernelRows());
  o.Set("nr", qg::kQPanel);
  Napi::Array avail = Napi::Array::New(env);
  uint32_t i = 0;
  if (cpu::hasAvx512Vnni()) avail.Set(i++, "avx512-vnni");
  if (cpu::hasAvx2()) avail.Set(i++, "avx2");
  avail.Set(i++, "scalar");
  o.Set("available", avail);
  return o;
}

// forceQgemmKernel(name): "avx512-vnni" | "avx2" | "scalar" | "auto"; false when not usable here.
Napi::Value ForceKernel(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&] {
    if (info.Length() < 1 || !info[0].IsString()) throwCode(env, "QDM_BAD_ARGUMENT", "forceQgemmKernel: expected a kernel name");
    const std::string name = info[0].As<Napi::String>().Utf8Value();
    if (name != "auto" && name != "avx512-vnni" && name != "avx2" && name != "scalar")
      throwCode(env, "QDM_BAD_ARGUMENT", "forceQgemmKernel: unknown kernel '" + name + "' (auto, avx512-vnni, avx2, scalar)");
    return Napi::Value(Napi::Boolean::New(env, qg::forceKernel(name.c_str())));
  });
}
}  // namespace

void registerQGemm(Napi::Env env, Napi::Object exports) {
  QDM_EXPORT(exports, "qgemmPackedBytes", PackedBytes);
  QDM_EXPORT(exports, "qgemmPackWeights", PackWeights);
  QDM_EXPORT(exports, "qgemmQuantizeActs", QuantizeActs);
  QDM_EXPORT(exports, "qgemmLinear", Linear);
  QDM_EXPORT(exports, "qgemmLinearQuantizing", LinearQuantizing);
  QDM_EXPORT(exports, "qgemmConv2d", Conv2d);
  QDM_EXPORT(exports, "qgemmKernelInfo", KernelInfo);
  QDM_EXPORT(exports, "forceQgemmKernel", ForceKernel);
}
}  // namespace qdm::binding
