// Views (reshape, permute, slice, expand...) share storage and never copy; contiguous()
// copies only when the strides require it. Casts and device moves copy. All differentiable.
import { ArgumentError, ShapeError } from '../errors.js';
import { checkDType, isFloating, type DType } from '../dtype.js';
import type { Device } from '../memory.js';
import { kernel, resolveDevice } from '../backend/index.js';
import { record } from '../autograd.js';
import { Tensor, shapeStr, numelOf, type Shape } from '../tensor.js';
import { castRaw, moveRaw, zeros } from './creation.js';
import { empty, emptyUninitialized, expandView, normDim } from './util.js';
import { sumToShape } from './reduce.js';

function viewOf(t: Tensor, shape: Shape, strides: readonly number[], offset: number): Tensor {
  return new Tensor(t.storage, shape, strides, offset);
}

/** A contiguous copy, or t itself (as a new view) when already contiguous. */
export function contiguous(t: Tensor): Tensor {
  if (t.isContiguous()) return passThrough(t);
  const out = emptyUninitialized(t.shape, t.dtype, t.device);
  kernel('copyCast', t, out);
  return record(out, 'contiguous', [t], (g) => [g]);
}

function passThrough(t: Tensor): Tensor {
  const v = viewOf(t, t.shape, t.strides, t.offset);
  return record(v, 'view', [t], (g) => [g]);
}

/** Always a fresh contiguous copy. */
export function clone(t: Tensor): Tensor {
  const out = emptyUninitialized(t.shape, t.dtype, t.device);
  kernel('copyCast', t, out);
  return record(out, 'clone', [t], (g) => [g]);
}

/** A tensor sharing storage with t, cut from the graph. */
export function detach(t: Tensor): Tensor { return viewOf(t, t.shape, t.strides, t.offset); }

function inferReshape(t: Tensor, shape: Shape): number[] {
  const out = [...shape];
  const neg = out.indexOf(-1);
  if (neg >= 0) {
    const known = out.reduce((a, d, i) => (i === neg ? a : a * d), 1);
    if (known === 0 || t.numel % known !== 0) throw new ShapeError(`reshape: cannot reshape ${shapeStr(t.shape)} to ${shapeStr(shape)}`);
    out[neg] = t.numel / known;
  }
  if (numelOf(out) !== t.numel || out.some((d) => d < 0 || !Number.isInteger(d))) throw new ShapeError(`reshape: cannot reshape ${shapeStr(t.shape)} (${t.numel} elements) to ${shapeStr(shape)}`);
  return out;
}

/** Reshape: a view of a contiguous tensor, else a contiguous copy. One dim may be -1. */
export function reshape(t: Tensor, shape: Shape): Tensor {
  const target = inferReshape(t, shape);
  const inShape = t.shape;
  let out: Tensor;
  if (t.isContiguous()) out = viewOf(t, target, contiguousStridesOf(target), t.offset);
  else {
    const c = empty(t.shape, t.dtype, t.device);
    kernel('copyCast', t, c);
    out = viewOf(c, target, contiguousStridesOf(target), 0);
    c.dispose();
  }
  return record(out, 'reshape', [t], (g) => [reshape(g, inShape)]);
}

function contiguousStridesOf(shape: Shape): number[] {
  const s = new Array<number>(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; --i) { s[i] = acc; acc *= shape[i]!; }
  return s;
}

export function flatten(t: Tensor, startDim = 0, endDim = -1): Tensor {
  if (t.ndim === 0) return reshape(t, [1]);
  const s = normDim(startDim, t.ndim, 'flatten');
  const e = normDim(endDim, t.ndim, 'flatten');
  const shape = [...t.shape.slice(0, s), t.shape.slice(s, e + 1).reduce((a, b) => a * b, 1), ...t.shape.slice(e + 1)];
  return reshape(t, shape);
}

export function permute(t: Tensor, dims: number[]): Tensor {
  if (dims.length !== t.ndim) throw new ArgumentError(`permute: ${dims.length} dims given for a tensor of rank ${t.ndim}`);
  const p = dims.map((d) => normDim(d, t.ndim, 'permute'));
  if (new Set(p).size !== p.length) throw new ArgumentError(`permute: dims [${dims.join(', ')}] are not a permutation`);
  const out = viewOf(t, p.map((d) => t.shape[d]!), p.map((d) => t.strides[d]!), t.offset);
  const inv = new Array<number>(p.length);
  p.forEach((d, i) => { inv[d] = i; });
  return record(out, 'permute', [t], (g) => [permute(g, inv)]);
}

export function transpose(t: Tensor, d0 = -2, d1 = -1): Tensor {
  const a = normDim(d0, t.ndim, 'transpose');
  const b = normDim(d1, t.ndim, 'transpose');
  const p = [...Array(t.ndim).keys()];
  p[a] = b; p[b] = a;
  return permute(t, p);
}

export function unsqueeze(t: Tensor, dim: number): Tensor {
  const d = dim < 0 ? dim + t.ndim + 1 : dim;
  if (d < 0 || d > t.ndim) throw new ArgumentError(`unsqueeze: dim ${dim} out of range for rank ${t.ndim}`);
  const shape = [...t.shape]; shape.splice(d, 0, 1);
  return reshape(t, shape);
}

export function squeeze(t: Tensor, dim?: number): Tensor {
  if (dim === undefined) return reshape(t, t.shape.filter((s) => s !== 1));
  const d = normDim(dim, t.ndim, 'squeeze');
  if (t.shape[d] !== 1) return t;
  const shape = [...t.shape]; shape.splice(d, 1);
  return reshape(t, shape);
}

/** Broadcasts size-1 dims to `shape` (a stride-0 view). -1 keeps a dim. */
export function expand(t: Tensor, shape: Shape): Tensor {
  const target = shape.map((d, i) => (d === -1 ? t.shape[i - (shape.length - t.ndim)]! : d));
  const out = expandView(t, target);
  const inShape = t.shape;
  return record(out, 'expand', [t], (g) => [sumToShape(g, inShape)]);
}

/** Elements start, start+step, ... below end along dim (a view). Negative indices count from the end. */
export function slice(t: Tensor, dim: number, start = 0, end?: number, step = 1): Tensor {
  const d = normDim(dim, t.ndim, 'slice');
  const n = t.shape[d]!;
  if (step <= 0 || !Number.isInteger(step)) throw new ArgumentError(`slice: step must be a positive integer, got ${step}`);
  let s = start < 0 ? start + n : start;
  let e = end === undefined ? n : end < 0 ? end + n : end;
  s = Math.min(Math.max(s, 0), n);
  e = Math.min(Math.max(e, s), n);
  const len = Math.ceil((e - s) / step);
  const shape = [...t.shape]; shape[d] = len;
  const strides = [...t.strides]; strides[d] = t.strides[d]! * step;
  const out = viewOf(t, shape, strides, t.offset + s * t.strides[d]!);
  const inShape = t.shape;
  return record(out, 'slice', [t], (g) => {
    const gi = zeros(inShape, { dtype: g.dtype, device: g.device });
    const target = slice(gi, d, s, e, step);
    kernel('copyCast', g, target);
    target.dispose();
    return [gi];
  });
}

/** Picks index i along dim, removing the dim. */
export function select(t: Tensor, dim: number, index: number): Tensor {
  const d = normDim(dim, t.ndim, 'select');
  const n = t.shape[d]!;
  const i = index < 0 ? index + n : index;
  if (i < 0 || i >= n) throw new ArgumentError(`select: index ${index} out of range for dim ${d} of size ${n}`);
  return squeeze(slice(t, d, i, i + 1), d);
}

export function narrow(t: Tensor, dim: number, start: number, length: number): Tensor { return slice(t, dim, start, start + length); }

/** Converts the dtype (a differentiable copy; returns t itself if unchanged). */
export function cast(t: Tensor, dtype: DType): Tensor {
  checkDType(dtype);
  if (dtype === t.dtype) return t;
  const out = castRaw(t, dtype);
  if (!isFloating(dtype)) return out;
  const inDtype = t.dtype;
  return record(out, 'cast', [t], (g) => [castRaw(g, inDtype)]);
}

/** Moves to a device and/or converts the dtype. */
export function to(t: Tensor, target: Device | 'auto' | DType | { device?: Device | 'auto'; dtype?: DType }): Tensor {
  let device: Device | undefined;
  let dtype: DType | undefined;
  if (typeof target === 'string') {
    if (target === 'cpu' || target === 'cuda' || target === 'auto') device = resolveDevice(target);
    else dtype = checkDType(target);
  } else {
    device = target.device ? resolveDevice(target.device) : undefined;
    dtype = target.dtype;
  }
  let out = t;
  if (device && device !== t.device) {
    const src = out;
    out = moveRaw(src, device);
    const from = src.device;
    out = record(out, 'to', [src], (g) => [moveRaw(g, from)]);
  }
  if (dtype && dtype !== out.dtype) out = cast(out, dtype);
  return out;
}

// ---- methods ---------------------------------------------------------------------------
declare module '../tensor.js' {
  interface Tensor {
    contiguous(): Tensor; clone(): Tensor; detach(): Tensor;
    reshape(...shape: number[] | [Shape]): Tensor; view(...shape: number[] | [Shape]): Tensor;
    flatten(startDim?: number, endDim?: number): Tensor;
    permute(...dims: number[] | [number[]]): Tensor; transpose(d0?: number, d1?: number): Tensor; get T(): Tensor;
    unsqueeze(dim: number): Tensor; squeeze(dim?: number): Tensor; expand(...shape: number[] | [Shape]): Tensor;
    slice(dim: number, start?: number, end?: number, step?: number): Tensor; select(dim: number, index: number): Tensor;
    narrow(dim: number, start: number, length: number): Tensor;
    cast(dtype: DType): Tensor; to(target: Device | 'auto' | DType | { device?: Device | 'auto'; dtype?: DType }): Tensor;
  }
}
function shapeArgs(args: unknown[]): number[] { return (Array.isArray(args[0]) ? args[0] : args) as number[]; }
const P = Tensor.prototype as unknown as Record<string, unknown>;
P.contiguous = function (this: Tensor) { return contiguous(this); };
P.clone = function (this: Tensor) { return clone(this); };
P.detach = function (this: Tensor) { return detach(this); };
P.reshape = function (this: Tensor, ...s: unknown[]) { return reshape(this, shapeArgs(s)); };
P.view = P.reshape;
P.flatten = function (this: Tensor, a?: number, b?: number) { return flatten(this, a, b); };
P.permute = function (this: Tensor, ...d: unknown[]) { return permute(this, shapeArgs(d)); };
P.transpose = function (this: Tensor, a?: number, b?: number) { return transpose(this, a, b); };
Object.defineProperty(Tensor.prototype, 'T', { get(this: Tensor) { return transpose(this, -2, -1); } });
P.unsqueeze = function (this: Tensor, d: number) { return unsqueeze(this, d); };
P.squeeze = function (this: Tensor, d?: number) { return squeeze(this, d); };
P.expand = function (this: Tensor, ...s: unknown[]) { return expand(this, shapeArgs(s)); };
P.slice = function (this: Tensor, d: number, s?: number, e?: number, st?: number) { return slice(this, d, s, e, st); };
P.select = function (this: Tensor, d: number, i: number) { return select(this, d, i); };
P.narrow = function (this: Tensor, d: number, s: number, l: number) { return narrow(this, d, s, l); };
P.cast = function (this: Tensor, d: DType) { return cast(this, d); };
P.to = function (this: Tensor, t: Device | DType) { return to(this, t); };
