// CUDA bindings of the gemm family (compiled only with CUDA): matmul and conv2dForward /
// conv2dBackwardInput / conv2dBackwardWeight with the CPU bindings' argument lists
// (bind_gemm.cpp, bind_conv.cpp), plus forceGemmKernel / gemmKernelInfo to pick the exact SIMT
// path for f32 matmuls in tests. Validation mirrors the CPU side; the launchers are in
// src/cuda/gemm.cu and src/cuda/conv.cu.
#include <initializer_list>

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

// ---- conv2d --------------------------------------------------------------------------------
cuda::ConvParams convParamsFrom(Napi::Env env, const Napi::CallbackInfo& info, size_t i, const char* op) {
  cuda::ConvParams p;
  p.strideH = intArg(info, i, 1); p.strideW = intArg(info, i + 1, 1);
  p.padH = intArg(info, i + 2, 0); p.padW = intArg(info, i + 3, 0);
  p.dilH = intArg(info, i + 4, 1); p.dilW = intArg(info, i + 5, 1);
  p.groups = intArg(info, i + 6, 1);
  if (p.strideH < 1 || p.strideW < 1 || p.dilH < 1 || p.dilW < 1 || p.padH < 0 || p.padW < 0 || p.groups < 1 || p.groups > 65535)
    throwCode(env, "QDM_BAD_ARGUMENT", std::string(op) + ": invalid stride/padding/dilation/groups");
  return p;
}
int64_t outSize(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d) { return (in + 2 * p - d * (k - 1) - 1) / s + 1; }

// x [N,C,H,W], w [O,C/groups,KH,KW], y [N,O,OH,OW]: contiguous, every operand f32, f16 or bf16
// (two inputs of different dtypes are computed in f32, as on the CPU).
void checkConv(Napi::Env env, const View& x, const View& w, const View& y, const cuda::ConvParams& p, const char* op, std::initializer_list<DType> dtypes) {
  if (x.ndim != 4 || w.ndim != 4 || y.ndim != 4) throwCode(env, "QDM_SHAPE_MISMATCH", std::string(op) + ": expected 4-d input, weight and output");
  for (DType t : dtypes)
    if (!isFloat(t)) throwCode(env, "QDM_DTYPE", std::string(op) + ": f32, f16 or bf16 operands expected, got " + dtypeName(t));
  if (!x.contiguous() || !w.contiguous() || !y.contiguous()) throwCode(env, "QDM_BAD_ARGUMENT", std::string(op) + ": operands must be contiguous");
  if (x.shape[1] % p.groups || w.shape[0] % p.groups) throwCode(env, "QDM_SHAPE_MISMATCH", std::string(op) + ": groups must divide the input and output channels");
  if (w.shape[1] * p.groups != x.shape[1]) throwCode(env, "QDM_SHAPE_MISMATCH", std::string(op) + ": weight in-channels x groups != input channels");
  if (y.shape[0] != x.shape[0] || y.shape[1] != w.shape[0]) throwCode(env, "QDM_SHAPE_MISMATCH", std::string(op) + ": output batch/channels mismatch");
  if (y.shape[2] != outSize(x.shape[2], w.shape[2], p.strideH, p.padH, p.dilH) || y.shape[3] != outSize(x.shape[3], w.shape[3], p.strideW, p.padW, p.dilW))
    throwCode(env, "QDM_SHAPE_MISMATCH", std::string(op) + ": output spatial size does not follow from input, kernel, stride, padding and dilation");
  // The kernels index with 32-bit ints within a tensor.
  if (x.numel() >= (int64_t{1} << 31) || y.numel() >= (int64_t{1} << 31) || w.numel() >= (int64_t{1} << 31))
    throwCode(env, "QDM_BAD_ARGUMENT", std::string(op) + ": tensors over 2^31 elements are not supported on CUDA");
}

// conv2dForward(x, w, bias|null, out, sH, sW, pH, pW, dH, dW, groups)
Napi::Value ConvForward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&] {
    View x = toDeviceView(env, info[0], "x"), w = toDeviceView(env, info[1], "weight"), y = toDeviceView(env, info[3], "out");
    View bias = optDeviceView(env, info[2], "bias");
    cuda::ConvParams p = convParamsFrom(env, info, 4, "conv2d");
    checkConv(env, x, w, y, p, "conv2d", {x.dtype, w.dtype, y.dtype});
    if (bias.data && (bias.ndim != 1 || bias.shape[0] != w.shape[0] || !bias.contiguous() || !isFloat(bias.dtype)))
      throwCode(env, "QDM_SHAPE_MISMATCH", "conv2d: bias must be a contiguous float vector of out-channels length");
    cuda::conv2dForward(x, w, bias, y, p);
    return env.Undefined();
  });
}
// conv2dBackwardInput(gradOut, w, gradX, ...params)
Napi::Value ConvBackwardInput(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&] {
    View gy = toDeviceView(env, info[0], "gradOut"), w = toDeviceView(env, info[1], "weight"), gx = toDeviceView(env, info[2], "gradX");
    cuda::ConvParams p = convParamsFrom(env, info, 3, "conv2d backward (input)");
    checkConv(env, gx, w, gy, p, "conv2d backward (input)", {gy.dtype, w.dtype, gx.dtype});
    cuda::conv2dBackwardInput(gy, w, gx, p);
    return env.Undefined();
  });
}
// conv2dBackwardWeight(x, gradOut, gradW, ...params)
Napi::Value ConvBackwardWeight(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&] {
    View x = toDeviceView(env, info[0], "x"), gy = toDeviceView(env, info[1], "gradOut"), gw = toDeviceView(env, info[2], "gradW");
    cuda::ConvParams p = convParamsFrom(env, info, 3, "conv2d backward (weight)");
    checkConv(env, x, gw, gy, p, "conv2d backward (weight)", {x.dtype, gy.dtype, gw.dtype});
    cuda::conv2dBackwardWeight(x, gy, gw, p);
    return env.Undefined();
  });
}
}  // namespace

void registerCudaGemm(Napi::Env env, Napi::Object exports) {
  QDM_EXPORT(exports, "matmul", Matmul);
  QDM_EXPORT(exports, "forceGemmKernel", ForceGemmKernel);
  QDM_EXPORT(exports, "gemmKernelInfo", GemmKernelInfo);
  QDM_EXPORT(exports, "conv2dForward", ConvForward);
  QDM_EXPORT(exports, "conv2dBackwardInput", ConvBackwardInput);
  QDM_EXPORT(exports, "conv2dBackwardWeight", ConvBackwardWeight);
}
#endif
}  // namespace qdm::binding
