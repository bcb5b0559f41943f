#include "binding/common.h"
#include "qdm/cuda.h"

namespace qdm::binding {
namespace {
Napi::Value CudaInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  std::string why;
  int n = cuda::compiled() ? cuda::deviceCount(why) : (cuda::deviceCount(why), 0);
  o.Set("compiled", cuda::compiled());
  o.Set("deviceCount", n);
  o.Set("reason", why);
  if (n > 0) o.Set("deviceName", cuda::deviceName(0));
  o.Set("runtimeVersion", cuda::runtimeVersion());
  o.Set("driverVersion", cuda::driverVersion());
  return o;
}
}  // namespace

void registerCuda(Napi::Env env, Napi::Object exports) {
  QDM_EXPORT(exports, "cudaInfo", CudaInfo);
#ifdef QDM_WITH_CUDA
  // The kernels are registered even without a GPU (they are only called once the TS backend
  // found a device), so a build can be inspected on any machine.
  Napi::Object cudaObj = Napi::Object::New(env);
  registerCudaRuntime(env, cudaObj);
  registerCudaElementwise(env, cudaObj);
  registerCudaNN(env, cudaObj);
  registerCudaGemm(env, cudaObj);
  registerCudaQuant(env, cudaObj);
  exports.Set("cuda", cudaObj);
#endif
}
}  // namespace qdm::binding
