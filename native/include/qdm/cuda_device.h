// Host-side API of the CUDA backend, for kernel launchers (src/cuda/*.cu) and the CUDA bindings
// (src/binding/bind_cuda_*.cpp). It needs no CUDA header, so the bindings compile with the host
// compiler; every function is implemented in src/cuda/device.cu (only built when nvcc is found).
//
// Conventions every launcher follows:
// - operands are qdm::View whose `data` is a device pointer (offset already applied);
// - work is enqueued on currentStream() and never synchronises the host (a forward stays
//   asynchronous and can be captured into a CUDA graph);
// - temporary buffers come from allocDevice/freeDevice (a stream-ordered caching allocator:
//   freeing right after enqueueing the kernel that uses the block is safe, the block is only
//   reused by later work on the same stream);
// - after a launch, checkLaunch("<kernel>") turns a launch error into KernelError.
#pragma once
#include <cstddef>
#include <cstdint>

namespace qdm::cuda {
using Stream = void*;  // cudaStream_t

Stream currentStream();
int currentDevice();
int smCount();
int computeCapability();  // major * 10 + minor of the current device (80, 89, 90)

// Caching allocator. Throws KernelError("QDM_CUDA_OUT_OF_MEMORY", ...) when the device is full
// even after releasing the cache.
void* allocDevice(size_t bytes);
void freeDevice(void* ptr);

// Throws KernelError("QDM_CUDA_ERROR", "<what>: <cuda error string>") if the last launch failed.
void checkLaunch(const char* what);
}  // namespace qdm::cuda
