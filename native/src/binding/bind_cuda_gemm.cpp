// CUDA bindings of the gemm family (compiled only with CUDA). Placeholder until its kernels land.
#include "binding/common.h"

namespace qdm::binding {
#ifdef QDM_WITH_CUDA
void registerCudaGemm(Napi::Env, Napi::Object) {}
#endif
}  // namespace qdm::binding
