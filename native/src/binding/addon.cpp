#include "binding/common.h"

namespace qdm::binding {
Napi::Object Init(Napi::Env env, Napi::Object exports) {
  registerCore(env, exports);
  registerElementwise(env, exports);
  registerReduce(env, exports);
  registerGemm(env, exports);
  registerConv(env, exports);
  registerNN(env, exports);
  registerIndex(env, exports);
  registerRandom(env, exports);
  registerQuant(env, exports);
  registerCuda(env, exports);
  registerAttention(env, exports);
  registerQGemm(env, exports);
  return exports;
}
}  // namespace qdm::binding

static Napi::Object InitQdm(Napi::Env env, Napi::Object exports) { return qdm::binding::Init(env, exports); }
NODE_API_MODULE(qdm, InitQdm)
