// CUDA runtime facade (see include/qdm/cuda.h). cudart is linked statically, so on a machine
// without a driver cudaGetDeviceCount fails with cudaErrorInsufficientDriver (35) and with no
// GPU cudaErrorNoDevice (100): both are reported as "no CUDA", with the reason.
#include <cuda_runtime.h>

#include "qdm/cuda.h"

namespace qdm::cuda {
bool compiled() { return true; }

int deviceCount(std::string& why) {
  int n = 0;
  cudaError_t err = cudaGetDeviceCount(&n);
  if (err == cudaSuccess && n > 0) return n;
  cudaGetLastError();
  int drv = 0;
  cudaDriverGetVersion(&drv);
  if (err == cudaErrorInsufficientDriver) {
    why = drv == 0 ? "no NVIDIA driver was found on this machine"
                   : "the NVIDIA driver (CUDA " + std::to_string(drv / 1000) + "." + std::to_string((drv % 1000) / 10) +
                         ") is older than this build's CUDA runtime " + std::to_string(CUDART_VERSION / 1000) + "." +
                         std::to_string((CUDART_VERSION % 1000) / 10);
  } else if (err == cudaErrorNoDevice || n == 0) {
    why = "no CUDA-capable GPU was found";
  } else {
    why = std::string("CUDA initialisation failed: ") + cudaGetErrorString(err);
  }
  return 0;
}

std::string deviceName(int device) {
  cudaDeviceProp p{};
  if (cudaGetDeviceProperties(&p, device) != cudaSuccess) return "";
  return p.name;
}
int runtimeVersion() { int v = 0; cudaRuntimeGetVersion(&v); return v; }
int driverVersion() { int v = 0; cudaDriverGetVersion(&v); return v; }
}  // namespace qdm::cuda
