#include "binding/common.h"
#include "qdm/nn.h"

namespace qdm::binding {
namespace {
const float* optF32(Napi::Env env, const Napi::Value& v, const char* what) {
  if (v.IsNull() || v.IsUndefined()) return nullptr;
  View w = toView(env, v, what);
  if (w.dtype != DType::F32 || !w.contiguous()) throwCode(env, "QDM_BAD_ARGUMENT", std::string(what) + ": contiguous f32 expected");
  return w.ptr<float>();
}
float* outF32(Napi::Env env, const Napi::Value& v, const char* what) { return const_cast<float*>(optF32(env, v, what)); }
View need(Napi::Env env, const Napi::Value& v, const char* what) {
  View w = toView(env, v, what);
  if (w.dtype != DType::F32 || !w.contiguous()) throwCode(env, "QDM_BAD_ARGUMENT", std::string(what) + ": contiguous f32 expected");
  return w;
}

// groupNormForward(x[N,C,S], w|null, b|null, y, mean[N,G], rstd[N,G], G, eps)
Napi::Value GroupNormForward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&] {
    View x = need(env, info[0], "x");
    int64_t G = intArg(info, 6);
    cpu::groupNormForward(x.ptr<float>(), optF32(env, info[1], "weight"), optF32(env, info[2], "bias"), need(env, info[3], "y").ptr<float>(),
                          need(env, info[4], "mean").ptr<float>(), need(env, info[5], "rstd").ptr<float>(), x.shape[0], x.shape[1], x.shape[2], G,
                          static_cast<float>(numberArg(info, 7, 1e-5)));
    return env.Undefined();
  });
}
// groupNormBackward(x, gy, w|null, mean, rstd, gx, gw|null, gb|null, G)
Napi::Value GroupNormBackward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&] {
    View x = need(env, info[0], "x");
    cpu::groupNormBackward(x.ptr<float>(), need(env, info[1], "gradOut").ptr<float>(), optF32(env, info[2], "weight"), need(env, info[3], "mean").ptr<float>(),
                           need(env, info[4], "rstd").ptr<float>(), need(env, info[5], "gradX").ptr<float>(), outF32(env, info[6], "gradW"), outF32(env, info[7], "gradB"),
                           x.shape[0], x.shape[1], x.shape[2], intArg(info, 8));
    return env.Undefined();
  });
}
// layerNormForward(x[M,D], w|null, b|null, y, mean[M], rstd[M], eps)
Napi::Value LayerNormForward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&] {
    View x = need(env, info[0], "x");
    cpu::layerNormForward(x.ptr<float>(), optF32(env, info[1], "weight"), optF32(env, info[2], "bias"), need(env, info[3], "y").ptr<float>(),
                          need(env, info[4], "mean").ptr<float>(), need(env, info[5], "rstd").ptr<float>(), x.shape[0], x.shape[1], static_cast<float>(numberArg(info, 6, 1e-5)));
    return env.Undefined();
  });
}
// layerNormBackward(x, gy, w|null, mean, rstd, gx, gw|null, gb|null)
Napi::Value LayerNormBackward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&] {
    View x = need(env, info[0], "x");
    cpu::layerNormBackward(x.ptr<float>(), need(env, info[1], "gradOut").ptr<float>(), optF32(env, info[2], "weight"), need(env, info[3], "mean").ptr<float>(),
                           need(env, info[4], "rstd").ptr<float>(), need(env, info[5], "gradX").ptr<float>(), outF32(env, info[6], "gradW"), outF32(env, info[7], "gradB"),
                           x.shape[0], x.shape[1]);
    return env.Undefined();
  });
}
// softmaxForward(x[M,D], y, log) / softmaxBackward(y, gy, gx, log)
Napi::Value SoftmaxForward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&] {
    View x = need(env, info[0], "x");
    cpu::softmaxForward(x.ptr<float>(), need(env, info[1], "y").ptr<float>(), x.shape[0], x.shape[1], boolArg(info, 2));
    return env.Undefined();
  });
}
Napi::Value SoftmaxBackward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&] {
    View y = need(env, info[0], "y");
    cpu::softmaxBackward(y.ptr<float>(), need(env, info[1], "gradOut").ptr<float>(), need(env, info[2], "gradX").ptr<float>(), y.shape[0], y.shape[1], boolArg(info, 3));
    return env.Undefined();
  });
}
// upsample(mode 0 nearest / 1 bilinear, x[P,H,W], y[P,OH,OW], scaleH, scaleW, alignCorners, backward)
// backward: x is gradOut [P,OH,OW], y is gradIn [P,H,W]
Napi::Value Upsample(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&] {
    int mode = static_cast<int>(intArg(info, 0));
    View a = need(env, info[1], "x"), b = need(env, info[2], "y");
    bool backward = boolArg(info, 6);
    const View& in = backward ? b : a; const View& out = backward ? a : b;
    int64_t P = in.shape[0], H = in.shape[1], W = in.shape[2], OH = out.shape[1], OW = out.shape[2];
    if (mode == 0) cpu::upsampleNearest(a.ptr<float>(), b.ptr<float>(), P, H, W, OH, OW, numberArg(info, 3), numberArg(info, 4), backward);
    else cpu::upsampleBilinear(a.ptr<float>(), b.ptr<float>(), P, H, W, OH, OW, numberArg(info, 3), numberArg(info, 4), boolArg(info, 5), backward);
    return env.Undefined();
  });
}
}  // namespace

void registerNN(Napi::Env env, Napi::Object exports) {
  QDM_EXPORT(exports, "groupNormForward", GroupNormForward);
  QDM_EXPORT(exports, "groupNormBackward", GroupNormBackward);
  QDM_EXPORT(exports, "layerNormForward", LayerNormForward);
  QDM_EXPORT(exports, "layerNormBackward", LayerNormBackward);
  QDM_EXPORT(exports, "softmaxForward", SoftmaxForward);
  QDM_EXPORT(exports, "softmaxBackward", SoftmaxBackward);
  QDM_EXPORT(exports, "upsample", Upsample);
}
}  // namespace qdm::binding
