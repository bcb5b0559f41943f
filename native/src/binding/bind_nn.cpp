#include "binding/common.h"

namespace qdm::binding {
void registerNN(Napi::Env env, Napi::Object exports) { (void)env; (void)exports; }
}  // namespace qdm::binding
