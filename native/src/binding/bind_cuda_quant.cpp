// CUDA bindings of the quant family (compiled only with CUDA): the fake-quant kernels and the
// 8-bit GEMM. Names and argument lists are those of the CPU bindings (bind_quant.cpp,
// bind_qgemm.cpp) so packages/core/src/backend/cuda.ts dispatches by name; the differences:
// float operands x / gradOut / out / gradX may also be f16 or bf16; qgemm codes may be f8e4m3
// (the fp8 path, sm_89+), activation zero points may then be null; qgemm outputs may be f16/bf16.
// The packed weight layout is the CUDA one (qgemmPackedBytes here gives its size).
#include <algorithm>

#include "binding/common.h"
#include "qdm/cuda_device.h"
#include "qdm/cuda_quant.h"

namespace qdm::binding {
#ifdef QDM_WITH_CUDA
namespace {
bool isFloat(DType d) { return d == DType::F32 || d == DType::F16 || d == DType::BF16; }
View needDense(Napi::Env env, const Napi::Value& v, const char* what, DType dt) {
  View w = toDeviceView(env, v, what);
  if (w.dtype != dt || !w.contiguous())
    throwCode(env, "QDM_BAD_ARGUMENT", std::string(what) + ": contiguous " + dtypeName(dt) + " expected, got " + dtypeName(w.dtype));
  return w;
}
View needFloat(Napi::Env env, const Napi::Value& v, const char* what) {
  View w = toDeviceView(env, v, what);
  if (!isFloat(w.dtype) || !w.contiguous()) throwCode(env, "QDM_BAD_ARGUMENT", std::string(what) + ": contiguous f32, f16 or bf16 expected");
  return w;
}
View optFloat(Napi::Env env, const Napi::Value& v, const char* what) {
  if (v.IsNull() || v.IsUndefined()) return View{};
  return needFloat(env, v, what);
}
// Optional f32 operand: null/undefined gives (nullptr, length 0).
float* optF32(Napi::Env env, const Napi::Value& v, const char* what, int64_t* len = nullptr) {
  if (v.IsNull() || v.IsUndefined()) { if (len) *len = 0; return nullptr; }
  View w = needDense(env, v, what, DType::F32);
  if (len) *len = w.numel();
  return w.ptr<float>();
}
const float* optF32N(Napi::Env env, const Napi::Value& v, const char* what, int64_t need) {
  int64_t len = 0;
  const float* p = optF32(env, v, what, &len);
  if (p && len != need) throwCode(env, "QDM_SHAPE_MISMATCH", std::string(what) + ": " + std::to_string(len) + " entries, expected " + std::to_string(need));
  return p;
}
// Same checks as cpu::QuantLayout::validate.
cuda::FakeQuantLayout layoutArgs(Napi::Env env, const Napi::CallbackInfo& info, size_t at, int64_t n, int64_t scaleLen, int64_t zeroLen, int64_t colLen) {
  cuda::FakeQuantLayout L;
  L.mode = static_cast<int>(intArg(info, at));
  L.n = n;
  L.channels = intArg(info, at + 1, 1);
  L.inner = intArg(info, at + 2, 1);
  L.groupSize = intArg(info, at + 3, 1);
  L.cols = intArg(info, at + 4, 1);
  auto fail = [&](const std::string& m) { throwCode(env, "QDM_BAD_ARGUMENT", "fakeQuant: " + m); };
  switch (L.mode) {
    case 0: break;
    case 1:
      if (L.channels < 1 || L.inner < 1 || n % (L.channels * L.inner) != 0) fail("channel layout C=" + std::to_string(L.channels) + ", inner=" + std::to_string(L.inner) + " does not divide " + std::to_string(n) + " elements");
      break;
    case 2:
      if (L.groupSize < 1 || n % L.groupSize != 0) fail("group size " + std::to_string(L.groupSize) + " does not divide " + std::to_string(n) + " elements");
      break;
    case 3:
      if (L.cols < 1 || n % L.cols != 0) fail("separable column count " + std::to_string(L.cols) + " does not divide " + std::to_string(n) + " elements");
      if (colLen != L.cols) fail("column scale has " + std::to_string(colLen) + " entries, expected " + std::to_string(L.cols));
      break;
    default: fail("unknown granularity code " + std::to_string(L.mode));
  }
  const int64_t P = L.params();
  if (scaleLen != P) fail("scale has " + std::to_string(scaleLen) + " entries, expected " + std::to_string(P));
  if (zeroLen != P) fail("zero point has " + std::to_string(zeroLen) + " entries, expected " + std::to_string(P));
  return L;
}
void sameSize(Napi::Env env, const View& a, int64_t n, const char* what) {
  if (a.numel() != n) throwCode(env, "QDM_SHAPE_MISMATCH", std::string(what) + ": " + std::to_string(a.numel()) + " elements, expected " + std::to_string(n));
}

// fakeQuantForward(x, scale, zero, colScale|null, out, qmin, qmax, mode, channels, inner, groupSize, cols)
Napi::Value FakeQuantForward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&] {
    View x = needFloat(env, info[0], "x"), s = needDense(env, info[1], "scale", DType::F32), z = needDense(env, info[2], "zeroPoint", DType::F32);
    int64_t colLen = 0;
    const float* col = optF32(env, info[3], "colScale", &colLen);
    View out = needFloat(env, info[4], "out");
    sameSize(env, out, x.numel(), "fakeQuantForward out");
    cuda::FakeQuantLayout L = layoutArgs(env, info, 7, x.numel(), s.numel(), z.numel(), colLen);
    cuda::fakeQuantForward(x, s.ptr<float>(), col, z.ptr<float>(), out, L, float(numberArg(info, 5)), float(numberArg(info, 6)));
    return env.Undefined();
  });
}
// fakeQuantBackward(x, scale, zero, colScale|null, gradOut, gradX|null, gradScale|null, gradColScale|null, gradZero|null,
//                   qmin, qmax, mode, channels, inner, groupSize, cols)
Napi::Value FakeQuantBackward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&] {
    View x = needFloat(env, info[0], "x"), s = needDense(env, info[1], "scale", DType::F32), z = needDense(env, info[2], "zeroPoint", DType::F32);
    int64_t colLen = 0, gsLen = 0, gcLen = 0, gzLen = 0;
    const float* col = optF32(env, info[3], "colScale", &colLen);
    View g = needFloat(env, info[4], "gradOut");
    sameSize(env, g, x.numel(), "fakeQuantBackward gradOut");
    View gx = optFloat(env, info[5], "gradX");
    float* gs = optF32(env, info[6], "gradScale", &gsLen);
    float* gc = optF32(env, info[7], "gradColScale", &gcLen);
    float* gz = optF32(env, info[8], "gradZero", &gzLen);
    if ((gx.data && gx.numel() != x.numel()) || (gs && gsLen != s.numel()) || (gc && gcLen != colLen) || (gz && gzLen != z.numel()))
      throwCode(env, "QDM_SHAPE_MISMATCH", "fakeQuantBackward: a gradient buffer does not match its operand's size");
    cuda::FakeQuantLayout L = layoutArgs(env, info, 11, x.numel(), s.numel(), z.numel(), colLen);
    cuda::fakeQuantBackward(x, s.ptr<float>(), col, z.ptr<float>(), g, gx, gs, gc, gz, L, float(numberArg(info, 9)), float(numberArg(info, 10)));
    return env.Undefined();
  });
}
// quantizePack(x, scale, zero, colScale|null, codes(i8|u8|i4), qmin, qmax, mode, channels, inner, groupSize, cols)
Napi::Value QuantizePack(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&] {
    View x = needFloat(env, info[0], "x"), s = needDense(env, info[1], "scale", DType::F32), z = needDense(env, info[2], "zeroPoint", DType::F32);
    int64_t colLen = 0;
    const float* col = optF32(env, info[3], "colScale", &colLen);
    View codes = toDeviceView(env, info[4], "codes");
    if (!codes.contiguous()) throwCode(env, "QDM_BAD_ARGUMENT", "quantizePack: codes must be contiguous");
    sameSize(env, codes, x.numel(), "quantizePack codes");
    cuda::FakeQuantLayout L = layoutArgs(env, info, 7, x.numel(), s.numel(), z.numel(), colLen);
    cuda::quantizePack(x, s.ptr<float>(), col, z.ptr<float>(), codes, L, float(numberArg(info, 5)), float(numberArg(info, 6)));
    return env.Undefined();
  });
}
// dequantize(codes(i8|u8|i4), scale, zero, colScale|null, out, mode, channels, inner, groupSize, cols)
Napi::Value Dequantize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&] {
    View codes = toDeviceView(env, info[0], "codes");
    if (!codes.contiguous()) throwCode(env, "QDM_BAD_ARGUMENT", "dequantize: codes must be contiguous");
    View s = needDense(env, info[1], "scale", DType::F32), z = needDense(env, info[2], "zeroPoint", DType::F32);
    int64_t colLen = 0;
    const float* col = optF32(env, info[3], "colScale", &colLen);
    View out = needFloat(env, info[4], "out");
    sameSize(env, out, codes.numel(), "dequantize out");
    cuda::FakeQuantLayout L = layoutArgs(env, info, 5, out.numel(), s.numel(), z.numel(), colLen);
    cuda::dequantize(codes, s.ptr<float>(), col, z.ptr<float>(), out, L);
    return env.Undefined();
  });
}

// ---- 8-bit GEMM (bind_qgemm.cpp's names and argument lists) -----------------------------------
// qgemmPackedBytes(n, k, bits) -> number (the CUDA layout's size)
Napi::Value QgPackedBytes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Napi::Number::New(env, static_cast<double>(cuda::qgemmPackedBytes(intArg(info, 0), intArg(info, 1), static_cast<int>(intArg(info, 2)))));
}
// qgemmPackWeights(codes i8|i4|f8e4m3 [n,k] (or [O,C,1,1]), packed i8, rowSums i32 [n] (null allowed for f8e4m3), bits)
Napi::Value QgPackWeights(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&] {
    View codes = toDeviceView(env, info[0], "codes");
    View packed = needDense(env, info[1], "packed", DType::I8);
    const bool fp8 = codes.dtype == DType::F8E4M3;
    View rs = (fp8 && (info[2].IsNull() || info[2].IsUndefined())) ? View{} : needDense(env, info[2], "rowSums", DType::I32);
    const int bits = static_cast<int>(intArg(info, 3));
    if (!codes.contiguous()) throwCode(env, "QDM_BAD_ARGUMENT", "qgemmPackWeights: codes must be contiguous");
    if (codes.ndim == 4 && codes.shape[2] * codes.shape[3] != 1)
      throwCode(env, "QDM_UNSUPPORTED", "qgemmPackWeights: CUDA has no quantized conv2d yet; only 1x1 conv weights can be packed (as [O, C])");
    if (codes.ndim != 2 && codes.ndim != 4) throwCode(env, "QDM_SHAPE_MISMATCH", "qgemmPackWeights: codes must be 2-d or 4-d");
    if (bits != 8 && bits != 4) throwCode(env, "QDM_BAD_ARGUMENT", "qgemmPackWeights: bits must be 8 or 4");
    const int64_t n = codes.shape[0], k = codes.numel() / std::max<int64_t>(n, 1);
    if (packed.numel() != cuda::qgemmPackedBytes(n, k, bits) || (rs.data && rs.numel() != n))
      throwCode(env, "QDM_SHAPE_MISMATCH", "qgemmPackWeights: output buffers have the wrong size");
    View flat = codes;
    flat.ndim = 2; flat.shape[0] = n; flat.shape[1] = k; flat.strides[0] = k; flat.strides[1] = 1;
    cuda::qgemmPackWeights(flat, bits, packed.ptr<uint8_t>(), rs.ptr<int32_t>());
    return env.Undefined();
  });
}
// qgemmQuantizeActs(x f32|f16|bf16 [T,K], codes i8|f8e4m3 [T,K], scaleOut f32 [T], zeroOut f32 [T] (null allowed for f8e4m3),
//                   dynamic, scale, zero, qmin, qmax, col|null). f8e4m3 codes are always dynamic per token (amax / 448).
Napi::Value QgQuantizeActs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&] {
    View x = needFloat(env, info[0], "x");
    View codes = toDeviceView(env, info[1], "codes");
    if (x.ndim != 2 || codes.ndim != 2 || codes.shape[0] != x.shape[0] || codes.shape[1] != x.shape[1] || codes.strides[1] != 1)
      throwCode(env, "QDM_SHAPE_MISMATCH", "qgemmQuantizeActs: x must be [T, K] and codes [T, K] with unit column stride");
    const int64_t T = x.shape[0], K = x.shape[1];
    const bool fp8 = codes.dtype == DType::F8E4M3;
    if (!fp8 && codes.dtype != DType::I8) throwCode(env, "QDM_BAD_DTYPE", std::string("qgemmQuantizeActs: codes must be i8 or f8e4m3, got ") + dtypeName(codes.dtype));
    const float* so = optF32N(env, info[2], "scaleOut", T);
    const float* zo = optF32N(env, info[3], "zeroOut", T);
    if (!so || (!zo && !fp8)) throwCode(env, "QDM_BAD_ARGUMENT", "qgemmQuantizeActs: scaleOut and zeroOut are required");
    cuda::quantizeActivations(x, T, K, boolArg(info, 4), float(numberArg(info, 5, 1.0)), float(numberArg(info, 6)), float(numberArg(info, 7, -128)),
                              float(numberArg(info, 8, 127)), optF32N(env, info[9], "colFactor", K), codes, const_cast<float*>(so), const_cast<float*>(zo));
    return env.Undefined();
  });
}
// qgemmLinear(codes i8|f8e4m3 [T,K], actScale f32 [T]|[1], actZero f32 [T]|[1]|null, packed, rowSums|null, wScale, wZero|null, bias|null,
//             out f32|f16|bf16 [T,N], bits, xa [T,r]|null, b [r,N]|null)
Napi::Value QgLinear(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&] {
    View codes = toDeviceView(env, info[0], "codes"), out = toDeviceView(env, info[8], "out");
    if (codes.ndim != 2 || out.ndim != 2 || out.shape[0] != codes.shape[0] || codes.strides[1] != 1 || out.strides[1] != 1)
      throwCode(env, "QDM_SHAPE_MISMATCH", "qgemmLinear: codes [T, K] and out [T, N] with unit column strides expected");
    if (!isFloat(out.dtype)) throwCode(env, "QDM_BAD_DTYPE", std::string("qgemmLinear: out must be f32, f16 or bf16, got ") + dtypeName(out.dtype));
    const bool fp8 = codes.dtype == DType::F8E4M3;
    if (!fp8 && codes.dtype != DType::I8) throwCode(env, "QDM_BAD_DTYPE", std::string("qgemmLinear: codes must be i8 or f8e4m3, got ") + dtypeName(codes.dtype));
    const int64_t T = codes.shape[0], K = codes.shape[1], N = out.shape[1];
    const int bits = static_cast<int>(intArg(info, 9));
    if (bits != 8 && bits != 4) throwCode(env, "QDM_BAD_ARGUMENT", "qgemm: bits must be 8 or 4");
    View sa = needDense(env, info[1], "actScale", DType::F32);
    int64_t zaLen = 0;
    const float* za = optF32(env, info[2], "actZero", &zaLen);
    if ((sa.numel() != T && sa.numel() != 1) || (za && zaLen != sa.numel())) throwCode(env, "QDM_SHAPE_MISMATCH", "qgemmLinear: activation scale/zero must have T or 1 entries");
    if (!za && !fp8) throwCode(env, "QDM_BAD_ARGUMENT", "qgemmLinear: the activation zero point is required for int8 codes");
    View packed = needDense(env, info[3], "packed", DType::I8);
    if (packed.numel() != cuda::qgemmPackedBytes(N, K, bits)) throwCode(env, "QDM_SHAPE_MISMATCH", "qgemm: the packed weights do not match n, k and bits");
    View rs = (info[4].IsNull() || info[4].IsUndefined()) ? View{} : needDense(env, info[4], "rowSums", DType::I32);
    if (rs.data && rs.numel() != N) throwCode(env, "QDM_SHAPE_MISMATCH", "qgemm: rowSums must have n entries");
    if (!fp8 && !rs.data) throwCode(env, "QDM_BAD_ARGUMENT", "qgemm: rowSums are required for int8 weights");
    const float* ws = optF32N(env, info[5], "weight scale", N);
    if (!ws) throwCode(env, "QDM_BAD_ARGUMENT", "qgemm: the weight scale is required");
    const float* wz = optF32N(env, info[6], "weight zeroPoint", N);
    if (fp8 && (za || wz)) {
      // fp8 codes carry no zero point; a zero vector from the int8-shaped TS call is tolerated only as null.
      if (wz) throwCode(env, "QDM_BAD_ARGUMENT", "qgemmLinear: fp8 weights have no zero point");
      za = nullptr;
    }
    View bias = optFloat(env, info[7], "bias");
    if (bias.data && bias.numel() != N) throwCode(env, "QDM_SHAPE_MISMATCH", "qgemm: bias must have n entries");
    cuda::QgemmArgs a;
    a.kind = fp8 ? cuda::QgemmKind::Fp8 : cuda::QgemmKind::Int8;
    a.wbits = bits;
    a.a = codes.data; a.M = T; a.N = N; a.K = K; a.lda = codes.strides[0];
    a.packed = packed.ptr<uint8_t>(); a.wRowSums = rs.ptr<int32_t>();
    a.aScale = sa.ptr<float>(); a.aZero = za; a.aScaleStride = sa.numel() == T && T > 1 ? 1 : 0;
    a.wScale = ws; a.wZero = wz; a.bias = bias; a.out = out;
    if (!info[10].IsNull() && !info[10].IsUndefined()) {
      View xa = needFloat(env, info[10], "lowRank xa"), b = needFloat(env, info[11], "lowRank b");
      if (xa.ndim != 2 || b.ndim != 2 || xa.shape[0] != T || b.shape[1] != N || xa.shape[1] != b.shape[0])
        throwCode(env, "QDM_SHAPE_MISMATCH", "qgemmLinear: low-rank xa [T, r] and b [r, N] expected");
      a.lowXA = xa; a.lowB = b;
    }
    cuda::qgemm(a);
    return env.Undefined();
  });
}
// qgemmConv2d: the CUDA quantized convolution does not exist yet.
Napi::Value QgConv2d(const Napi::CallbackInfo& info) {
  throwCode(info.Env(), "QDM_UNSUPPORTED", "qgemmConv2d: no CUDA quantized conv2d yet (run quantConv2d on the CPU, or use a 1x1 conv as qgemmLinear)");
}
// qgemmKernelInfo(): { name, mr, nr, available }
Napi::Value QgKernelInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&] {
  Napi::Object o = Napi::Object::New(env);
  o.Set("name", "cuda-mma-m16n8k32");
  o.Set("mr", 128);
  o.Set("nr", 128);
  Napi::Array avail = Napi::Array::New(env);
  avail.Set(0u, "int8");
  if (cuda::computeCapability() >= 89) avail.Set(1u, "fp8-e4m3");
  o.Set("available", avail);
  return Napi::Value(o);
  });
}
// qgemmCudaPath(path?: 'auto' | 'mma' | 'wgmma') -> 'mma' | 'wgmma': sets (or, without an argument,
// only reads) the kernel W8 GEMMs take; returns the one in effect on the current device.
Napi::Value QgCudaPath(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&] {
    std::string path;
    const bool set = info.Length() > 0 && !info[0].IsUndefined() && !info[0].IsNull();
    if (set) {
      if (!info[0].IsString()) throwCode(env, "QDM_BAD_ARGUMENT", "qgemmCudaPath: path must be 'auto', 'mma' or 'wgmma'");
      path = info[0].As<Napi::String>().Utf8Value();
    }
    return Napi::Value(Napi::String::New(env, cuda::qgemmCudaPath(set ? path.c_str() : nullptr)));
  });
}
// qgemmWgmmaLayoutCheck(seed, mutation = 0) -> { outputs, mismatches, firstError }: the host-side
// emulation of the wgmma path's layout (no GPU used).
Napi::Value QgWgmmaLayoutCheck(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&] {
    const auto r = cuda::qgemmWgmmaLayoutCheck(static_cast<uint32_t>(intArg(info, 0)), static_cast<int>(intArg(info, 1, 0)));
    Napi::Object o = Napi::Object::New(env);
    o.Set("outputs", static_cast<double>(r.outputs));
    o.Set("mismatches", static_cast<double>(r.mismatches));
    o.Set("firstError", r.firstError);
    return Napi::Value(o);
  });
}
}  // namespace

void registerCudaQuant(Napi::Env env, Napi::Object cuda) {
  QDM_EXPORT(cuda, "fakeQuantForward", FakeQuantForward);
  QDM_EXPORT(cuda, "fakeQuantBackward", FakeQuantBackward);
  QDM_EXPORT(cuda, "quantizePack", QuantizePack);
  QDM_EXPORT(cuda, "dequantize", Dequantize);
  QDM_EXPORT(cuda, "qgemmPackedBytes", QgPackedBytes);
  QDM_EXPORT(cuda, "qgemmPackWeights", QgPackWeights);
  QDM_EXPORT(cuda, "qgemmQuantizeActs", QgQuantizeActs);
  QDM_EXPORT(cuda, "qgemmLinear", QgLinear);
  QDM_EXPORT(cuda, "qgemmConv2d", QgConv2d);
  QDM_EXPORT(cuda, "qgemmKernelInfo", QgKernelInfo);
  QDM_EXPORT(cuda, "qgemmCudaPath", QgCudaPath);
  QDM_EXPORT(cuda, "qgemmWgmmaLayoutCheck", QgWgmmaLayoutCheck);
}
#endif
}  // namespace qdm::binding
