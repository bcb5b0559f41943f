#include "binding/common.h"
#include "qdm/nn.h"

namespace qdm::binding {
namespace {
// indexRows(src[R,D], idx[K], out[K,D]) and indexAddRows(src[K,D], idx[K], out[R,D])
Napi::Value IndexRows(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&] {
    View s = toView(env, info[0], "src"), i = toView(env, info[1], "index"), o = toView(env, info[2], "out");
    if (!s.contiguous() || !o.contiguous() || s.dtype != DType::F32 || o.dtype != DType::F32) throwCode(env, "QDM_BAD_ARGUMENT", "index: contiguous f32 rows expected");
    cpu::indexRows(s, i, o, s.shape[0]);
    return env.Undefined();
  });
}
Napi::Value IndexAddRows(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&] {
    View s = toView(env, info[0], "src"), i = toView(env, info[1], "index"), o = toView(env, info[2], "out");
    if (!s.contiguous() || !o.contiguous() || s.dtype != DType::F32 || o.dtype != DType::F32) throwCode(env, "QDM_BAD_ARGUMENT", "index backward: contiguous f32 rows expected");
    cpu::indexAddRows(s, i, o, o.shape[0]);
    return env.Undefined();
  });
}
}  // namespace
void registerIndex(Napi::Env env, Napi::Object exports) {
  QDM_EXPORT(exports, "indexRows", IndexRows);
  QDM_EXPORT(exports, "indexAddRows", IndexAddRows);
}
}  // namespace qdm::binding
