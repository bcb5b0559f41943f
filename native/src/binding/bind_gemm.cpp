#include "binding/common.h"
#include "cpu/gemm_internal.h"
#include "qdm/cpu.h"
#include "qdm/gemm.h"

namespace qdm::binding {
namespace {
// matmul(a [B,M,K], b [B,K,N], out [B,M,N], alpha, beta): any strides, batch stride 0 broadcasts.
Napi::Value Matmul(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&] {
    View a = toView(env, info[0], "a"), b = toView(env, info[1], "b"), c = toView(env, info[2], "out");
    if (a.ndim != 3 || b.ndim != 3 || c.ndim != 3) throwCode(env, "QDM_BAD_ARGUMENT", "matmul: operands must be 3-d views");
    if (a.dtype != DType::F32 || b.dtype != DType::F32 || c.dtype != DType::F32) throwCode(env, "QDM_DTYPE", "matmul: f32 only on the CPU");
    int64_t B = c.shape[0], M = c.shape[1], N = c.shape[2], K = a.shape[2];
    if (a.shape[0] != B || b.shape[0] != B || a.shape[1] != M || b.shape[1] != K || b.shape[2] != N)
      throwCode(env, "QDM_SHAPE_MISMATCH", "matmul: shapes do not agree");
    cpu::sgemmBatched(B, M, N, K, static_cast<float>(numberArg(info, 3, 1.0)), a.ptr<float>(), a.strides[0], a.strides[1], a.strides[2],
                      b.ptr<float>(), b.strides[0], b.strides[1], b.strides[2], static_cast<float>(numberArg(info, 4, 0.0)),
                      c.ptr<float>(), c.strides[0], c.strides[1], c.strides[2]);
    return env.Undefined();
  });
}

// gemmKernelInfo(): the micro-kernel and cache blocks the driver uses now, and the kernels
// this machine can run (for tests and benchmarks).
Napi::Value GemmKernelInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const cpu::gemm::KernelDesc& k = cpu::gemm::activeKernel();
  Napi::Object o = Napi::Object::New(env);
  o.Set("name", k.name);
  o.Set("mr", k.mr); o.Set("nr", k.nr); o.Set("mc", k.mc); o.Set("kc", k.kc); o.Set("nc", k.nc);
  Napi::Array avail = Napi::Array::New(env);
  uint32_t i = 0;
  if (cpu::hasAvx512()) avail.Set(i++, "avx512");
  if (cpu::hasAvx2()) avail.Set(i++, "avx2");
  avail.Set(i++, "scalar");
  o.Set("available", avail);
  return o;
}

// forceGemmKernel(name): "avx512" | "avx2" | "scalar" pins the micro-kernel, "auto" restores the
// best one. Returns false when the kernel cannot run on this machine.
Napi::Value ForceGemmKernel(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&] {
    if (info.Length() < 1 || !info[0].IsString()) throwCode(env, "QDM_BAD_ARGUMENT", "forceGemmKernel: expected a kernel name");
    const std::string name = info[0].As<Napi::String>().Utf8Value();
    if (name != "auto" && name != "avx512" && name != "avx2" && name != "scalar")
      throwCode(env, "QDM_BAD_ARGUMENT", "forceGemmKernel: unknown kernel '" + name + "' (auto, avx512, avx2, scalar)");
    return Napi::Value(Napi::Boolean::New(env, cpu::gemm::forceKernel(name.c_str())));
  });
}
}  // namespace
void registerGemm(Napi::Env env, Napi::Object exports) {
  QDM_EXPORT(exports, "matmul", Matmul);
  QDM_EXPORT(exports, "gemmKernelInfo", GemmKernelInfo);
  QDM_EXPORT(exports, "forceGemmKernel", ForceGemmKernel);
}
}  // namespace qdm::binding
