// CUDA bindings of the runtime family (compiled only with CUDA). Placeholder until its kernels land.
#include "binding/common.h"

namespace qdm::binding {
#ifdef QDM_WITH_CUDA
void registerCudaRuntime(Napi::Env, Napi::Object) {}
#endif
}  // namespace qdm::binding
