// Fake quantization with LSQ gradients, and integer packing. One element-wise body serves
// every granularity through QuantLayout (see qdm/quant.h). The element math runs in fp32 exactly
// as torch evaluates the reference graph (x / s in fp32, round half to even, (q - z) * s), so a
// float64 reference that rounds the quotient to fp32 reproduces it bit for bit. Gradient
// reductions recompute the per-element terms inside each reduction pass (no n-sized temporary)
// and accumulate in double over a fixed partition, so results do not depend on the thread count.
#include "qdm/quant.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "qdm/parallel.h"

namespace qdm::cpu {
namespace {

constexpr int64_t kGrain = 16384;

struct Access {
  const QuantLayout& L;
  const float* scale;
  const float* col;
  const float* zero;
  int64_t param(int64_t i) const {
    switch (L.mode) {
      case QuantMode::Tensor: return 0;
      case QuantMode::Channel: return (i / L.inner) % L.channels;
      case QuantMode::Group: return i / L.groupSize;
      case QuantMode::Separable: return i / L.cols;
    }
    return 0;
  }
  float s(int64_t i, int64_t p) const { return L.mode == QuantMode::Separable ? scale[p] * col[i % L.cols] : scale[p]; }
};

// The three partial derivatives of x_hat at one element.
struct Partials { float dx, ds, dz; };

inline Partials partials(float x, float s, float z, float qmin, float qmax) {
  const float v = x / s;
  const float r = std::nearbyint(v);
  const float q = r + z;
  if (q < qmin) return {0.0f, qmin - z, -s};
  if (q > qmax) return {0.0f, qmax - z, -s};
  return {1.0f, r - v, 0.0f};
}

inline float quantCode(float x, float s, float z, float qmin, float qmax) {
  return std::min(std::max(std::nearbyint(x / s) + z, qmin), qmax);
}

}  // namespace

int64_t QuantLayout::params() const {
  switch (mode) {
    case QuantMode::Tensor: return 1;
    case QuantMode::Channel: return channels;
    case QuantMode::Group: return groupSize > 0 ? n / groupSize : 0;
    case QuantMode::Separable: return cols > 0 ? n / cols : 0;
  }
  return 0;
}

void QuantLayout::validate(int64_t scaleLen, int64_t zeroLen, int64_t colLen) const {
  auto fail = [](const std::string& m) { throw KernelError("QDM_BAD_ARGUMENT", "fakeQuant: " + m); };
  switch (mode) {
    case QuantMode::Tensor: break;
    case QuantMode::Channel:
      if (channels < 1 || inner < 1 || n % (channels * inner) != 0) fail("channel layout C=" + std::to_string(channels) + ", inner=" + std::to_string(inner) + " does not divide " + std::to_string(n) + " elements");
      break;
    case QuantMode::Group:
      if (groupSize < 1 || n % groupSize != 0) fail("group size " + std::to_string(groupSize) + " does not divide " + std::to_string(n) + " elements");
      break;
    case QuantMode::Separable:
      if (cols < 1 || n % cols != 0) fail("separable column count " + std::to_string(cols) + " does not divide " + std::to_string(n) + " elements");
      if (colLen != cols) fail("column scale has " + std::to_string(colLen) + " entries, expected " + std::to_string(cols));
      break;
    default: fail("unknown granularity code " + std::to_string(static_cast<int>(mode)));
  }
  const int64_t P = params();
  if (scaleLen != P) fail("scale has " + std::to_string(scaleLen) + " entries, expected " + std::to_string(P));
  if (zeroLen != P) fail("zero point has " + std::to_string(zeroLen) + " entries, expected " + std::to_string(P));
}

void fakeQuantForward(const float* x, const float* scale, const float* colScale, const float* zero, float* out, const QuantLayout& L, float qmin, float qmax) {
  const Access A{L, scale, colScale, zero};
  parallelFor(L.n, kGrain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const int64_t p = A.param(i);
      const float s = A.s(i, p), z = zero[p];
      out[i] = (quantCode(x[i], s, z, qmin, qmax) - z) * s;
    }
  });
}

void fakeQuantBackward(const float* x, const float* scale, const float* colScale, const float* zero, const float* g, float* gradX, float* gradScale,
                       float* gradColScale, float* gradZero, const QuantLayout& L, float qmin, float qmax) {
  const Access A{L, scale, colScale, zero};
  const int64_t n = L.n;
  auto at = [&](int64_t i) { const int64_t p = A.param(i); return partials(x[i], A.s(i, p), zero[p], qmin, qmax); };

  if (gradX) {
    parallelFor(n, kGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) gradX[i] = g[i] * at(i).dx;
    });
  }
  if (!gradScale && !gradColScale && !gradZero) return;

  // Sums of g*ds (times the column factor for separable rows) and g*dz over one parameter's elements.
  if (L.mode == QuantMode::Tensor) {
    const int64_t chunks = (n + kGrain - 1) / kGrain;
    std::vector<double> ps(chunks, 0.0), pz(chunks, 0.0);
    parallelFor(chunks, 1, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        double s = 0, z = 0;
        for (int64_t i = c * kGrain, e = std::min(n, (c + 1) * kGrain); i < e; ++i) { const Partials d = at(i); s += double(g[i]) * d.ds; z += double(g[i]) * d.dz; }
        ps[c] = s; pz[c] = z;
      }
    });
    double s = 0, z = 0;
    for (int64_t c = 0; c < chunks; ++c) { s += ps[c]; z += pz[c]; }
    if (gradScale) gradScale[0] = static_cast<float>(s);
    if (gradZero) gradZero[0] = static_cast<float>(z);
    return;
  }
  if (L.mode == QuantMode::Channel) {
    const int64_t C = L.channels, inner = L.inner, outer = n / (C * inner);
    parallelFor(C, 1, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        double s = 0, z = 0;
        for (int64_t o = 0; o < outer; ++o)
          for (int64_t k = 0, base = (o * C + c) * inner; k < inner; ++k) { const Partials d = at(base + k); s += double(g[base + k]) * d.ds; z += double(g[base + k]) * d.dz; }
        if (gradScale) gradScale[c] = static_cast<float>(s);
        if (gradZero) gradZero[c] = static_cast<float>(z);
      }
    });
    return;
  }
  // Group and separable rows: each parameter owns one contiguous segment.
  const int64_t P = L.params(), seg = n / std::max<int64_t>(P, 1);
  const bool sep = L.mode == QuantMode::Separable;
  parallelFor(P, 1, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      double s = 0, z = 0;
      for (int64_t i = p * seg, e = i + seg; i < e; ++i) {
        const Partials d = at(i);
        const double gs = double(g[i]) * d.ds;
        s += sep ? gs * colScale[i % L.cols] : gs;
        z += double(g[i]) * d.dz;
      }
      if (gradScale) gradScale[p] = static_cast<float>(s);
      if (gradZero) gradZero[p] = static_cast<float>(z);
    }
  });
  if (sep && gradColScale) {
    // Column factor: sum over rows of g*ds*r_i, over column blocks (rows in order within a block).
    const int64_t K = L.cols, R = P, block = 256;
    parallelFor((K + block - 1) / block, 1, [&](int64_t b0, int64_t b1) {
      std::vector<double> acc(block);
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t j0 = b * block, j1 = std::min(K, j0 + block);
        std::fill(acc.begin(), acc.end(), 0.0);
        for (int64_t r = 0; r < R; ++r)
          for (int64_t j = j0; j < j1; ++j) { const int64_t i = r * K + j; acc[j - j0] += double(g[i]) * at(i).ds * scale[r]; }
        for (int64_t j = j0; j < j1; ++j) gradColScale[j] = static_cast<float>(acc[j - j0]);
      }
    });
  }
}

void quantizePack(const float* x, const float* scale, const float* colScale, const float* zero, const View& codes, const QuantLayout& L, float qmin, float qmax) {
  const Access A{L, scale, colScale, zero};
  auto code = [&](int64_t i) { const int64_t p = A.param(i); return static_cast<int>(quantCode(x[i], A.s(i, p), zero[p], qmin, qmax)); };
  switch (codes.dtype) {
    case DType::I8: {
      if (qmin < -128 || qmax > 127) throw KernelError("QDM_BAD_ARGUMENT", "quantizePack: range [" + std::to_string(qmin) + ", " + std::to_string(qmax) + "] does not fit i8");
      int8_t* o = codes.ptr<int8_t>();
      parallelFor(L.n, kGrain, [&](int64_t b, int64_t e) { for (int64_t i = b; i < e; ++i) o[i] = static_cast<int8_t>(code(i)); });
      break;
    }
    case DType::U8: {
      if (qmin < 0 || qmax > 255) throw KernelError("QDM_BAD_ARGUMENT", "quantizePack: range [" + std::to_string(qmin) + ", " + std::to_string(qmax) + "] does not fit u8");
      uint8_t* o = codes.ptr<uint8_t>();
      parallelFor(L.n, kGrain, [&](int64_t b, int64_t e) { for (int64_t i = b; i < e; ++i) o[i] = static_cast<uint8_t>(code(i)); });
      break;
    }
    case DType::I4: {
      if (qmin < -8 || qmax > 7) throw KernelError("QDM_BAD_ARGUMENT", "quantizePack: range [" + std::to_string(qmin) + ", " + std::to_string(qmax) + "] does not fit i4 (shift the zero point for unsigned codes)");
      uint8_t* o = codes.ptr<uint8_t>();
      const int64_t bytes = (L.n + 1) / 2;
      parallelFor(bytes, kGrain, [&](int64_t b, int64_t e) {
        for (int64_t k = b; k < e; ++k) {
          const int lo = code(2 * k) & 0xF;
          const int hi = 2 * k + 1 < L.n ? (code(2 * k + 1) & 0xF) : 0;
          o[k] = static_cast<uint8_t>(lo | (hi << 4));
        }
      });
      break;
    }
    default: throw KernelError("QDM_BAD_DTYPE", std::string("quantizePack: codes must be i8, u8 or i4, got ") + dtypeName(codes.dtype));
  }
}

void dequantize(const View& codes, const float* scale, const float* colScale, const float* zero, float* out, const QuantLayout& L) {
  const Access A{L, scale, colScale, zero};
  const DType dt = codes.dtype;
  if (dt != DType::I8 && dt != DType::U8 && dt != DType::I4) throw KernelError("QDM_BAD_DTYPE", std::string("dequantize: codes must be i8, u8 or i4, got ") + dtypeName(dt));
  const uint8_t* raw = codes.ptr<uint8_t>();
  parallelFor(L.n, kGrain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      float q;
      if (dt == DType::I8) q = static_cast<float>(reinterpret_cast<const int8_t*>(raw)[i]);
      else if (dt == DType::U8) q = static_cast<float>(raw[i]);
      else { int nib = (raw[i >> 1] >> ((i & 1) * 4)) & 0xF; q = static_cast<float>(nib >= 8 ? nib - 16 : nib); }
      const int64_t p = A.param(i);
      const float s = A.s(i, p), z = zero[p];
      out[i] = (q - z) * s;
    }
  });
}

void mseSearchErrors(const float* x, int64_t rows, int64_t per, const float* scales, const float* zeros, int64_t candidates,
                     double qmin, double qmax, double* err) {
  const int64_t tasks = candidates * rows;
  parallelFor(tasks, std::max<int64_t>(1, 65536 / std::max<int64_t>(per, 1)), [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t r = t % rows;
      const double s = scales[t], z = zeros[t];
      const float* v = x + r * per;
      double e = 0;
      for (int64_t i = 0; i < per; ++i) {
        const double xi = v[i];
        const double q = std::min(std::max(std::nearbyint(static_cast<double>(static_cast<float>(xi / s))) + z, qmin), qmax);
        e += std::pow(std::fabs(xi - (q - z) * s), 2.4);
      }
      err[t] = e;
    }
  });
}

}  // namespace qdm::cpu
