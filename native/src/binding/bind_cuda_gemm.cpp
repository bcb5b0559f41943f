// CUDA bindings of the gemm family (compiled only with CUDA): matmul with the CPU binding's
// argument list (bind_gemm.cpp), plus forceGemmKernel / gemmKernelInfo to pick the exact
// SIMT path for f32 in tests. Validation mirrors the CPU binding; the launchers are in
// src/cuda/gemm.cu.
#include "binding/common.h"
#include "qdm/cuda_gemm.h"

namespace qdm::binding {
#ifdef QDM_WITH_CUDA
namespace {
bool isFloat(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16; }

// matmul(a [B,M,K], b [B,K,N], out [B,M,N], alpha, beta): any strides, batch stride 0 broadcasts.
Napi::Value Matmul(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&] {
    View a = toDeviceView(env, info[0], "a"), b = toDeviceView(env, info[1], "b"), c = toDeviceView(env, info[2], "out");
    if (a.ndim != 3 || b.ndim != 3 || c.ndim != 3) throwCode(env, "QDM_BAD_ARGUMENT", "matmul: operands must be 3-d views");
    if (!isFloat(a.dtype) || !isFloat(b.dtype) || !isFloat(c.dtype))
      throwCode(env, "QDM_DTYPE", std::string("matmul: f32, f16 or bf16 operands expected, got ") + dtypeName(a.dtype) + ", " + dtypeName(b.dtype) + " -> " + dtypeName(c.dtype));
    int64_t B = c.shape[0], M = c.shape[1], N = c.shape[2], K = a.shape[2];
    if (a.shape[0] != B || b.shape[0] != B || a.shape[1] != M || b.shape[1] != K || b.shape[2] != N)
      throwCode(env, "QDM_SHAPE_MISMATCH", "matmul: shapes do not agree");
    cuda::matmul(a, b, c, static_cast<float>(numberArg(info, 3, 1.0)), static_cast<float>(numberArg(info, 4, 0.0)));
    return env.Undefined();
  });
}

// forceGemmKernel("simt" | "auto"): "simt" runs every CUDA matmul with exact fp32 FMA (for
// tests); "auto" restores the tensor cores (TF32 for f32 operands).
Napi::Value ForceGemmKernel(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&] {
    if (info.Length() < 1 || !info[0].IsString()) throwCode(env, "QDM_BAD_ARGUMENT", "forceGemmKernel: expected a kernel name");
    const std::string name = info[0].As<Napi::String>().Utf8Value();
    if (name == "auto") cuda::setGemmMode(cuda::GemmMode::Auto);
    else if (name == "simt") cuda::setGemmMode(cuda::GemmMode::Simt);
    else throwCode(env, "QDM_BAD_ARGUMENT", "forceGemmKernel: unknown CUDA kernel '" + name + "' (auto, simt)");
    return Napi::Value(Napi::Boolean::New(env, true));
  });
}

Napi::Value GemmKernelInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("name", cuda::gemmMode() == cuda::GemmMode::Simt ? "simt" : "mma.sync");
  o.Set("f32", cuda::gemmMode() == cuda::GemmMode::Simt ? "fp32 simt" : "tf32 m16n8k8");
  o.Set("half", cuda::gemmMode() == cuda::GemmMode::Simt ? "fp32 simt" : "m16n8k16 fp32-accumulate");
  Napi::Array tiles = Napi::Array::New(env);
  tiles.Set(0u, "128x128x64B/8 warps/4 stages");
  tiles.Set(1u, "64x64x64B/4 warps/4 stages");
  o.Set("tiles", tiles);
  Napi::Array avail = Napi::Array::New(env);
  avail.Set(0u, "auto"); avail.Set(1u, "simt");
  o.Set("available", avail);
  return o;
}
}  // namespace

void registerCudaGemm(Napi::Env env, Napi::Object exports) {
  QDM_EXPORT(exports, "matmul", Matmul);
  QDM_EXPORT(exports, "forceGemmKernel", ForceGemmKernel);
  QDM_EXPORT(exports, "gemmKernelInfo", GemmKernelInfo);
}
#endif
}  // namespace qdm::binding
