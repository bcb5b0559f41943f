// CPU kernel entry points used by the binding. All float kernels compute in fp32; the
// TypeScript layer casts half-precision operands around them.
#pragma once
#include <cstdint>

#include "qdm/view.h"

namespace qdm::cpu {

// --- copy / cast / fill (any dtype, any strides; src and dst have the same shape) ---
void copyCast(const View& src, const View& dst);
void fill(const View& dst, double value);

// --- elementwise (fp32; a and b are already broadcast to out's shape through strides) ---
void binary(int op, const View& a, const View& b, const View& out);
void unary(int op, const View& x, const View& out, float p0, float p1);
// dx = g * d(op)/dx evaluated at x
void unaryBackward(int op, const View& x, const View& g, const View& out, float p0, float p1);
void where(const View& cond, const View& a, const View& b, const View& out);

// --- reductions: `reduced[d]` marks dims of x that collapse; out holds the kept dims in order ---
void reduce(int op, const View& x, const bool* reduced, const View& out);

// --- random: Philox4x32-10, element i of the call uses counter (offset + i) ---
void random(int dist, const View& out, uint64_t seed, uint64_t offset, float p0, float p1);

// --- machine info ---
const char* isaName();  // "avx512-vnni", "avx512", "avx2", "scalar"
bool hasAvx2();
bool hasAvx512();
bool hasAvx512Vnni();

}  // namespace qdm::cpu
