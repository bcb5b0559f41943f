// Binding for the fused CPU attention kernel (qdm/attention.h).
#include "binding/common.h"
#include "qdm/attention.h"

namespace qdm::binding {
namespace {
// attentionForward(q, k, v, mask|null, out, scale)
Napi::Value AttentionForward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&] {
    View q = toView(env, info[0], "q"), k = toView(env, info[1], "k"), v = toView(env, info[2], "v");
    bool hasMask = !(info[3].IsNull() || info[3].IsUndefined());
    View mask;
    if (hasMask) mask = toView(env, info[3], "mask");
    View out = toView(env, info[4], "out");
    cpu::attentionForward(q, k, v, hasMask ? &mask : nullptr, out, static_cast<float>(numberArg(info, 5, 1.0)));
    return env.Undefined();
  });
}
}  // namespace

void registerAttention(Napi::Env env, Napi::Object exports) { QDM_EXPORT(exports, "attentionForward", AttentionForward); }
}  // namespace qdm::binding
