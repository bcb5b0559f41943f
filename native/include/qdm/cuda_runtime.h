// Runtime services of the CUDA backend beyond the launcher API of cuda_device.h: transfers,
// allocator statistics, CUDA graph capture and device facts. Used by bind_cuda_runtime.cpp
// (host compiler, no CUDA header); implemented in src/cuda/device.cu.
//
// Synchronisation policy: everything is enqueued on the backend's own non-blocking stream.
// The only host waits are copyToHost (the caller reads the bytes right away), synchronize(),
// emptyCache() (cudaFree waits for the device) and the staging-buffer recycling of
// copyFromHost when all pinned buffers are still in flight.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace qdm::cuda {

struct AllocatorStats {
  int64_t bytesInUse = 0;      // sum of the (rounded) sizes of live blocks, graph-private included
  int64_t requestedBytes = 0;  // sum of the sizes callers asked for (live blocks)
  int64_t reserved = 0;        // bytes obtained with cudaMalloc and not yet released
  int64_t peak = 0;            // peak of bytesInUse since the last resetPeak()
  int64_t allocations = 0;     // allocDevice calls that returned a block
  int64_t cudaMallocs = 0;     // cudaMalloc calls (cache misses)
  int64_t cachedBytes = 0;     // reserved but free, reusable by anyone
  int64_t graphPrivateBytes = 0;  // free blocks held back for live CUDA graphs
};
AllocatorStats allocatorStats();
void resetPeak();
// Releases every cached free block to the driver (waits for the device); returns bytes released.
// Does nothing during graph capture.
int64_t emptyCache();

// Host <-> device copies through pinned staging buffers (chunked). copyFromHost returns once the
// host bytes are staged (the device copy runs in stream order); copyToHost waits for the stream.
// Both refuse to run during graph capture (a replay would re-read a recycled staging buffer).
void copyFromHost(void* dst, const void* src, size_t bytes);
void copyToHost(void* dst, const void* src, size_t bytes);
void memsetDevice(void* dst, int byteValue, size_t bytes);
// Waits for all work queued on the backend's stream.
void synchronize();

// CUDA graphs. graphBegin starts capturing the backend's stream (relaxed mode); graphEnd returns
// the handle of the instantiated graph. Blocks freed during the capture, and blocks allocated
// during it, stay private to that graph until graphDestroy, so a replay never writes memory
// that other work owns by then.
bool capturing();
int64_t graphBegin();
int64_t graphEnd();
void graphReplay(int64_t handle);
void graphDestroy(int64_t handle);
// Abandons a capture in progress (after an exception in the captured function).
void graphAbort();

struct DeviceFacts {
  int device = 0;
  std::string name;
  int major = 0, minor = 0, smCount = 0;
  int64_t totalMemory = 0, freeMemory = 0;
};
DeviceFacts deviceFacts();

}  // namespace qdm::cuda
