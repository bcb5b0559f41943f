// CUDA bindings of the nn family (compiled only with CUDA): groupNormForward/Backward,
// groupNormSiluForward (CUDA only: y = silu(groupnorm(x)), same arguments as groupNormForward),
// layerNormForward/Backward, softmaxForward/Backward and attentionForward with the CPU bindings'
// argument lists (bind_nn.cpp, bind_attention.cpp). Where the CPU takes contiguous f32 only,
// these take contiguous f32, f16 or bf16 in any mix (math in f32, outputs in their own dtype).
// attentionForward takes an optional 7th argument, lse, and attentionBackward (CUDA only, no CPU
// counterpart) gives q/k/v gradients from it. Launchers: src/cuda/norm.cu, softmax.cu, attention.cu.
#include <string>

#include "binding/common.h"
#include "qdm/cuda_nn.h"

namespace qdm::binding {
#ifdef QDM_WITH_CUDA
namespace {
bool isFloat(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16; }

std::string shapeStr(const View& v) {
  std::string s = "[";
  for (int i = 0; i < v.ndim; ++i) s += (i ? "," : "") + std::to_string(v.shape[i]);
  return s + "]";
}

// A required contiguous float operand of the given rank (rank < 0: any).
View need(Napi::Env env, const Napi::Value& v, const char* op, const char* what, int rank) {
  View w = toDeviceView(env, v, what);
  if (!isFloat(w.dtype)) throwCode(env, "QDM_DTYPE", std::string(op) + ": " + what + " must be f32, f16 or bf16, got " + dtypeName(w.dtype));
  if (!w.contiguous()) throwCode(env, "QDM_BAD_ARGUMENT", std::string(op) + ": " + what + " must be contiguous");
  if (rank >= 0 && w.ndim != rank) throwCode(env, "QDM_SHAPE_MISMATCH", std::string(op) + ": " + what + " must be " + std::to_string(rank) + "-d, got " + shapeStr(w));
  return w;
}
// An optional one (data == nullptr when null) of exactly n elements.
View opt(Napi::Env env, const Napi::Value& v, const char* op, const char* what, int64_t n) {
  if (v.IsNull() || v.IsUndefined()) return View{};
  View w = need(env, v, op, what, -1);
  if (w.numel() != n) throwCode(env, "QDM_SHAPE_MISMATCH", std::string(op) + ": " + what + " has " + std::to_string(w.numel()) + " elements, expected " + std::to_string(n));
  return w;
}
void sameShape(Napi::Env env, const View& a, const View& b, const char* op, const char* what) {
  bool same = a.ndim == b.ndim;
  for (int i = 0; same && i < a.ndim; ++i) same = a.shape[i] == b.shape[i];
  if (!same) throwCode(env, "QDM_SHAPE_MISMATCH", std::string(op) + ": " + what + " " + shapeStr(b) + " does not match " + shapeStr(a));
}
void numelIs(Napi::Env env, const View& v, int64_t n, const char* op, const char* what) {
  if (v.numel() != n) throwCode(env, "QDM_SHAPE_MISMATCH", std::string(op) + ": " + what + " has " + std::to_string(v.numel()) + " elements, expected " + std::to_string(n));
}

// groupNormForward(x[N,C,S], w|null, b|null, y, mean[N,G], rstd[N,G], G, eps)
Napi::Value groupNormForwardImpl(const Napi::CallbackInfo& info, bool silu) {
  Napi::Env env = info.Env();
  const char* op = silu ? "groupNormSiluForward" : "groupNormForward";
  return guarded(env, [&] {
    View x = need(env, info[0], op, "x", 3);
    const int64_t N = x.shape[0], C = x.shape[1], G = intArg(info, 6);
    if (G < 1 || C % G != 0) throwCode(env, "QDM_BAD_ARGUMENT", std::string(op) + ": " + std::to_string(C) + " channels cannot be split into " + std::to_string(G) + " groups");
    View w = opt(env, info[1], op, "weight", C), b = opt(env, info[2], op, "bias", C);
    View y = need(env, info[3], op, "y", -1);
    sameShape(env, x, y, op, "y");
    View mean = need(env, info[4], op, "mean", -1), rstd = need(env, info[5], op, "rstd", -1);
    numelIs(env, mean, N * G, op, "mean");
    numelIs(env, rstd, N * G, op, "rstd");
    cuda::groupNormForward(x, w, b, y, mean, rstd, G, static_cast<float>(numberArg(info, 7, 1e-5)), silu);
    return env.Undefined();
  });
}
Napi::Value GroupNormForward(const Napi::CallbackInfo& info) { return groupNormForwardImpl(info, false); }
Napi::Value GroupNormSiluForward(const Napi::CallbackInfo& info) { return groupNormForwardImpl(info, true); }

// groupNormBackward(x, gy, w|null, mean, rstd, gx, gw|null, gb|null, G)
Napi::Value GroupNormBackward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* op = "groupNormBackward";
  return guarded(env, [&] {
    View x = need(env, info[0], op, "x", 3);
    const int64_t N = x.shape[0], C = x.shape[1], G = intArg(info, 8);
    if (G < 1 || C % G != 0) throwCode(env, "QDM_BAD_ARGUMENT", std::string(op) + ": " + std::to_string(C) + " channels cannot be split into " + std::to_string(G) + " groups");
    View gy = need(env, info[1], op, "gradOut", -1);
    sameShape(env, x, gy, op, "gradOut");
    View w = opt(env, info[2], op, "weight", C);
    View mean = need(env, info[3], op, "mean", -1), rstd = need(env, info[4], op, "rstd", -1);
    numelIs(env, mean, N * G, op, "mean");
    numelIs(env, rstd, N * G, op, "rstd");
    View gx = need(env, info[5], op, "gradX", -1);
    sameShape(env, x, gx, op, "gradX");
    View gw = opt(env, info[6], op, "gradW", C), gb = opt(env, info[7], op, "gradB", C);
    cuda::groupNormBackward(x, gy, w, mean, rstd, gx, gw, gb, G);
    return env.Undefined();
  });
}

// layerNormForward(x[M,D], w|null, b|null, y, mean[M], rstd[M], eps)
Napi::Value LayerNormForward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* op = "layerNormForward";
  return guarded(env, [&] {
    View x = need(env, info[0], op, "x", 2);
    const int64_t M = x.shape[0], D = x.shape[1];
    View w = opt(env, info[1], op, "weight", D), b = opt(env, info[2], op, "bias", D);
    View y = need(env, info[3], op, "y", -1);
    sameShape(env, x, y, op, "y");
    View mean = need(env, info[4], op, "mean", -1), rstd = need(env, info[5], op, "rstd", -1);
    numelIs(env, mean, M, op, "mean");
    numelIs(env, rstd, M, op, "rstd");
    cuda::layerNormForward(x, w, b, y, mean, rstd, static_cast<float>(numberArg(info, 6, 1e-5)));
    return env.Undefined();
  });
}

// layerNormBackward(x, gy, w|null, mean, rstd, gx, gw|null, gb|null)
Napi::Value LayerNormBackward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* op = "layerNormBackward";
  return guarded(env, [&] {
    View x = need(env, info[0], op, "x", 2);
    const int64_t M = x.shape[0], D = x.shape[1];
    View gy = need(env, info[1], op, "gradOut", -1);
    sameShape(env, x, gy, op, "gradOut");
    View w = opt(env, info[2], op, "weight", D);
    View mean = need(env, info[3], op, "mean", -1), rstd = need(env, info[4], op, "rstd", -1);
    numelIs(env, mean, M, op, "mean");
    numelIs(env, rstd, M, op, "rstd");
    View gx = need(env, info[5], op, "gradX", -1);
    sameShape(env, x, gx, op, "gradX");
    View gw = opt(env, info[6], op, "gradW", D), gb = opt(env, info[7], op, "gradB", D);
    cuda::layerNormBackward(x, gy, w, mean, rstd, gx, gw, gb);
    return env.Undefined();
  });
}

// softmaxForward(x[M,D], y, log) / softmaxBackward(y, gy, gx, log)
Napi::Value SoftmaxForward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* op = "softmaxForward";
  return guarded(env, [&] {
    View x = need(env, info[0], op, "x", 2);
    View y = need(env, info[1], op, "y", -1);
    sameShape(env, x, y, op, "y");
    cuda::softmaxForward(x, y, boolArg(info, 2));
    return env.Undefined();
  });
}
Napi::Value SoftmaxBackward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* op = "softmaxBackward";
  return guarded(env, [&] {
    View y = need(env, info[0], op, "y", 2);
    View gy = need(env, info[1], op, "gradOut", -1);
    sameShape(env, y, gy, op, "gradOut");
    View gx = need(env, info[2], op, "gradX", -1);
    sameShape(env, y, gx, op, "gradX");
    cuda::softmaxBackward(y, gy, gx, boolArg(info, 3));
    return env.Undefined();
  });
}

// Shape checks shared by attentionForward/Backward (those of the CPU kernel): q [..., Lq, D],
// k [..., Lk, D], v [..., Lk, Dv], mask [..., Lq, Lk] or absent, out [..., Lq, Dv]; the same rank
// and batch shape (stride-0 dims broadcast), float dtypes.
void checkAttention(Napi::Env env, const char* op, const View& q, const View& k, const View& v, const View& mask, const View& out) {
  const View* all[] = {&q, &k, &v, &out, mask.data ? &mask : nullptr};
  const char* names[] = {"q", "k", "v", "out", "mask"};
  const int nd = q.ndim;
  if (nd < 2) throwCode(env, "QDM_SHAPE_MISMATCH", std::string(op) + ": operands must be at least 2-d, got q " + shapeStr(q));
  for (int i = 0; i < 5; ++i) {
    if (!all[i]) continue;
    if (!isFloat(all[i]->dtype)) throwCode(env, "QDM_DTYPE", std::string(op) + ": " + names[i] + " must be f32, f16 or bf16, got " + dtypeName(all[i]->dtype));
    if (all[i]->ndim != nd) throwCode(env, "QDM_SHAPE_MISMATCH", std::string(op) + ": " + names[i] + " " + shapeStr(*all[i]) + " has a different rank from q " + shapeStr(q));
    for (int d = 0; d < nd - 2; ++d)
      if (all[i]->shape[d] != q.shape[d]) throwCode(env, "QDM_SHAPE_MISMATCH", std::string(op) + ": " + names[i] + " " + shapeStr(*all[i]) + " and q " + shapeStr(q) + " have different batch shapes");
  }
  const int64_t Lq = q.shape[nd - 2], D = q.shape[nd - 1], Lk = k.shape[nd - 2], Dv = v.shape[nd - 1];
  if (k.shape[nd - 1] != D || v.shape[nd - 2] != Lk || out.shape[nd - 2] != Lq || out.shape[nd - 1] != Dv)
    throwCode(env, "QDM_SHAPE_MISMATCH", std::string(op) + ": q " + shapeStr(q) + ", k " + shapeStr(k) + ", v " + shapeStr(v) + ", out " + shapeStr(out) + " do not agree");
  if (mask.data && (mask.shape[nd - 2] != Lq || mask.shape[nd - 1] != Lk))
    throwCode(env, "QDM_SHAPE_MISMATCH", std::string(op) + ": mask " + shapeStr(mask) + " is not [..., Lq, Lk] for q " + shapeStr(q) + ", k " + shapeStr(k));
  if (!out.contiguous()) throwCode(env, "QDM_BAD_ARGUMENT", std::string(op) + ": out must be contiguous");
}
// lse: contiguous f32 with batch * Lq elements.
View lseView(Napi::Env env, const Napi::Value& v, const char* op, const View& q) {
  View l = toDeviceView(env, v, "lse");
  int64_t rows = 1;
  for (int d = 0; d < q.ndim - 1; ++d) rows *= q.shape[d];
  if (l.dtype != DType::F32 || !l.contiguous() || l.numel() != rows)
    throwCode(env, "QDM_BAD_ARGUMENT", std::string(op) + ": lse must be a contiguous f32 tensor of " + std::to_string(rows) + " elements (batch x Lq), got " + dtypeName(l.dtype) + " " + shapeStr(l));
  return l;
}

// attentionForward(q, k, v, mask|null, out, scale[, lse]): the CPU argument list; the optional
// lse (CUDA only) receives each row's log-sum-exp for attentionBackward. D, Dv <= 160.
Napi::Value AttentionForward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* op = "attentionForward";
  return guarded(env, [&] {
    View q = toDeviceView(env, info[0], "q"), k = toDeviceView(env, info[1], "k"), v = toDeviceView(env, info[2], "v");
    View mask = optDeviceView(env, info[3], "mask");
    View out = toDeviceView(env, info[4], "out");
    checkAttention(env, op, q, k, v, mask, out);
    View lse = info.Length() > 6 && !info[6].IsNull() && !info[6].IsUndefined() ? lseView(env, info[6], op, q) : View{};
    cuda::attentionForward(q, k, v, mask, out, lse, static_cast<float>(numberArg(info, 5, 1.0)));
    return env.Undefined();
  });
}

// attentionBackward(q, k, v, mask|null, out, gradOut, lse, gradQ, gradK, gradV, scale): CUDA
// only. out and lse from attentionForward with the same operands; gradOut like out (any
// strides); gradQ/gradK/gradV contiguous, shaped like q/k/v (full batch shape: a caller with
// broadcast operands sums over the broadcast dims). No mask gradient.
Napi::Value AttentionBackward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* op = "attentionBackward";
  return guarded(env, [&] {
    View q = toDeviceView(env, info[0], "q"), k = toDeviceView(env, info[1], "k"), v = toDeviceView(env, info[2], "v");
    View mask = optDeviceView(env, info[3], "mask");
    View out = toDeviceView(env, info[4], "out");
    checkAttention(env, op, q, k, v, mask, out);
    View gy = toDeviceView(env, info[5], "gradOut");
    if (!isFloat(gy.dtype)) throwCode(env, "QDM_DTYPE", std::string(op) + ": gradOut must be f32, f16 or bf16, got " + dtypeName(gy.dtype));
    sameShape(env, out, gy, op, "gradOut");
    View lse = lseView(env, info[6], op, q);
    View gq = need(env, info[7], op, "gradQ", q.ndim), gk = need(env, info[8], op, "gradK", q.ndim), gv = need(env, info[9], op, "gradV", q.ndim);
    sameShape(env, q, gq, op, "gradQ");
    sameShape(env, k, gk, op, "gradK");
    sameShape(env, v, gv, op, "gradV");
    cuda::attentionBackward(q, k, v, mask, out, gy, lse, gq, gk, gv, static_cast<float>(numberArg(info, 10, 1.0)));
    return env.Undefined();
  });
}
}  // namespace

void registerCudaNN(Napi::Env env, Napi::Object cuda) {
  QDM_EXPORT(cuda, "groupNormForward", GroupNormForward);
  QDM_EXPORT(cuda, "groupNormSiluForward", GroupNormSiluForward);
  QDM_EXPORT(cuda, "groupNormBackward", GroupNormBackward);
  QDM_EXPORT(cuda, "layerNormForward", LayerNormForward);
  QDM_EXPORT(cuda, "layerNormBackward", LayerNormBackward);
  QDM_EXPORT(cuda, "softmaxForward", SoftmaxForward);
  QDM_EXPORT(cuda, "softmaxBackward", SoftmaxBackward);
  QDM_EXPORT(cuda, "attentionForward", AttentionForward);
  QDM_EXPORT(cuda, "attentionBackward", AttentionBackward);
}
#endif
}  // namespace qdm::binding
