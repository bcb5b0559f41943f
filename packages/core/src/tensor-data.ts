// Reading tensor contents back into JavaScript values.
import { ArgumentError } from './errors.js';
import { Tensor } from './tensor.js';
import { castRaw, moveRaw } from './ops/creation.js';

type Flat = Float32Array | Int8Array | Uint8Array | Int32Array | BigInt64Array;

/** A contiguous CPU copy of the elements: Float32Array for float dtypes, the integer array otherwise (i4 as Int8Array). */
export function dataOf(t: Tensor): Flat {
  t.assertLive();
  let host = t.device === 'cpu' ? t : moveRaw(t, 'cpu');
  const floatLike = t.dtype === 'f16' || t.dtype === 'bf16' || t.dtype === 'f8e4m3' || t.dtype === 'f32';
  const target = floatLike ? 'f32' : t.dtype === 'i4' ? 'i8' : t.dtype;
  const out = castRaw(host, target);
  if (host !== t) host.dispose();
  const d = out.cpuData();
  out.dispose();
  return d as Flat;
}

export type NestedArray = number | NestedArray[];

export function toArray(t: Tensor): NestedArray {
  const d = dataOf(t);
  const get = (i: number) => Number(d[i]!);
  if (t.ndim === 0) return get(0);
  let pos = 0;
  const build = (dim: number): NestedArray[] => {
    const out: NestedArray[] = [];
    for (let i = 0; i < t.shape[dim]!; ++i) out.push(dim === t.ndim - 1 ? get(pos++) : build(dim + 1));
    return out;
  };
  return build(0);
}

export function item(t: Tensor): number {
  if (t.numel !== 1) throw new ArgumentError(`item(): tensor has ${t.numel} elements, expected 1`);
  return Number(dataOf(t)[0]!);
}

declare module './tensor.js' {
  interface Tensor { data(): Flat; toArray(): NestedArray; item(): number }
}
const P = Tensor.prototype as unknown as Record<string, unknown>;
P.data = function (this: Tensor) { return dataOf(this); };
P.toArray = function (this: Tensor) { return toArray(this); };
P.item = function (this: Tensor) { return item(this); };
