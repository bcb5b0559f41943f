// Implementation of qdm/cuda_device.h. Minimal first version (plain cudaMalloc, the legacy
// default stream); the caching allocator and the backend's own stream replace it.
#include <cuda_runtime.h>

#include <string>

#include "qdm/cuda_device.h"
#include "qdm/view.h"

namespace qdm::cuda {
namespace {
[[noreturn]] void fail(const char* code, const std::string& what, cudaError_t err) {
  throw KernelError(code, what + ": " + cudaGetErrorString(err));
}
}  // namespace

Stream currentStream() { return nullptr; }
int currentDevice() { int d = 0; cudaGetDevice(&d); return d; }
int smCount() {
  int n = 0;
  cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, currentDevice());
  return n;
}
int computeCapability() {
  int major = 0, minor = 0, d = currentDevice();
  cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, d);
  cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, d);
  return major * 10 + minor;
}
void* allocDevice(size_t bytes) {
  void* p = nullptr;
  if (bytes == 0) return nullptr;
  cudaError_t err = cudaMalloc(&p, bytes);
  if (err != cudaSuccess) { cudaGetLastError(); fail("QDM_CUDA_OUT_OF_MEMORY", "allocating " + std::to_string(bytes) + " bytes on the GPU", err); }
  return p;
}
void freeDevice(void* ptr) { if (ptr) cudaFree(ptr); }
void checkLaunch(const char* what) {
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) fail("QDM_CUDA_ERROR", what, err);
}
}  // namespace qdm::cuda
