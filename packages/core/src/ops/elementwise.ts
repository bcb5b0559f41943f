// Elementwise ops with broadcasting, and their gradients. The CPU kernels compute in fp32:
// half-precision operands are widened around the kernel and the result narrowed back. Backends
// with nativeHalf (CUDA) take f16/bf16 operands and outputs directly, so there asF32 keeps
// halves as they are and the ops allocate their outputs in computeDtype(device, dtype).
import { DTypeError } from '../errors.js';
import { isFloating, promote, type DType } from '../dtype.js';
import { hasNativeHalf, kernel } from '../backend/index.js';
import { BinaryOp, UnaryOp, type BinaryOpName, type UnaryOpName } from '../backend/opcodes.js';
import { record } from '../autograd.js';
import { Tensor } from '../tensor.js';
import { castRaw, full } from './creation.js';
import { broadcastShapes, empty, emptyUninitialized, expandView } from './util.js';
import { sumToShape } from './reduce.js';

type Operand = Tensor | number;

const isHalf = (d: DType) => d === 'f16' || d === 'bf16';

/** The dtype a kernel on `device` computes a `dtype` result in: f32 on the CPU, f16/bf16 kept where the backend has nativeHalf. */
export function computeDtype(device: Tensor['device'], dtype: DType): DType {
  return isHalf(dtype) && hasNativeHalf(device) ? dtype : 'f32';
}

/** Kernel operand of t: fp32 (a copy for other dtypes), except halves on a nativeHalf backend, which pass as they are. */
export function asF32(t: Tensor): Tensor { return t.dtype === 'f32' || (isHalf(t.dtype) && hasNativeHalf(t.device)) ? t : castRaw(t, 'f32'); }

/** Narrows a kernel result to dtype (disposing the temporary); a result already in dtype is returned as is. */
export function narrowTo(out32: Tensor, dtype: DType): Tensor {
  if (out32.dtype === dtype) return out32;
  const o = castRaw(out32, dtype);
  out32.dispose();
  return o;
}

function resultDtype(a: DType, b: DType): DType {
  const d = promote(a, b);
  return isFloating(d) && d !== 'f8e4m3' ? d : 'f32';
}

function toTensor(x: Operand, like: Tensor): Tensor {
  return typeof x === 'number' ? full([], x, { dtype: 'f32', device: like.device }) : x;
}

/** Gradient for input t from an output gradient g: undo broadcasting, match t's dtype. */
export function gradFor(t: Tensor, g: Tensor): Tensor {
  let r = sumToShape(g, t.shape);
  if (r.dtype !== t.dtype) r = castRaw(r, t.dtype);
  return r;
}

function rawBinary(name: BinaryOpName, a: Tensor, b: Tensor): Tensor {
  const shape = broadcastShapes(a.shape, b.shape, name);
  const dtype = resultDtype(a.dtype, b.dtype);
  const a32 = asF32(a), b32 = asF32(b);
  const out = emptyUninitialized(shape, computeDtype(a.device, dtype), a.device);
  kernel('binary', BinaryOp[name], expandView(a32, shape), expandView(b32, shape), out);
  if (a32 !== a) a32.dispose();
  if (b32 !== b) b32.dispose();
  return narrowTo(out, dtype);
}

function rawUnary(name: UnaryOpName, x: Tensor, p0 = 0, p1 = 0): Tensor {
  if (!isFloating(x.dtype)) throw new DTypeError(`${name}: expected a floating-point tensor, got ${x.dtype}`);
  const x32 = asF32(x);
  const out = emptyUninitialized(x.shape, computeDtype(x.device, x.dtype), x.device);
  kernel('unary', UnaryOp[name], x32, out, p0, p1);
  if (x32 !== x) x32.dispose();
  return narrowTo(out, x.dtype === 'f8e4m3' ? 'f32' : x.dtype);
}

/** d(op)/dx * g, computed by the fused backward kernel. */
function rawUnaryBackward(name: UnaryOpName, x: Tensor, g: Tensor, p0 = 0, p1 = 0): Tensor {
  const x32 = asF32(x), g32 = asF32(g);
  const out = emptyUninitialized(x.shape, computeDtype(x.device, x.dtype), x.device);
  kernel('unaryBackward', UnaryOp[name], x32, g32, out, p0, p1);
  if (x32 !== x) x32.dispose();
  if (g32 !== g) g32.dispose();
  return narrowTo(out, x.dtype);
}

export function unaryOp(name: UnaryOpName, x: Tensor, p0 = 0, p1 = 0): Tensor {
  const out = rawUnary(name, x, p0, p1);
  return record(out, name, [x], (g) => [rawUnaryBackward(name, x, g, p0, p1)]);
}

// ---- binary ----------------------------------------------------------------------------

export function add(a: Operand, b: Operand): Tensor {
  if (typeof b === 'number' && a instanceof Tensor) return affine(a, 1, b);
  if (typeof a === 'number' && b instanceof Tensor) return affine(b, 1, a);
  const ta = a as Tensor, tb = b as Tensor;
  const out = rawBinary('add', ta, tb);
  return record(out, 'add', [ta, tb], (g) => [ta.requiresGrad ? gradFor(ta, g) : null, tb.requiresGrad ? gradFor(tb, g) : null]);
}

export function sub(a: Operand, b: Operand): Tensor {
  if (typeof b === 'number' && a instanceof Tensor) return affine(a, 1, -b);
  if (typeof a === 'number' && b instanceof Tensor) return affine(b, -1, a);
  const ta = a as Tensor, tb = b as Tensor;
  const out = rawBinary('sub', ta, tb);
  return record(out, 'sub', [ta, tb], (g) => [ta.requiresGrad ? gradFor(ta, g) : null, tb.requiresGrad ? gradFor(tb, neg(g)) : null]);
}

export function mul(a: Operand, b: Operand): Tensor {
  if (typeof b === 'number' && a instanceof Tensor) return affine(a, b, 0);
  if (typeof a === 'number' && b instanceof Tensor) return affine(b, a, 0);
  const ta = a as Tensor, tb = b as Tensor;
  const out = rawBinary('mul', ta, tb);
  return record(out, 'mul', [ta, tb], (g) => [
    ta.requiresGrad ? gradFor(ta, rawBinary('mul', g, tb)) : null,
    tb.requiresGrad ? gradFor(tb, rawBinary('mul', g, ta)) : null,
  ]);
}

export function div(a: Operand, b: Operand): Tensor {
  if (typeof b === 'number' && a instanceof Tensor) return affine(a, 1 / b, 0);
  const ta = toTensor(a, b as Tensor), tb = b as Tensor;
  const out = rawBinary('div', ta, tb);
  return record(out, 'div', [ta, tb], (g) => [
    ta.requiresGrad ? gradFor(ta, rawBinary('div', g, tb)) : null,
    // d(a/b)/db = -a/b^2 = -out/b
    tb.requiresGrad ? gradFor(tb, neg(rawBinary('div', rawBinary('mul', g, out), tb))) : null,
  ]);
}

export function pow(a: Tensor, b: Operand): Tensor {
  if (typeof b === 'number') return unaryOp('pows', a, b);
  const out = rawBinary('pow', a, b);
  return record(out, 'pow', [a, b], (g) => [
    a.requiresGrad ? gradFor(a, rawBinary('mul', g, rawBinary('mul', b, rawBinary('pow', a, add(b, -1))))) : null,
    b.requiresGrad ? gradFor(b, rawBinary('mul', g, rawBinary('mul', out, rawUnary('log', a)))) : null,
  ]);
}

function minMax(name: 'max' | 'min', a: Operand, b: Operand): Tensor {
  const ta = a instanceof Tensor ? a : toTensor(a, b as Tensor);
  const tb = b instanceof Tensor ? b : toTensor(b, ta);
  const out = rawBinary(name, ta, tb);
  return record(out, name === 'max' ? 'maximum' : 'minimum', [ta, tb], (g) => {
    // Ties split the gradient evenly, as torch.maximum does.
    const aWins = rawBinary(name === 'max' ? 'gt' : 'lt', ta, tb);
    const tie = rawBinary('eq', ta, tb);
    const wa = rawBinary('add', aWins, rawUnary('affine', tie, 0.5, 0));
    const wb = rawUnary('affine', wa, -1, 1);
    return [ta.requiresGrad ? gradFor(ta, rawBinary('mul', g, wa)) : null, tb.requiresGrad ? gradFor(tb, rawBinary('mul', g, wb)) : null];
  });
}
export function maximum(a: Operand, b: Operand): Tensor { return minMax('max', a, b); }
export function minimum(a: Operand, b: Operand): Tensor { return minMax('min', a, b); }

/** Comparisons return u8 masks (1 where true); they carry no gradient. */
function compare(name: 'eq' | 'ne' | 'lt' | 'le' | 'gt' | 'ge', a: Tensor, b: Operand): Tensor {
  const r = rawBinary(name, a, toTensor(b, a));
  const m = castRaw(r, 'u8');
  r.dispose();
  return m;
}
export const eq = (a: Tensor, b: Operand) => compare('eq', a, b);
export const ne = (a: Tensor, b: Operand) => compare('ne', a, b);
export const lt = (a: Tensor, b: Operand) => compare('lt', a, b);
export const le = (a: Tensor, b: Operand) => compare('le', a, b);
export const gt = (a: Tensor, b: Operand) => compare('gt', a, b);
export const ge = (a: Tensor, b: Operand) => compare('ge', a, b);

/** cond ? a : b, broadcasting all three. */
export function where(cond: Tensor, a: Operand, b: Operand): Tensor {
  const ta = a instanceof Tensor ? a : toTensor(a, cond);
  const tb = b instanceof Tensor ? b : toTensor(b, cond);
  const shape = broadcastShapes(broadcastShapes(cond.shape, ta.shape, 'where'), tb.shape, 'where');
  const c8 = cond.dtype === 'u8' ? cond : castRaw(rawBinary('ne', asF32(cond), toTensor(0, cond)), 'u8');
  const dtype = resultDtype(ta.dtype, tb.dtype);
  const a32 = asF32(ta), b32 = asF32(tb);
  const out = empty(shape, computeDtype(cond.device, dtype), cond.device);
  kernel('where', expandView(c8, shape), expandView(a32, shape), expandView(b32, shape), out);
  const res = narrowTo(out, dtype);
  return record(res, 'where', [ta, tb], (g) => {
    const zero = full([], 0, { device: g.device });
    const ga = ta.requiresGrad ? gradFor(ta, whereRaw(c8, g, zero, shape)) : null;
    const gb = tb.requiresGrad ? gradFor(tb, whereRaw(c8, zero, g, shape)) : null;
    return [ga, gb];
  });
}
function whereRaw(c8: Tensor, a: Tensor, b: Tensor, shape: number[]): Tensor {
  const a32 = asF32(a), b32 = asF32(b);
  const out = empty(shape, 'f32', c8.device);
  kernel('where', expandView(c8, shape), expandView(a32, shape), expandView(b32, shape), out);
  return out;
}

// ---- unary -----------------------------------------------------------------------------

/** p0 * x + p1 in one pass. */
export function affine(x: Tensor, scale: number, shift: number): Tensor { return unaryOp('affine', x, scale, shift); }
export const neg = (x: Tensor) => unaryOp('neg', x);
export const abs = (x: Tensor) => unaryOp('abs', x);
export const exp = (x: Tensor) => unaryOp('exp', x);
export const log = (x: Tensor) => unaryOp('log', x);
export const log1p = (x: Tensor) => unaryOp('log1p', x);
export const expm1 = (x: Tensor) => unaryOp('expm1', x);
export const sqrt = (x: Tensor) => unaryOp('sqrt', x);
export const rsqrt = (x: Tensor) => unaryOp('rsqrt', x);
export const tanh = (x: Tensor) => unaryOp('tanh', x);
export const sigmoid = (x: Tensor) => unaryOp('sigmoid', x);
export const silu = (x: Tensor) => unaryOp('silu', x);
export const relu = (x: Tensor) => unaryOp('relu', x);
export const square = (x: Tensor) => unaryOp('square', x);
export const reciprocal = (x: Tensor) => unaryOp('recip', x);
export const sin = (x: Tensor) => unaryOp('sin', x);
export const cos = (x: Tensor) => unaryOp('cos', x);
export const sign = (x: Tensor) => unaryOp('sign', x);
export const floor = (x: Tensor) => unaryOp('floor', x);
export const ceil = (x: Tensor) => unaryOp('ceil', x);
/** GELU: exact (erf) by default, or the tanh approximation. */
export function gelu(x: Tensor, approximate: 'none' | 'tanh' = 'none'): Tensor { return unaryOp(approximate === 'tanh' ? 'geluTanh' : 'gelu', x); }
export function clamp(x: Tensor, min = -Infinity, max = Infinity): Tensor { return unaryOp('clamp', x, min, max); }

/**
 * Round half to even. With `ste: true` the gradient passes straight through (the
 * straight-through estimator of quantization-aware training); without it the gradient is 0.
 */
export function round(x: Tensor, opts: { ste?: boolean } = {}): Tensor {
  if (!opts.ste) return unaryOp('round', x);
  const out = rawUnary('round', x);
  return record(out, 'roundSte', [x], (g) => [g.dtype === x.dtype ? castRaw(g, x.dtype) : castRaw(g, x.dtype)]);
}

// ---- methods ---------------------------------------------------------------------------
declare module '../tensor.js' {
  interface Tensor {
    add(b: Operand): Tensor; sub(b: Operand): Tensor; mul(b: Operand): Tensor; div(b: Operand): Tensor; pow(b: Operand): Tensor;
    maximum(b: Operand): Tensor; minimum(b: Operand): Tensor;
    eq(b: Operand): Tensor; ne(b: Operand): Tensor; lt(b: Operand): Tensor; le(b: Operand): Tensor; gt(b: Operand): Tensor; ge(b: Operand): Tensor;
    neg(): Tensor; abs(): Tensor; exp(): Tensor; log(): Tensor; sqrt(): Tensor; rsqrt(): Tensor; tanh(): Tensor; sigmoid(): Tensor;
    silu(): Tensor; relu(): Tensor; square(): Tensor; reciprocal(): Tensor; sin(): Tensor; cos(): Tensor; sign(): Tensor;
    gelu(approximate?: 'none' | 'tanh'): Tensor; clamp(min?: number, max?: number): Tensor; round(opts?: { ste?: boolean }): Tensor;
    affine(scale: number, shift: number): Tensor;
  }
}
const P = Tensor.prototype as unknown as Record<string, unknown>;
const bin: Record<string, (a: Tensor, b: Operand) => Tensor> = { add, sub, mul, div, pow, maximum, minimum, eq, ne, lt, le, gt, ge };
for (const [k, f] of Object.entries(bin)) P[k] = function (this: Tensor, b: Operand) { return f(this, b); };
const un: Record<string, (x: Tensor) => Tensor> = { neg, abs, exp, log, sqrt, rsqrt, tanh, sigmoid, silu, relu, square, reciprocal, sin, cos, sign };
for (const [k, f] of Object.entries(un)) P[k] = function (this: Tensor) { return f(this); };
P.gelu = function (this: Tensor, a?: 'none' | 'tanh') { return gelu(this, a); };
P.clamp = function (this: Tensor, lo?: number, hi?: number) { return clamp(this, lo, hi); };
P.round = function (this: Tensor, o?: { ste?: boolean }) { return round(this, o); };
P.affine = function (this: Tensor, s: number, b: number) { return affine(this, s, b); };
