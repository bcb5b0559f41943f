#include "binding/common.h"
#include "qdm/conv.h"

namespace qdm::binding {
namespace {
cpu::ConvParams paramsFrom(const Napi::CallbackInfo& info, size_t i) {
  cpu::ConvParams p;
  p.strideH = intArg(info, i, 1); p.strideW = intArg(info, i + 1, 1);
  p.padH = intArg(info, i + 2, 0); p.padW = intArg(info, i + 3, 0);
  p.dilH = intArg(info, i + 4, 1); p.dilW = intArg(info, i + 5, 1);
  p.groups = intArg(info, i + 6, 1);
  return p;
}
// conv2dForward(x, w, bias|null, out, sH, sW, pH, pW, dH, dW, groups)
Napi::Value Forward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&] {
    const float* bias = nullptr;
    if (!info[2].IsNull() && !info[2].IsUndefined()) bias = toView(env, info[2], "bias").ptr<float>();
    cpu::conv2dForward(toView(env, info[0], "x"), toView(env, info[1], "weight"), bias, toView(env, info[3], "out"), paramsFrom(info, 4));
    return env.Undefined();
  });
}
// conv2dBackwardInput(gradOut, w, gradX, ...params)
Napi::Value BackwardInput(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&] {
    cpu::conv2dBackwardInput(toView(env, info[0], "gradOut"), toView(env, info[1], "weight"), toView(env, info[2], "gradX"), paramsFrom(info, 3));
    return env.Undefined();
  });
}
// conv2dBackwardWeight(x, gradOut, gradW, ...params)
Napi::Value BackwardWeight(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&] {
    cpu::conv2dBackwardWeight(toView(env, info[0], "x"), toView(env, info[1], "gradOut"), toView(env, info[2], "gradW"), paramsFrom(info, 3));
    return env.Undefined();
  });
}
}  // namespace
void registerConv(Napi::Env env, Napi::Object exports) {
  QDM_EXPORT(exports, "conv2dForward", Forward);
  QDM_EXPORT(exports, "conv2dBackwardInput", BackwardInput);
  QDM_EXPORT(exports, "conv2dBackwardWeight", BackwardWeight);
}
}  // namespace qdm::binding
