// Shared helpers for op implementations.
import { ArgumentError, DTypeError, ShapeError } from '../errors.js';
import { isFloating, type DType } from '../dtype.js';
import type { Device } from '../memory.js';
import { getBackend } from '../backend/index.js';
import { Tensor, shapeStr, numelOf, type Shape } from '../tensor.js';

/** A fresh, uninitialised (zeroed on the CPU) contiguous tensor. */
export function empty(shape: Shape, dtype: DType = 'f32', device: Device = 'cpu'): Tensor {
  const storage = getBackend(device).alloc(dtype, numelOf(shape));
  return new Tensor(storage, shape);
}

/**
 * A fresh contiguous tensor whose contents are unspecified on every device (a reused CPU buffer is
 * not zeroed): only for outputs that the kernel called next writes in full.
 */
export function emptyUninitialized(shape: Shape, dtype: DType = 'f32', device: Device = 'cpu'): Tensor {
  const storage = getBackend(device).alloc(dtype, numelOf(shape), { uninitialized: true });
  return new Tensor(storage, shape);
}

export function normDim(dim: number, ndim: number, op: string): number {
  const d = dim < 0 ? dim + ndim : dim;
  if (!Number.isInteger(d) || d < 0 || d >= Math.max(ndim, 1)) throw new ArgumentError(`${op}: dim ${dim} out of range for a tensor of rank ${ndim}`);
  return d;
}

export function normDims(dims: number | number[] | undefined, ndim: number, op: string): number[] {
  if (dims === undefined) return [...Array(ndim).keys()];
  const list = (Array.isArray(dims) ? dims : [dims]).map((d) => normDim(d, ndim, op));
  if (new Set(list).size !== list.length) throw new ArgumentError(`${op}: repeated dim in [${list.join(', ')}]`);
  return list.sort((a, b) => a - b);
}

export function broadcastShapes(a: Shape, b: Shape, op: string): number[] {
  const n = Math.max(a.length, b.length);
  const out = new Array<number>(n);
  for (let i = 0; i < n; ++i) {
    const da = a[a.length - n + i] ?? 1;
    const db = b[b.length - n + i] ?? 1;
    if (da !== db && da !== 1 && db !== 1) throw new ShapeError(`${op}: shapes ${shapeStr(a)} and ${shapeStr(b)} cannot be broadcast`);
    out[i] = da === 1 ? db : da;
  }
  return out;
}

/** A stride-0 view of t with shape `shape` (no copy, no autograd). */
export function expandView(t: Tensor, shape: Shape, op = 'expand'): Tensor {
  const n = shape.length;
  if (t.ndim > n) throw new ShapeError(`${op}: cannot expand ${shapeStr(t.shape)} to ${shapeStr(shape)}`);
  const strides = new Array<number>(n);
  for (let i = 0; i < n; ++i) {
    const j = i - (n - t.ndim);
    const d = j >= 0 ? t.shape[j]! : 1;
    if (d === shape[i]) strides[i] = j >= 0 ? t.strides[j]! : 0;
    else if (d === 1) strides[i] = 0;
    else throw new ShapeError(`${op}: cannot expand ${shapeStr(t.shape)} to ${shapeStr(shape)}`);
  }
  return new Tensor(t.storage, shape, strides, t.offset);
}

export function assertFloat(t: Tensor, op: string): void {
  if (!isFloating(t.dtype)) throw new DTypeError(`${op}: expected a floating-point tensor, got ${t.dtype}`);
}

export function sameShape(a: Shape, b: Shape): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}
