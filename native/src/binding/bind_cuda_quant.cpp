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
}  // namespace

void registerCudaQuant(Napi::Env env, Napi::Object cuda) {
  QDM_EXPORT(cuda, "fakeQuantForward", FakeQuantForward);
  QDM_EXPORT(cuda, "fakeQuantBackward", FakeQuantBackward);
  QDM_EXPORT(cuda, "quantizePack", QuantizePack);
  QDM_EXPORT(cuda, "dequantize", Dequantize);
}
#endif
}  // namespace qdm::binding
