// Launchers of the CUDA elementwise family (src/cuda/elementwise.cu, reduce.cu, random.cu,
// indexing.cu). Same names and semantics as the CPU kernels in qdm/cpu.h and qdm/nn.h, with
// device views; every launcher enqueues on currentStream() and never waits for the device.
// Float operands may be f32, f16 or bf16 in any mix (math in f32); see each .cu for details.
#pragma once
#include <cstdint>

#include "qdm/view.h"

namespace qdm::cuda {
// Strided copy with dtype conversion (every dtype but packed i4); same-dtype copies are bit-exact.
void copyCast(const View& src, const View& dst);
void fill(const View& dst, double value);
// op: qdm::BinaryOp; a, b broadcast to out's shape through stride-0 dims. out may be any non-i4 dtype.
void binary(int op, const View& a, const View& b, const View& out);
// op: qdm::UnaryOp, p0/p1 as the CPU (clamp bounds, affine scale/shift, pow exponent).
void unary(int op, const View& x, const View& out, float p0, float p1);
void unaryBackward(int op, const View& x, const View& grad, const View& out, float p0, float p1);
void where(const View& cond, const View& a, const View& b, const View& out);
// op: qdm::ReduceOp over the dims flagged in reduced[]; out holds exactly the kept dims (i64 for arg ops).
void reduce(int op, const View& x, const bool* reduced, const View& out);
// Philox4x32-10 with the CPU's counter/key mapping: element i uses counter offset + i.
void random(int dist, const View& out, uint64_t seed, uint64_t offset, float p0, float p1);
// out[k, :] = src[idx[k], :]; out-of-range indices give NaN rows (no host check: launches stay asynchronous).
void indexRows(const View& src, const View& idx, const View& out);
// out[idx[k], :] += src[k, :] in index order per column (deterministic); out-of-range indices are skipped.
void indexAddRows(const View& src, const View& idx, const View& out);
// Nearest upsampling of [P, H, W] planes (backward: in = output grad [P, OH, OW], out = input grad [P, H, W], overwritten).
void upsampleNearest(const View& in, const View& out, double scaleH, double scaleW, bool backward);
void upsampleBilinear(const View& in, const View& out, double scaleH, double scaleW, bool alignCorners, bool backward);
}  // namespace qdm::cuda
