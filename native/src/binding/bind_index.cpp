#include "binding/common.h"

namespace qdm::binding {
void registerIndex(Napi::Env env, Napi::Object exports) { (void)env; (void)exports; }
}  // namespace qdm::binding
