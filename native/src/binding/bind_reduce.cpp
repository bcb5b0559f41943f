#include "binding/common.h"
#include "qdm/cpu.h"

namespace qdm::binding {
namespace {
// reduce(op, x, reducedDims[], out)
Napi::Value Reduce(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&] {
    View x = toView(env, info[1], "x");
    bool reduced[kMaxDims] = {false};
    for (int64_t d : toInt64Vector(env, info[2], "dims")) {
      if (d < 0 || d >= x.ndim) throwCode(env, "QDM_BAD_ARGUMENT", "reduce: dim out of range");
      reduced[d] = true;
    }
    cpu::reduce(static_cast<int>(intArg(info, 0)), x, reduced, toView(env, info[3], "out"));
    return env.Undefined();
  });
}
}  // namespace
void registerReduce(Napi::Env env, Napi::Object exports) { QDM_EXPORT(exports, "reduce", Reduce); }
}  // namespace qdm::binding
