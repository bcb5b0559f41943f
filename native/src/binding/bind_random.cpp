#include "binding/common.h"
#include "qdm/cpu.h"

namespace qdm::binding {
namespace {
// random(dist, out, seedHi, seedLo, offset, p0, p1): seed split in two 32-bit halves, offset < 2^53.
Napi::Value Random(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&] {
    uint64_t seed = (static_cast<uint64_t>(intArg(info, 2)) << 32) | static_cast<uint32_t>(intArg(info, 3));
    cpu::random(static_cast<int>(intArg(info, 0)), toView(env, info[1], "out"), seed, static_cast<uint64_t>(intArg(info, 4)),
                static_cast<float>(numberArg(info, 5)), static_cast<float>(numberArg(info, 6, 1.0)));
    return env.Undefined();
  });
}
}  // namespace
void registerRandom(Napi::Env env, Napi::Object exports) { QDM_EXPORT(exports, "random", Random); }
}  // namespace qdm::binding
