// Uniform affine fake quantization and integer packing (fp32, contiguous operands).
//
// Every kernel sees its tensor as a flat array of n elements and finds each element's
// (scale, zero point) through a QuantLayout, so one loop body serves all granularities:
//   tensor     one scale, one zero point
//   channel    x seen as [outer, C, inner]; scale/zero [C] (channel c = (i / inner) % C)
//   group      consecutive runs of groupSize elements along the last dim; scale/zero [n / groupSize]
//   separable  x seen as [R, K]; scale s_ij = row[i] * col[j] (row: scale, col: colScale), zero [R]
// x_int = clamp(round(x / s) + z, qmin, qmax), x_hat = (x_int - z) * s, round = half to even.
#pragma once
#include <cstdint>

#include "qdm/view.h"

namespace qdm::cpu {

enum class QuantMode : int32_t { Tensor = 0, Channel = 1, Group = 2, Separable = 3 };

struct QuantLayout {
  QuantMode mode = QuantMode::Tensor;
  int64_t n = 0;          // elements
  int64_t channels = 1;   // channel: C
  int64_t inner = 1;      // channel: product of the dims after the channel axis
  int64_t groupSize = 1;  // group
  int64_t cols = 1;       // separable: K (rows = n / K)
  // Number of entries in scale (and zero); for separable, the row count.
  int64_t params() const;
  // Throws KernelError when the sizes do not fit together.
  void validate(int64_t scaleLen, int64_t zeroLen, int64_t colLen) const;
};

void fakeQuantForward(const float* x, const float* scale, const float* colScale, const float* zero, float* out, const QuantLayout& L, float qmin, float qmax);

// Gradients of x_hat (LSQ / EfficientDM): in range dx = g, ds = g * (round(x/s) - x/s), dz = 0;
// clipped below/above dx = 0, ds = g * (qmin|qmax - z), dz = -g * s. ds is reduced to the scale's
// shape (separable: gradRow_i = sum_j ds_ij c_j, gradCol_j = sum_i ds_ij r_i), dz to the zero's.
// Any output pointer may be null. Reductions run in double in a fixed order.
void fakeQuantBackward(const float* x, const float* scale, const float* colScale, const float* zero, const float* gradOut, float* gradX, float* gradScale,
                       float* gradColScale, float* gradZero, const QuantLayout& L, float qmin, float qmax);

// Integer codes clamp(round(x/s) + z) written as i8, u8 or packed i4 (low nibble first).
void quantizePack(const float* x, const float* scale, const float* colScale, const float* zero, const View& codes, const QuantLayout& L, float qmin, float qmax);
// out = (code - z) * s from i8, u8 or packed i4 codes.
void dequantize(const View& codes, const float* scale, const float* colScale, const float* zero, float* out, const QuantLayout& L);

// The MSE range search's inner sums (LAPQ's Lp loss, p = 2.4): for candidate c and row r of
// x [rows, per], err[c, r] = sum_i |x_i - x_hat_i|^2.4 with (s, z) = (scales[c, r], zeros[c, r]),
// computed exactly as @qdm/quant's JS reference does (x / s in double, rounded to fp32, then half
// to even; x_hat and the sum in double, i in order), so the selection is the same. One (c, r) sum
// per task: results do not depend on the thread count.
void mseSearchErrors(const float* x, int64_t rows, int64_t per, const float* scales, const float* zeros, int64_t candidates,
                     double qmin, double qmax, double* err);

}  // namespace qdm::cpu
