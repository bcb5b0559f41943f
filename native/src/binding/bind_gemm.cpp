#include "binding/common.h"
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
}  // namespace
void registerGemm(Napi::Env env, Napi::Object exports) { QDM_EXPORT(exports, "matmul", Matmul); }
}  // namespace qdm::binding
