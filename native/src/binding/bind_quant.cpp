// Bindings of the fake-quant kernels (qdm/quant.h). Layout arguments always come last, as
// (mode, channels, inner, groupSize, cols); packages/quant/src/kernels.ts builds them.
#include "binding/common.h"
#include "qdm/quant.h"

namespace qdm::binding {
namespace {
View needF32(Napi::Env env, const Napi::Value& v, const char* what) {
  View w = toView(env, v, what);
  if (w.dtype != DType::F32 || !w.contiguous()) throwCode(env, "QDM_BAD_ARGUMENT", std::string(what) + ": contiguous f32 expected");
  return w;
}
// Optional f32 operand: null/undefined gives (nullptr, length 0).
float* optF32(Napi::Env env, const Napi::Value& v, const char* what, int64_t* len = nullptr) {
  if (v.IsNull() || v.IsUndefined()) { if (len) *len = 0; return nullptr; }
  View w = needF32(env, v, what);
  if (len) *len = w.numel();
  return w.ptr<float>();
}
cpu::QuantLayout layoutArgs(const Napi::CallbackInfo& info, size_t at, int64_t n) {
  cpu::QuantLayout L;
  L.mode = static_cast<cpu::QuantMode>(intArg(info, at));
  L.n = n;
  L.channels = intArg(info, at + 1, 1);
  L.inner = intArg(info, at + 2, 1);
  L.groupSize = intArg(info, at + 3, 1);
  L.cols = intArg(info, at + 4, 1);
  return L;
}
void sameSize(Napi::Env env, const View& a, int64_t n, const char* what) {
  if (a.numel() != n) throwCode(env, "QDM_SHAPE_MISMATCH", std::string(what) + ": " + std::to_string(a.numel()) + " elements, expected " + std::to_string(n));
}

// fakeQuantForward(x, scale, zero, colScale|null, out, qmin, qmax, mode, channels, inner, groupSize, cols)
Napi::Value FakeQuantForward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&] {
    View x = needF32(env, info[0], "x"), s = needF32(env, info[1], "scale"), z = needF32(env, info[2], "zeroPoint");
    int64_t colLen = 0;
    const float* col = optF32(env, info[3], "colScale", &colLen);
    View out = needF32(env, info[4], "out");
    sameSize(env, out, x.numel(), "fakeQuantForward out");
    cpu::QuantLayout L = layoutArgs(info, 7, x.numel());
    L.validate(s.numel(), z.numel(), colLen);
    cpu::fakeQuantForward(x.ptr<float>(), s.ptr<float>(), col, z.ptr<float>(), out.ptr<float>(), L, float(numberArg(info, 5)), float(numberArg(info, 6)));
    return env.Undefined();
  });
}
// fakeQuantBackward(x, scale, zero, colScale|null, gradOut, gradX|null, gradScale|null, gradColScale|null, gradZero|null,
//                   qmin, qmax, mode, channels, inner, groupSize, cols)
Napi::Value FakeQuantBackward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&] {
    View x = needF32(env, info[0], "x"), s = needF32(env, info[1], "scale"), z = needF32(env, info[2], "zeroPoint");
    int64_t colLen = 0, gxLen = 0, gsLen = 0, gcLen = 0, gzLen = 0;
    const float* col = optF32(env, info[3], "colScale", &colLen);
    View g = needF32(env, info[4], "gradOut");
    sameSize(env, g, x.numel(), "fakeQuantBackward gradOut");
    float* gx = optF32(env, info[5], "gradX", &gxLen);
    float* gs = optF32(env, info[6], "gradScale", &gsLen);
    float* gc = optF32(env, info[7], "gradColScale", &gcLen);
    float* gz = optF32(env, info[8], "gradZero", &gzLen);
    if ((gx && gxLen != x.numel()) || (gs && gsLen != s.numel()) || (gc && gcLen != colLen) || (gz && gzLen != z.numel()))
      throwCode(env, "QDM_SHAPE_MISMATCH", "fakeQuantBackward: a gradient buffer does not match its operand's size");
    cpu::QuantLayout L = layoutArgs(info, 11, x.numel());
    L.validate(s.numel(), z.numel(), colLen);
    cpu::fakeQuantBackward(x.ptr<float>(), s.ptr<float>(), col, z.ptr<float>(), g.ptr<float>(), gx, gs, gc, gz, L, float(numberArg(info, 9)), float(numberArg(info, 10)));
    return env.Undefined();
  });
}
// quantizePack(x, scale, zero, colScale|null, codes(i8|u8|i4), qmin, qmax, mode, channels, inner, groupSize, cols)
Napi::Value QuantizePack(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&] {
    View x = needF32(env, info[0], "x"), s = needF32(env, info[1], "scale"), z = needF32(env, info[2], "zeroPoint");
    int64_t colLen = 0;
    const float* col = optF32(env, info[3], "colScale", &colLen);
    View codes = toView(env, info[4], "codes");
    if (!codes.contiguous()) throwCode(env, "QDM_BAD_ARGUMENT", "quantizePack: codes must be contiguous");
    sameSize(env, codes, x.numel(), "quantizePack codes");
    cpu::QuantLayout L = layoutArgs(info, 7, x.numel());
    L.validate(s.numel(), z.numel(), colLen);
    cpu::quantizePack(x.ptr<float>(), s.ptr<float>(), col, z.ptr<float>(), codes, L, float(numberArg(info, 5)), float(numberArg(info, 6)));
    return env.Undefined();
  });
}
// dequantize(codes(i8|u8|i4), scale, zero, colScale|null, out, mode, channels, inner, groupSize, cols)
Napi::Value Dequantize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&] {
    View codes = toView(env, info[0], "codes");
    if (!codes.contiguous()) throwCode(env, "QDM_BAD_ARGUMENT", "dequantize: codes must be contiguous");
    View s = needF32(env, info[1], "scale"), z = needF32(env, info[2], "zeroPoint");
    int64_t colLen = 0;
    const float* col = optF32(env, info[3], "colScale", &colLen);
    View out = needF32(env, info[4], "out");
    sameSize(env, out, codes.numel(), "dequantize out");
    cpu::QuantLayout L = layoutArgs(info, 5, out.numel());
    L.validate(s.numel(), z.numel(), colLen);
    cpu::dequantize(codes, s.ptr<float>(), col, z.ptr<float>(), out.ptr<float>(), L);
    return env.Undefined();
  });
}
// quantMseErrors(x f32 [rows * per], scales f32 [candidates * rows], zeros f32 [candidates * rows], rows, qmin, qmax) -> Float64Array
Napi::Value QuantMseErrors(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&] {
    View x = needF32(env, info[0], "x"), s = needF32(env, info[1], "scales"), z = needF32(env, info[2], "zeros");
    const int64_t rows = intArg(info, 3);
    if (rows < 1 || x.numel() % rows != 0) throwCode(env, "QDM_SHAPE_MISMATCH", "quantMseErrors: x must hold rows * per elements");
    if (s.numel() != z.numel() || s.numel() % rows != 0) throwCode(env, "QDM_SHAPE_MISMATCH", "quantMseErrors: scales / zeros must be [candidates, rows]");
    const int64_t candidates = s.numel() / rows;
    Napi::Float64Array err = Napi::Float64Array::New(env, static_cast<size_t>(candidates * rows));
    cpu::mseSearchErrors(x.ptr<float>(), rows, x.numel() / rows, s.ptr<float>(), z.ptr<float>(), candidates, numberArg(info, 4), numberArg(info, 5), err.Data());
    return Napi::Value(err);
  });
}
}  // namespace

void registerQuant(Napi::Env env, Napi::Object exports) {
  QDM_EXPORT(exports, "fakeQuantForward", FakeQuantForward);
  QDM_EXPORT(exports, "fakeQuantBackward", FakeQuantBackward);
  QDM_EXPORT(exports, "quantizePack", QuantizePack);
  QDM_EXPORT(exports, "dequantize", Dequantize);
  QDM_EXPORT(exports, "quantMseErrors", QuantMseErrors);
}
}  // namespace qdm::binding
