// CUDA bindings of the quant family (compiled only with CUDA). Placeholder until its kernels land.
#include "binding/common.h"

namespace qdm::binding {
#ifdef QDM_WITH_CUDA
void registerCudaQuant(Napi::Env, Napi::Object) {}
#endif
}  // namespace qdm::binding
