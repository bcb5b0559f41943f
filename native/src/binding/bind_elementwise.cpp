#include "binding/common.h"
#include "qdm/cpu.h"

namespace qdm::binding {
namespace {

Napi::Value Binary(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&] {
    cpu::binary(static_cast<int>(intArg(info, 0)), toView(env, info[1], "a"), toView(env, info[2], "b"), toView(env, info[3], "out"));
    return env.Undefined();
  });
}
Napi::Value Unary(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&] {
    cpu::unary(static_cast<int>(intArg(info, 0)), toView(env, info[1], "x"), toView(env, info[2], "out"),
               static_cast<float>(numberArg(info, 3)), static_cast<float>(numberArg(info, 4)));
    return env.Undefined();
  });
}
Napi::Value UnaryBackward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&] {
    cpu::unaryBackward(static_cast<int>(intArg(info, 0)), toView(env, info[1], "x"), toView(env, info[2], "grad"),
                       toView(env, info[3], "out"), static_cast<float>(numberArg(info, 4)), static_cast<float>(numberArg(info, 5)));
    return env.Undefined();
  });
}
Napi::Value Where(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&] {
    cpu::where(toView(env, info[0], "cond"), toView(env, info[1], "a"), toView(env, info[2], "b"), toView(env, info[3], "out"));
    return env.Undefined();
  });
}

}  // namespace

void registerElementwise(Napi::Env env, Napi::Object exports) {
  QDM_EXPORT(exports, "binary", Binary);
  QDM_EXPORT(exports, "unary", Unary);
  QDM_EXPORT(exports, "unaryBackward", UnaryBackward);
  QDM_EXPORT(exports, "where", Where);
}
}  // namespace qdm::binding
