// N-API glue shared by every binding file: turning JS arguments into qdm::View, and C++
// failures into JS errors carrying a `code` that @qdm/core maps onto its QdmError classes.
//
// A view travels from JS as an array [typedArray, offsetElements, shape[], strides[], dtypeCode]
// (packages/core/src/backend/cpu.ts builds it). CPU storage is a JS ArrayBuffer, so kernels
// read and write it in place, with no copy and no ownership crossing the boundary.
#pragma once
#include <napi.h>

#include <string>
#include <vector>

#include "qdm/view.h"

namespace qdm::binding {

[[noreturn]] inline void throwCode(Napi::Env env, const std::string& code, const std::string& msg) {
  Napi::Error e = Napi::Error::New(env, msg);
  e.Set("code", Napi::String::New(env, code));
  throw e;
}

inline std::vector<int64_t> toInt64Vector(Napi::Env env, Napi::Value v, const char* what) {
  if (!v.IsArray()) throwCode(env, "QDM_BAD_ARGUMENT", std::string(what) + ": expected an array");
  Napi::Array a = v.As<Napi::Array>();
  std::vector<int64_t> out(a.Length());
  for (uint32_t i = 0; i < a.Length(); ++i) out[i] = a.Get(i).As<Napi::Number>().Int64Value();
  return out;
}

// Shape, strides, offset and dtype of a view array [storage, offset, shape, strides, dtype, ...]
// over `base` (capacity elements), with the bounds check: the furthest element reachable through
// the strides must lie inside the storage, so a wrong stride is an error, never a wild access.
inline View viewOfLayout(Napi::Env env, Napi::Array a, uint8_t* base, int64_t capacity, const char* what) {
  View view;
  view.dtype = static_cast<DType>(a.Get(4u).As<Napi::Number>().Int32Value());
  int64_t offset = a.Get(1u).As<Napi::Number>().Int64Value();
  auto shape = toInt64Vector(env, a.Get(2u), what);
  auto strides = toInt64Vector(env, a.Get(3u), what);
  if (shape.size() > static_cast<size_t>(kMaxDims) || shape.size() != strides.size())
    throwCode(env, "QDM_BAD_ARGUMENT", std::string(what) + ": rank over 8 or shape/strides mismatch");
  view.ndim = static_cast<int>(shape.size());
  int64_t lo = offset, hi = offset;
  bool empty = false;
  for (int i = 0; i < view.ndim; ++i) {
    view.shape[i] = shape[i];
    view.strides[i] = strides[i];
    if (shape[i] == 0) empty = true;
    else if (strides[i] > 0) hi += (shape[i] - 1) * strides[i];
    else lo += (shape[i] - 1) * strides[i];
  }
  if (!empty && (lo < 0 || hi >= capacity))
    throwCode(env, "QDM_BAD_ARGUMENT", std::string(what) + ": view reaches outside its storage");
  if (view.dtype == DType::I4) {
    // Packed nibbles: a view must start on a byte boundary.
    if (offset % 2 != 0) throwCode(env, "QDM_BAD_ARGUMENT", std::string(what) + ": an i4 view must start at an even element");
    view.data = base + offset / 2;
  } else {
    view.data = base + offset * static_cast<int64_t>(dtypeSize(view.dtype));
  }
  return view;
}

inline View toView(Napi::Env env, Napi::Value v, const char* what = "tensor") {
  if (!v.IsArray()) throwCode(env, "QDM_BAD_ARGUMENT", std::string(what) + ": expected a view array");
  Napi::Array a = v.As<Napi::Array>();
  Napi::Value buf = a.Get(0u);
  if (!buf.IsTypedArray()) throwCode(env, "QDM_BAD_ARGUMENT", std::string(what) + ": storage is not a typed array");
  Napi::TypedArray ta = buf.As<Napi::TypedArray>();
  DType dtype = static_cast<DType>(a.Get(4u).As<Napi::Number>().Int32Value());
  int64_t bytes = static_cast<int64_t>(ta.ByteLength());
  int64_t capacity = dtype == DType::I4 ? bytes * 2 : bytes / static_cast<int64_t>(dtypeSize(dtype));
  return viewOfLayout(env, a, static_cast<uint8_t*>(ta.ArrayBuffer().Data()) + ta.ByteOffset(), capacity, what);
}

// A CUDA view travels as [devicePointer (a Number: device addresses fit in 53 bits),
// offsetElements, shape[], strides[], dtypeCode, capacityElements]; see backend/cuda.ts.
inline View toDeviceView(Napi::Env env, Napi::Value v, const char* what = "tensor") {
  if (!v.IsArray()) throwCode(env, "QDM_BAD_ARGUMENT", std::string(what) + ": expected a device view array");
  Napi::Array a = v.As<Napi::Array>();
  if (!a.Get(0u).IsNumber()) throwCode(env, "QDM_BAD_ARGUMENT", std::string(what) + ": not a CUDA tensor (storage is not a device pointer)");
  auto base = reinterpret_cast<uint8_t*>(static_cast<uintptr_t>(a.Get(0u).As<Napi::Number>().Int64Value()));
  return viewOfLayout(env, a, base, a.Get(5u).As<Napi::Number>().Int64Value(), what);
}
// Optional device operand: null/undefined gives a View with data == nullptr.
inline View optDeviceView(Napi::Env env, Napi::Value v, const char* what) {
  if (v.IsNull() || v.IsUndefined()) return View{};
  return toDeviceView(env, v, what);
}

// Runs a kernel body, mapping C++ failures onto coded JS errors.
template <typename F>
inline Napi::Value guarded(Napi::Env env, F&& body) {
  try {
    return body();
  } catch (const Napi::Error&) {
    throw;
  } catch (const KernelError& e) {
    throwCode(env, e.code, e.what());
  } catch (const std::bad_alloc&) {
    throwCode(env, "QDM_OUT_OF_MEMORY", "out of host memory in a native kernel");
  } catch (const std::exception& e) {
    throwCode(env, "QDM_NATIVE_ERROR", e.what());
  }
}

inline double numberArg(const Napi::CallbackInfo& info, size_t i, double dflt = 0.0) {
  return info.Length() > i && info[i].IsNumber() ? info[i].As<Napi::Number>().DoubleValue() : dflt;
}
inline int64_t intArg(const Napi::CallbackInfo& info, size_t i, int64_t dflt = 0) {
  return info.Length() > i && info[i].IsNumber() ? info[i].As<Napi::Number>().Int64Value() : dflt;
}
inline bool boolArg(const Napi::CallbackInfo& info, size_t i, bool dflt = false) {
  return info.Length() > i && info[i].IsBoolean() ? info[i].As<Napi::Boolean>().Value() : dflt;
}

#define QDM_EXPORT(exports, name, fn) (exports).Set(name, Napi::Function::New(env, fn, name))

// One registration function per kernel family, each in its own bind_<family>.cpp.
void registerCore(Napi::Env env, Napi::Object exports);
void registerElementwise(Napi::Env env, Napi::Object exports);
void registerReduce(Napi::Env env, Napi::Object exports);
void registerGemm(Napi::Env env, Napi::Object exports);
void registerConv(Napi::Env env, Napi::Object exports);
void registerNN(Napi::Env env, Napi::Object exports);
void registerIndex(Napi::Env env, Napi::Object exports);
void registerRandom(Napi::Env env, Napi::Object exports);
void registerQuant(Napi::Env env, Napi::Object exports);
void registerCuda(Napi::Env env, Napi::Object exports);
void registerAttention(Napi::Env env, Napi::Object exports);
void registerQGemm(Napi::Env env, Napi::Object exports);
// CUDA kernel families: each fills the `cuda` export object (bind_cuda.cpp creates it when the
// addon was built with CUDA). Their kernels take the same names and arguments as the CPU ones,
// with device views, so packages/core/src/backend/cuda.ts dispatches by name.
void registerCudaRuntime(Napi::Env env, Napi::Object cuda);
void registerCudaElementwise(Napi::Env env, Napi::Object cuda);
void registerCudaNN(Napi::Env env, Napi::Object cuda);
void registerCudaGemm(Napi::Env env, Napi::Object cuda);
void registerCudaQuant(Napi::Env env, Napi::Object cuda);

}  // namespace qdm::binding
