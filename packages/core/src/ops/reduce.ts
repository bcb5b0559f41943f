// Reductions over any set of dims (sum, mean, max, min, var, norm, argmax) and sumToShape,
// the adjoint of broadcasting that every binary op's backward uses.
import { ArgumentError } from '../errors.js';
import { kernel } from '../backend/index.js';
import { ReduceOp } from '../backend/opcodes.js';
import { record } from '../autograd.js';
import { Tensor, type Shape } from '../tensor.js';
import { castRaw } from './creation.js';
import { empty, expandView, normDims, assertFloat } from './util.js';
import { asF32, narrowTo } from './elementwise.js';
import * as E from './elementwise.js';
import { reshape } from './shape.js';

export interface ReduceOptions { keepdim?: boolean }

function keptShape(shape: Shape, dims: number[], keepdim: boolean): number[] {
  const out: number[] = [];
  shape.forEach((d, i) => { if (!dims.includes(i)) out.push(d); else if (keepdim) out.push(1); });
  return out;
}

function rawReduce(op: keyof typeof ReduceOp, x: Tensor, dims: number[], keepdim: boolean): Tensor {
  const x32 = asF32(x);
  const kept = x.shape.filter((_, i) => !dims.includes(i));
  const isArg = op === 'argmax' || op === 'argmin';
  const out = empty(kept, isArg ? 'i64' : 'f32', x.device);
  kernel('reduce', ReduceOp[op], x32, dims, out);
  if (x32 !== x) x32.dispose();
  const shaped = keepdim ? reshapeRaw(out, keptShape(x.shape, dims, true)) : out;
  if (isArg) return shaped;
  return narrowTo(shaped, x.dtype === 'f8e4m3' ? 'f32' : x.dtype);
}

function reshapeRaw(t: Tensor, shape: number[]): Tensor { return new Tensor(t.storage, shape); }

/** Gradient g of a reduction, broadcast back over the reduced dims of inShape. */
function expandGrad(g: Tensor, inShape: Shape, dims: number[], keepdim: boolean): Tensor {
  const withOnes = keepdim ? g : reshapeRaw(g.isContiguous() ? g : castRaw(g, g.dtype), keptShape(inShape, dims, true));
  return expandView(withOnes, inShape);
}

export function sum(x: Tensor, dims?: number | number[], opts: ReduceOptions = {}): Tensor {
  const d = normDims(dims, x.ndim, 'sum');
  const keep = opts.keepdim ?? false;
  const out = rawReduce('sum', x, d, keep);
  return record(out, 'sum', [x], (g) => [castRaw(expandGrad(g, x.shape, d, keep), x.dtype)]);
}

export function mean(x: Tensor, dims?: number | number[], opts: ReduceOptions = {}): Tensor {
  const d = normDims(dims, x.ndim, 'mean');
  const keep = opts.keepdim ?? false;
  const n = d.reduce((a, i) => a * x.shape[i]!, 1);
  const out = rawReduce('mean', x, d, keep);
  return record(out, 'mean', [x], (g) => [E.affine(castRaw(expandGrad(g, x.shape, d, keep), x.dtype), 1 / n, 0)]);
}

function extremum(op: 'max' | 'min', x: Tensor, dims?: number | number[], opts: ReduceOptions = {}): Tensor {
  assertFloat(x, op);
  const d = normDims(dims, x.ndim, op);
  if (d.some((i) => x.shape[i] === 0)) throw new ArgumentError(`${op}: reduction over an empty dimension`);
  const keep = opts.keepdim ?? false;
  const out = rawReduce(op, x, d, keep);
  return record(out, op, [x], (g) => {
    // Gradient shared evenly among the elements equal to the extremum.
    const ext = expandGrad(out, x.shape, d, keep);
    const mask = castRaw(E.eq(x, castRaw(ext, x.dtype)), 'f32');
    const count = rawReduce('sum', mask, d, true);
    const share = E.div(mask, expandView(count, x.shape));
    return [castRaw(E.mul(share, castRaw(expandGrad(g, x.shape, d, keep), 'f32')), x.dtype)];
  });
}
export function max(x: Tensor, dims?: number | number[], opts?: ReduceOptions): Tensor { return extremum('max', x, dims, opts); }
export function min(x: Tensor, dims?: number | number[], opts?: ReduceOptions): Tensor { return extremum('min', x, dims, opts); }

/** Index of the largest element along dim (i64, no gradient). */
export function argmax(x: Tensor, dim: number, opts: ReduceOptions = {}): Tensor { return rawReduce('argmax', x, normDims(dim, x.ndim, 'argmax'), opts.keepdim ?? false); }
export function argmin(x: Tensor, dim: number, opts: ReduceOptions = {}): Tensor { return rawReduce('argmin', x, normDims(dim, x.ndim, 'argmin'), opts.keepdim ?? false); }

/** Variance; unbiased (n-1) by default, as torch.var. */
export function variance(x: Tensor, dims?: number | number[], opts: ReduceOptions & { unbiased?: boolean } = {}): Tensor {
  const d = normDims(dims, x.ndim, 'var');
  const n = d.reduce((a, i) => a * x.shape[i]!, 1);
  const mu = mean(x, d, { keepdim: true });
  const dev = E.sub(x, mu);
  const ss = sum(E.square(dev), d, { keepdim: opts.keepdim ?? false });
  const denom = (opts.unbiased ?? true) ? n - 1 : n;
  return E.affine(ss, 1 / denom, 0);
}

/** p-norm over dims (p = 2 by default; also 1 and Infinity). */
export function norm(x: Tensor, p: number = 2, dims?: number | number[], opts: ReduceOptions = {}): Tensor {
  if (p === 2) return E.sqrt(sum(E.square(x), dims, opts));
  if (p === 1) return sum(E.abs(x), dims, opts);
  if (p === Infinity) return max(E.abs(x), dims, opts);
  return E.pow(sum(E.pow(E.abs(x), p), dims, opts), 1 / p);
}

/** Sums g over the dims that broadcasting expanded, returning a tensor of `shape`. */
export function sumToShape(g: Tensor, shape: Shape): Tensor {
  if (g.ndim === shape.length && g.shape.every((d, i) => d === shape[i])) return g.isContiguous() ? new Tensor(g.storage, g.shape, g.strides, g.offset) : castRaw(g, g.dtype);
  const lead = g.ndim - shape.length;
  const dims: number[] = [];
  for (let i = 0; i < g.ndim; ++i) {
    if (i < lead) dims.push(i);
    else if (shape[i - lead] === 1 && g.shape[i] !== 1) dims.push(i);
  }
  const r = rawReduce('sum', g, dims, false);
  return reshape(r, shape);
}

declare module '../tensor.js' {
  interface Tensor {
    sum(dims?: number | number[], opts?: ReduceOptions): Tensor; mean(dims?: number | number[], opts?: ReduceOptions): Tensor;
    max(dims?: number | number[], opts?: ReduceOptions): Tensor; min(dims?: number | number[], opts?: ReduceOptions): Tensor;
    argmax(dim: number, opts?: ReduceOptions): Tensor; argmin(dim: number, opts?: ReduceOptions): Tensor;
    var(dims?: number | number[], opts?: ReduceOptions & { unbiased?: boolean }): Tensor;
    norm(p?: number, dims?: number | number[], opts?: ReduceOptions): Tensor;
  }
}
const P = Tensor.prototype as unknown as Record<string, unknown>;
P.sum = function (this: Tensor, d?: number | number[], o?: ReduceOptions) { return sum(this, d, o); };
P.mean = function (this: Tensor, d?: number | number[], o?: ReduceOptions) { return mean(this, d, o); };
P.max = function (this: Tensor, d?: number | number[], o?: ReduceOptions) { return max(this, d, o); };
P.min = function (this: Tensor, d?: number | number[], o?: ReduceOptions) { return min(this, d, o); };
P.argmax = function (this: Tensor, d: number, o?: ReduceOptions) { return argmax(this, d, o); };
P.argmin = function (this: Tensor, d: number, o?: ReduceOptions) { return argmin(this, d, o); };
P.var = function (this: Tensor, d?: number | number[], o?: ReduceOptions & { unbiased?: boolean }) { return variance(this, d, o); };
P.norm = function (this: Tensor, p?: number, d?: number | number[], o?: ReduceOptions) { return norm(this, p, d, o); };
