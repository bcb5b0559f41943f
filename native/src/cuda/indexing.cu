// Row gathers / scatter-adds (embedding, index_select and their gradients) and nearest
// upsampling, with the CPU kernels' semantics (cpu/indexing.cpp, cpu/nn_resample.cpp).
//
// Determinism without float atomics:
// - indexAddRows: one thread per column d walks the index list in order and adds row k into
//   out[idx[k], d], exactly the CPU's summation order (so f32 results match the CPU bit for bit).
//   Parallelism is D columns; cost O(K * D). Fine for embedding gradients (D >= 256); a long
//   index list over few columns would want a sort-based kernel.
// - upsample backward: one thread per input pixel sums the output pixels that map onto it
//   (rows outer, columns inner, ascending: the CPU's order). The preimage of pixel i is found by
//   walking from floor(i / scale) - 2 with the forward map itself, so it is exact.
// Indices are not checked on the host (that would need a device->host read and break graph
// capture): an out-of-range index yields a NaN row in indexRows and is skipped by indexAddRows.
#include <string>

#include "cuda/ew_common.cuh"
#include "qdm/cuda_elementwise.h"

namespace qdm::cuda {
namespace {
using namespace ew;

__device__ __forceinline__ long long idxAt(const void* idx, DType dt, int64_t stride, int64_t k) {
  return dt == DType::I64 ? static_cast<const long long*>(idx)[k * stride] : static_cast<long long>(static_cast<const int32_t*>(idx)[k * stride]);
}

__global__ void indexRowsKernel(const void* src, DType st, int64_t R, const void* idx, DType it, int64_t istride, void* out, DType ot, int64_t K, int64_t D) {
  const int64_t n = K * D;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t k = i / D, d = i - k * D;
    const long long r = idxAt(idx, it, istride, k);
    stf(out, i, ot, (r >= 0 && r < R) ? ldf(src, r * D + d, st) : nanF());
  }
}

__global__ void indexAddRowsKernel(const void* src, DType st, const void* idx, DType it, int64_t istride, void* out, DType ot, int64_t R, int64_t K, int64_t D) {
  for (int64_t d = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; d < D; d += int64_t(gridDim.x) * blockDim.x) {
    for (int64_t k = 0; k < K; ++k) {
      const long long r = idxAt(idx, it, istride, k);
      if (r < 0 || r >= R) continue;
      const int64_t o = r * D + d;
      stf(out, o, ot, ldf(out, o, ot) + ldf(src, k * D + d, st));
    }
  }
}

__device__ __forceinline__ int64_t nearestSrc(int64_t o, double scale, int64_t n) {
  int64_t i = static_cast<int64_t>(floor(static_cast<double>(o) * scale));
  return i < n - 1 ? i : n - 1;
}
// [o0, o1): the outputs whose nearest source is i (the forward map is monotonic).
__device__ __forceinline__ void preimage(int64_t i, double scale, int64_t nIn, int64_t nOut, int64_t& o0, int64_t& o1) {
  int64_t o = static_cast<int64_t>(floor(static_cast<double>(i) / scale)) - 2;
  if (o < 0) o = 0;
  while (o < nOut && nearestSrc(o, scale, nIn) < i) ++o;
  o0 = o;
  while (o < nOut && nearestSrc(o, scale, nIn) == i) ++o;
  o1 = o;
}

__global__ void upsampleNearestForward(const void* x, DType xt, void* y, DType yt, int64_t P, int64_t H, int64_t W, int64_t OH, int64_t OW, double sh, double sw) {
  const int64_t n = P * OH * OW;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t ow = i % OW, t = i / OW, oh = t % OH, p = t / OH;
    stf(y, i, yt, ldf(x, (p * H + nearestSrc(oh, sh, H)) * W + nearestSrc(ow, sw, W), xt));
  }
}

__global__ void upsampleNearestBackward(const void* gy, DType gt, void* gx, DType xt, int64_t P, int64_t H, int64_t W, int64_t OH, int64_t OW, double sh, double sw) {
  const int64_t n = P * H * W;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t iw = i % W, t = i / W, ih = t % H, p = t / H;
    int64_t h0, h1, w0, w1;
    preimage(ih, sh, H, OH, h0, h1);
    preimage(iw, sw, W, OW, w0, w1);
    float acc = 0.0f;
    for (int64_t oh = h0; oh < h1; ++oh)
      for (int64_t ow = w0; ow < w1; ++ow) acc += ldf(gy, (p * OH + oh) * OW + ow, gt);
    stf(gx, i, xt, acc);
  }
}


// Bilinear (PyTorch's interpolate, as native/src/cpu/nn_resample.cpp): source coordinate
// s = align ? o * scale : max(0, (o + 0.5) * scale - 0.5), taps i0 = min(floor(s), n-1),
// i1 = min(i0 + 1, n-1), weight of i1 = s - i0. Computed in double like the CPU, so both devices
// pick the same taps.
__device__ __forceinline__ void bilinearSrc(int64_t o, double scale, bool align, int64_t n, int64_t& i0, int64_t& i1, float& l1) {
  double src = align ? static_cast<double>(o) * scale : fmax(0.0, (static_cast<double>(o) + 0.5) * scale - 0.5);
  i0 = static_cast<int64_t>(src);
  if (i0 > n - 1) i0 = n - 1;
  i1 = i0 + 1 < n - 1 ? i0 + 1 : n - 1;
  l1 = static_cast<float>(src - static_cast<double>(i0));
}
// The weight that output o gives input i along one axis (0 when i is not one of its taps).
__device__ __forceinline__ float bilinearWeight(int64_t o, int64_t i, double scale, bool align, int64_t n) {
  int64_t i0, i1; float l1;
  bilinearSrc(o, scale, align, n, i0, i1, l1);
  return (i0 == i ? 1.0f - l1 : 0.0f) + (i1 == i ? l1 : 0.0f);
}
// [o0, o1): the outputs that have input i among their taps (taps are monotonic in o).
__device__ __forceinline__ void bilinearPreimage(int64_t i, double scale, bool align, int64_t nIn, int64_t nOut, int64_t& o0, int64_t& o1) {
  int64_t o = static_cast<int64_t>(floor(static_cast<double>(i - 1) / scale)) - 2;
  if (o < 0) o = 0;
  int64_t a, b; float l;
  for (;; ++o) { if (o >= nOut) break; bilinearSrc(o, scale, align, nIn, a, b, l); if (b >= i) break; }
  o0 = o;
  for (;; ++o) { if (o >= nOut) break; bilinearSrc(o, scale, align, nIn, a, b, l); if (a > i) break; }
  o1 = o;
}

__global__ void upsampleBilinearForward(const void* x, DType xt, void* y, DType yt, int64_t P, int64_t H, int64_t W, int64_t OH, int64_t OW, double sh, double sw, bool align) {
  const int64_t n = P * OH * OW;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t ow = i % OW, t = i / OW, oh = t % OH, p = t / OH;
    int64_t h0, h1, w0, w1; float lh, lw;
    bilinearSrc(oh, sh, align, H, h0, h1, lh);
    bilinearSrc(ow, sw, align, W, w0, w1, lw);
    const int64_t base = p * H * W;
    const float a = (1 - lh) * (1 - lw), b = (1 - lh) * lw, c = lh * (1 - lw), d = lh * lw;
    stf(y, i, yt, a * ldf(x, base + h0 * W + w0, xt) + b * ldf(x, base + h0 * W + w1, xt) + c * ldf(x, base + h1 * W + w0, xt) + d * ldf(x, base + h1 * W + w1, xt));
  }
}

// Adjoint as a gather (one thread per input pixel, no atomics: deterministic).
__global__ void upsampleBilinearBackward(const void* gy, DType gt, void* gx, DType xt, int64_t P, int64_t H, int64_t W, int64_t OH, int64_t OW, double sh, double sw, bool align) {
  const int64_t n = P * H * W;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t iw = i % W, t = i / W, ih = t % H, p = t / H;
    int64_t h0, h1, w0, w1;
    bilinearPreimage(ih, sh, align, H, OH, h0, h1);
    bilinearPreimage(iw, sw, align, W, OW, w0, w1);
    float acc = 0.0f;
    for (int64_t oh = h0; oh < h1; ++oh) {
      const float wh = bilinearWeight(oh, ih, sh, align, H);
      if (wh == 0.0f) continue;
      for (int64_t ow = w0; ow < w1; ++ow) {
        const float ww = bilinearWeight(ow, iw, sw, align, W);
        if (ww != 0.0f) acc += wh * ww * ldf(gy, (p * OH + oh) * OW + ow, gt);
      }
    }
    stf(gx, i, xt, acc);
  }
}

void checkRows(const View& v, const char* op, const char* what) {
  if (v.ndim != 2 || !v.contiguous() || !isFloat3(v.dtype))
    throw KernelError("QDM_BAD_ARGUMENT", std::string(op) + ": " + what + " must be a contiguous 2-d f32/f16/bf16 tensor");
}
void checkIndex(const View& idx, int64_t K, const char* op) {
  if (idx.dtype != DType::I64 && idx.dtype != DType::I32) throw KernelError("QDM_DTYPE", std::string(op) + ": indices must be i64 or i32");
  if (idx.ndim != 1 || idx.shape[0] != K) throw KernelError("QDM_SHAPE_MISMATCH", std::string(op) + ": index must be 1-d with one entry per row");
}
}  // namespace

void indexRows(const View& src, const View& idx, const View& out) {
  checkRows(src, "index", "src"); checkRows(out, "index", "out");
  const int64_t K = out.shape[0], D = out.shape[1];
  checkIndex(idx, K, "index");
  if (src.shape[1] != D) throw KernelError("QDM_SHAPE_MISMATCH", "index: src and out rows differ in length");
  if (K * D == 0) return;
  indexRowsKernel<<<gridFor(K * D), kThreads, 0, stream()>>>(src.data, src.dtype, src.shape[0], idx.data, idx.dtype, idx.strides[0], out.data, out.dtype, K, D);
  checkLaunch("indexRows");
}

void indexAddRows(const View& src, const View& idx, const View& out) {
  checkRows(src, "index backward", "src"); checkRows(out, "index backward", "out");
  const int64_t K = src.shape[0], D = src.shape[1];
  checkIndex(idx, K, "index backward");
  if (out.shape[1] != D) throw KernelError("QDM_SHAPE_MISMATCH", "index backward: src and out rows differ in length");
  if (K * D == 0) return;
  const int threads = 128;
  indexAddRowsKernel<<<static_cast<unsigned>((D + threads - 1) / threads), threads, 0, stream()>>>(src.data, src.dtype, idx.data, idx.dtype, idx.strides[0], out.data, out.dtype, out.shape[0], K, D);
  checkLaunch("indexAddRows");
}

namespace {
// The checks and sizes shared by both upsampling modes. Forward: in = x [P, H, W], out = y
// [P, OH, OW]. Backward: in = dy [P, OH, OW], out = dx [P, H, W].
struct UpsampleDims { int64_t P, H, W, OH, OW; };
UpsampleDims upsampleDims(const View& in, const View& out, double scaleH, double scaleW, bool backward) {
  for (const View* v : {&in, &out})
    if (v->ndim != 3 || !v->contiguous() || !isFloat3(v->dtype)) throw KernelError("QDM_BAD_ARGUMENT", "upsample: contiguous [P, H, W] f32/f16/bf16 planes expected");
  if (in.shape[0] != out.shape[0]) throw KernelError("QDM_SHAPE_MISMATCH", "upsample: plane counts differ");
  if (!(scaleH > 0) || !(scaleW > 0)) throw KernelError("QDM_BAD_ARGUMENT", "upsample: scales must be positive");
  const View& img = backward ? out : in;
  const View& up = backward ? in : out;
  return {img.shape[0], img.shape[1], img.shape[2], up.shape[1], up.shape[2]};
}
}  // namespace

void upsampleNearest(const View& in, const View& out, double scaleH, double scaleW, bool backward) {
  const auto [P, H, W, OH, OW] = upsampleDims(in, out, scaleH, scaleW, backward);
  if (backward) {
    if (P * H * W == 0) return;
    upsampleNearestBackward<<<gridFor(P * H * W), kThreads, 0, stream()>>>(in.data, in.dtype, out.data, out.dtype, P, H, W, OH, OW, scaleH, scaleW);
  } else {
    if (P * OH * OW == 0) return;
    upsampleNearestForward<<<gridFor(P * OH * OW), kThreads, 0, stream()>>>(in.data, in.dtype, out.data, out.dtype, P, H, W, OH, OW, scaleH, scaleW);
  }
  checkLaunch("upsample");
}
void upsampleBilinear(const View& in, const View& out, double scaleH, double scaleW, bool alignCorners, bool backward) {
  const auto [P, H, W, OH, OW] = upsampleDims(in, out, scaleH, scaleW, backward);
  if (backward) {
    if (P * H * W == 0) return;
    upsampleBilinearBackward<<<gridFor(P * H * W), kThreads, 0, stream()>>>(in.data, in.dtype, out.data, out.dtype, P, H, W, OH, OW, scaleH, scaleW, alignCorners);
  } else {
    if (P * OH * OW == 0) return;
    upsampleBilinearForward<<<gridFor(P * OH * OW), kThreads, 0, stream()>>>(in.data, in.dtype, out.data, out.dtype, P, H, W, OH, OW, scaleH, scaleW, alignCorners);
  }
  checkLaunch("upsample");
}
}  // namespace qdm::cuda
