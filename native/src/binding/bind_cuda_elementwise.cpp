// CUDA bindings of the elementwise family: copyCast, fill, binary, unary, unaryBackward, where,
// reduce, random, indexRows, indexAddRows and upsample (nearest), each with the CPU binding's
// name and argument list (bind_core/elementwise/reduce/random/index/nn.cpp), device views in
// place of host views. Launchers are in src/cuda/{elementwise,reduce,random,indexing}.cu.
#include "binding/common.h"

#ifdef QDM_WITH_CUDA
#include "qdm/cuda_elementwise.h"
#endif

namespace qdm::binding {
#ifdef QDM_WITH_CUDA
namespace {

Napi::Value CopyCast(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&] {
    cuda::copyCast(toDeviceView(env, info[0], "src"), toDeviceView(env, info[1], "dst"));
    return env.Undefined();
  });
}
Napi::Value Fill(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&] {
    cuda::fill(toDeviceView(env, info[0], "dst"), numberArg(info, 1));
    return env.Undefined();
  });
}
Napi::Value Binary(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&] {
    cuda::binary(static_cast<int>(intArg(info, 0)), toDeviceView(env, info[1], "a"), toDeviceView(env, info[2], "b"), toDeviceView(env, info[3], "out"));
    return env.Undefined();
  });
}
Napi::Value Unary(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&] {
    cuda::unary(static_cast<int>(intArg(info, 0)), toDeviceView(env, info[1], "x"), toDeviceView(env, info[2], "out"),
                static_cast<float>(numberArg(info, 3)), static_cast<float>(numberArg(info, 4)));
    return env.Undefined();
  });
}
Napi::Value UnaryBackward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&] {
    cuda::unaryBackward(static_cast<int>(intArg(info, 0)), toDeviceView(env, info[1], "x"), toDeviceView(env, info[2], "grad"),
                        toDeviceView(env, info[3], "out"), static_cast<float>(numberArg(info, 4)), static_cast<float>(numberArg(info, 5)));
    return env.Undefined();
  });
}
Napi::Value Where(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&] {
    cuda::where(toDeviceView(env, info[0], "cond"), toDeviceView(env, info[1], "a"), toDeviceView(env, info[2], "b"), toDeviceView(env, info[3], "out"));
    return env.Undefined();
  });
}
// reduce(op, x, reducedDims[], out)
Napi::Value Reduce(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&] {
    View x = toDeviceView(env, info[1], "x");
    bool reduced[kMaxDims] = {false};
    for (int64_t d : toInt64Vector(env, info[2], "dims")) {
      if (d < 0 || d >= x.ndim) throwCode(env, "QDM_BAD_ARGUMENT", "reduce: dim out of range");
      reduced[d] = true;
    }
    cuda::reduce(static_cast<int>(intArg(info, 0)), x, reduced, toDeviceView(env, info[3], "out"));
    return env.Undefined();
  });
}
// random(dist, out, seedHi, seedLo, offset, p0, p1)
Napi::Value Random(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&] {
    uint64_t seed = (static_cast<uint64_t>(intArg(info, 2)) << 32) | static_cast<uint32_t>(intArg(info, 3));
    cuda::random(static_cast<int>(intArg(info, 0)), toDeviceView(env, info[1], "out"), seed, static_cast<uint64_t>(intArg(info, 4)),
                 static_cast<float>(numberArg(info, 5)), static_cast<float>(numberArg(info, 6, 1.0)));
    return env.Undefined();
  });
}
// indexRows(src[R,D], idx[K], out[K,D]) and indexAddRows(src[K,D], idx[K], out[R,D])
Napi::Value IndexRows(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&] {
    cuda::indexRows(toDeviceView(env, info[0], "src"), toDeviceView(env, info[1], "index"), toDeviceView(env, info[2], "out"));
    return env.Undefined();
  });
}
Napi::Value IndexAddRows(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&] {
    cuda::indexAddRows(toDeviceView(env, info[0], "src"), toDeviceView(env, info[1], "index"), toDeviceView(env, info[2], "out"));
    return env.Undefined();
  });
}
// upsample(mode, a, b, scaleH, scaleW, alignCorners, backward): forward a = x [P,H,W], b = y [P,OH,OW];
// backward a = dy [P,OH,OW], b = dx [P,H,W].
Napi::Value Upsample(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&] {
    int mode = static_cast<int>(intArg(info, 0));
    if (mode != 0 && mode != 1) throwCode(env, "QDM_BAD_ARGUMENT", "upsample: mode must be 0 (nearest) or 1 (bilinear)");
    View a = toDeviceView(env, info[1], "x"), b = toDeviceView(env, info[2], "y");
    if (mode == 0) cuda::upsampleNearest(a, b, numberArg(info, 3), numberArg(info, 4), boolArg(info, 6));
    else cuda::upsampleBilinear(a, b, numberArg(info, 3), numberArg(info, 4), boolArg(info, 5), boolArg(info, 6));
    return env.Undefined();
  });
}

}  // namespace

void registerCudaElementwise(Napi::Env env, Napi::Object cuda) {
  QDM_EXPORT(cuda, "copyCast", CopyCast);
  QDM_EXPORT(cuda, "fill", Fill);
  QDM_EXPORT(cuda, "binary", Binary);
  QDM_EXPORT(cuda, "unary", Unary);
  QDM_EXPORT(cuda, "unaryBackward", UnaryBackward);
  QDM_EXPORT(cuda, "where", Where);
  QDM_EXPORT(cuda, "reduce", Reduce);
  QDM_EXPORT(cuda, "random", Random);
  QDM_EXPORT(cuda, "indexRows", IndexRows);
  QDM_EXPORT(cuda, "indexAddRows", IndexAddRows);
  QDM_EXPORT(cuda, "upsample", Upsample);
}
#endif
}  // namespace qdm::binding
