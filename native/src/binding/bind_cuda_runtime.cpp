// CUDA bindings of the runtime family: device memory, transfers, statistics, graphs, device
// facts. Device pointers travel to JS as Numbers (addresses fit in 53 bits); packages/core's
// backend/cuda.ts wraps them in TensorStorage with a releaser that calls free().
#include "binding/common.h"

#ifdef QDM_WITH_CUDA
#include "qdm/cuda_device.h"
#include "qdm/cuda_runtime.h"
#endif

namespace qdm::binding {
#ifdef QDM_WITH_CUDA
namespace {

void* ptrArg(Napi::Env env, const Napi::CallbackInfo& info, size_t i, const char* op) {
  if (info.Length() <= i || !info[i].IsNumber()) throwCode(env, "QDM_BAD_ARGUMENT", std::string(op) + ": expected a device pointer (Number)");
  double v = info[i].As<Napi::Number>().DoubleValue();
  if (v < 0 || v != static_cast<double>(static_cast<int64_t>(v))) throwCode(env, "QDM_BAD_ARGUMENT", std::string(op) + ": invalid device pointer");
  return reinterpret_cast<void*>(static_cast<uintptr_t>(static_cast<int64_t>(v)));
}

size_t bytesArg(Napi::Env env, const Napi::CallbackInfo& info, size_t i, const char* op) {
  double v = numberArg(info, i, -1);
  if (!(v >= 0) || v != static_cast<double>(static_cast<int64_t>(v))) throwCode(env, "QDM_BAD_ARGUMENT", std::string(op) + ": byte count must be a non-negative integer");
  return static_cast<size_t>(v);
}

// The host side of a transfer: the typed array's own window, at least `bytes` long.
uint8_t* hostBytes(Napi::Env env, const Napi::Value& v, size_t bytes, const char* op) {
  if (!v.IsTypedArray()) throwCode(env, "QDM_BAD_ARGUMENT", std::string(op) + ": expected a typed array");
  Napi::TypedArray ta = v.As<Napi::TypedArray>();
  if (ta.ByteLength() < bytes)
    throwCode(env, "QDM_BAD_ARGUMENT", std::string(op) + ": the host array holds " + std::to_string(ta.ByteLength()) + " bytes, " + std::to_string(bytes) + " requested");
  return static_cast<uint8_t*>(ta.ArrayBuffer().Data()) + ta.ByteOffset();
}

Napi::Value Alloc(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&] {
    size_t bytes = bytesArg(env, info, 0, "cuda.alloc");
    void* p = cuda::allocDevice(bytes);
    return Napi::Number::New(env, static_cast<double>(reinterpret_cast<uintptr_t>(p)));
  });
}
Napi::Value Free(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&] {
    cuda::freeDevice(ptrArg(env, info, 0, "cuda.free"));
    return env.Undefined();
  });
}
// copyFromHost(ptr, typedArray, deviceByteOffset, bytes): the first `bytes` of the array's window.
Napi::Value CopyFromHost(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&] {
    uint8_t* dev = static_cast<uint8_t*>(ptrArg(env, info, 0, "cuda.copyFromHost"));
    size_t off = bytesArg(env, info, 2, "cuda.copyFromHost"), bytes = bytesArg(env, info, 3, "cuda.copyFromHost");
    cuda::copyFromHost(dev + off, hostBytes(env, info[1], bytes, "cuda.copyFromHost"), bytes);
    return env.Undefined();
  });
}
// copyToHost(ptr, typedArray, deviceByteOffset, bytes): waits for the stream.
Napi::Value CopyToHost(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&] {
    const uint8_t* dev = static_cast<const uint8_t*>(ptrArg(env, info, 0, "cuda.copyToHost"));
    size_t off = bytesArg(env, info, 2, "cuda.copyToHost"), bytes = bytesArg(env, info, 3, "cuda.copyToHost");
    cuda::copyToHost(hostBytes(env, info[1], bytes, "cuda.copyToHost"), dev + off, bytes);
    return env.Undefined();
  });
}
// memset(ptr, byteValue, bytes)
Napi::Value Memset(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&] {
    void* dev = ptrArg(env, info, 0, "cuda.memset");
    cuda::memsetDevice(dev, static_cast<int>(intArg(info, 1)) & 0xff, bytesArg(env, info, 2, "cuda.memset"));
    return env.Undefined();
  });
}
Napi::Value Synchronize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&] { cuda::synchronize(); return env.Undefined(); });
}
Napi::Value MemoryStats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&] {
    cuda::AllocatorStats s = cuda::allocatorStats();
    Napi::Object o = Napi::Object::New(env);
    o.Set("bytesInUse", static_cast<double>(s.bytesInUse));
    o.Set("requestedBytes", static_cast<double>(s.requestedBytes));
    o.Set("reserved", static_cast<double>(s.reserved));
    o.Set("peak", static_cast<double>(s.peak));
    o.Set("allocations", static_cast<double>(s.allocations));
    o.Set("cudaMallocs", static_cast<double>(s.cudaMallocs));
    o.Set("cachedBytes", static_cast<double>(s.cachedBytes));
    o.Set("graphPrivateBytes", static_cast<double>(s.graphPrivateBytes));
    return static_cast<Napi::Value>(o);
  });
}
Napi::Value ResetPeak(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&] { cuda::resetPeak(); return env.Undefined(); });
}
Napi::Value EmptyCache(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&] { return Napi::Number::New(env, static_cast<double>(cuda::emptyCache())); });
}
Napi::Value GraphBegin(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&] { return Napi::Number::New(env, static_cast<double>(cuda::graphBegin())); });
}
Napi::Value GraphEnd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&] { return Napi::Number::New(env, static_cast<double>(cuda::graphEnd())); });
}
Napi::Value GraphAbort(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&] { cuda::graphAbort(); return env.Undefined(); });
}
Napi::Value GraphReplay(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&] { cuda::graphReplay(intArg(info, 0, -1)); return env.Undefined(); });
}
Napi::Value GraphDestroy(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&] { cuda::graphDestroy(intArg(info, 0, -1)); return env.Undefined(); });
}
Napi::Value Capturing(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&] { return Napi::Boolean::New(env, cuda::capturing()); });
}
Napi::Value DeviceInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&] {
    cuda::DeviceFacts f = cuda::deviceFacts();
    Napi::Object o = Napi::Object::New(env);
    o.Set("device", f.device);
    o.Set("name", f.name);
    o.Set("capability", f.major * 10 + f.minor);
    o.Set("major", f.major);
    o.Set("minor", f.minor);
    o.Set("smCount", f.smCount);
    o.Set("totalMemory", static_cast<double>(f.totalMemory));
    o.Set("freeMemory", static_cast<double>(f.freeMemory));
    return static_cast<Napi::Value>(o);
  });
}

}  // namespace

void registerCudaRuntime(Napi::Env env, Napi::Object cuda) {
  QDM_EXPORT(cuda, "alloc", Alloc);
  QDM_EXPORT(cuda, "free", Free);
  QDM_EXPORT(cuda, "copyFromHost", CopyFromHost);
  QDM_EXPORT(cuda, "copyToHost", CopyToHost);
  QDM_EXPORT(cuda, "memset", Memset);
  QDM_EXPORT(cuda, "synchronize", Synchronize);
  QDM_EXPORT(cuda, "memoryStats", MemoryStats);
  QDM_EXPORT(cuda, "resetPeak", ResetPeak);
  QDM_EXPORT(cuda, "emptyCache", EmptyCache);
  QDM_EXPORT(cuda, "graphBegin", GraphBegin);
  QDM_EXPORT(cuda, "graphEnd", GraphEnd);
  QDM_EXPORT(cuda, "graphAbort", GraphAbort);
  QDM_EXPORT(cuda, "graphReplay", GraphReplay);
  QDM_EXPORT(cuda, "graphDestroy", GraphDestroy);
  QDM_EXPORT(cuda, "capturing", Capturing);
  QDM_EXPORT(cuda, "deviceInfo", DeviceInfo);
}
#endif
}  // namespace qdm::binding
