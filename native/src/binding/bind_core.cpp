#include "binding/common.h"
#include "qdm/cpu.h"
#include "qdm/gemm.h"
#include "qdm/parallel.h"

namespace qdm::binding {
namespace {

Napi::Value Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("isa", cpu::isaName());
  o.Set("avx2", cpu::hasAvx2());
  o.Set("avx512", cpu::hasAvx512());
  o.Set("avx512vnni", cpu::hasAvx512Vnni());
  o.Set("threads", numThreads());
  o.Set("napiVersion", NAPI_VERSION);
  return o;
}

Napi::Value SetThreads(const Napi::CallbackInfo& info) {
  setNumThreads(static_cast<int>(intArg(info, 0, 1)));
  return Napi::Number::New(info.Env(), numThreads());
}

Napi::Value CopyCast(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&] {
    cpu::copyCast(toView(env, info[0], "src"), toView(env, info[1], "dst"));
    return env.Undefined();
  });
}

Napi::Value Fill(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&] {
    cpu::fill(toView(env, info[0], "dst"), numberArg(info, 1));
    return env.Undefined();
  });
}

Napi::Value PeakGflops(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), cpu::measurePeakGflops(static_cast<int>(intArg(info, 0, numThreads())), numberArg(info, 1, 0.5)));
}

}  // namespace

void registerCore(Napi::Env env, Napi::Object exports) {
  QDM_EXPORT(exports, "info", Info);
  QDM_EXPORT(exports, "setNumThreads", SetThreads);
  QDM_EXPORT(exports, "copyCast", CopyCast);
  QDM_EXPORT(exports, "fill", Fill);
  QDM_EXPORT(exports, "peakGflops", PeakGflops);
}
}  // namespace qdm::binding
