// Shared float64 references for the quant tests: a seeded RNG, round-half-even, and cases
// covering every granularity with their element -> parameter maps.
import { mulberry32 } from '@qdm/core';
import type { Granularity } from '../src/spec.js';

export const rng = mulberry32;
export function gauss(r: () => number): number { return Math.sqrt(-2 * Math.log(r() + 1e-12)) * Math.cos(2 * Math.PI * r()); }

export function roundHalfEven(v: number): number {
  const f = Math.floor(v), d = v - f;
  if (d < 0.5) return f;
  if (d > 0.5) return f + 1;
  return f % 2 === 0 ? f : f + 1;
}

export interface Case {
  granularity: Granularity;
  shape: number[];
  x: Float32Array;
  scale: Float32Array;
  zero: Float32Array;
  col: Float32Array | null;
  qmin: number;
  qmax: number;
  channelAxis: number;
  groupSize: number;
  /** Parameter index of element i (scale/zero entry; the row for separable). */
  param(i: number): number;
  /** Column index of element i (separable). */
  colOf(i: number): number;
}

export function makeCase(granularity: Granularity, shape: number[], bits: number, signed: boolean, seed: number, opts: { channelAxis?: number; groupSize?: number } = {}): Case {
  const r = rng(seed);
  const n = shape.reduce((a, b) => a * b, 1);
  const qmin = signed ? -(2 ** (bits - 1)) : 0, qmax = signed ? 2 ** (bits - 1) - 1 : 2 ** bits - 1;
  const levels = qmax - qmin;
  const x = new Float32Array(n).map(() => 2 * gauss(r));
  const channelAxis = opts.channelAxis ?? 0, groupSize = opts.groupSize ?? 4;
  let P = 1, param = (_i: number) => 0, colOf = (_i: number) => 0, K = 1;
  if (granularity === 'channel') {
    const C = shape[channelAxis]!, inner = shape.slice(channelAxis + 1).reduce((a, b) => a * b, 1);
    P = C; param = (i) => Math.floor(i / inner) % C;
  } else if (granularity === 'group') {
    P = n / groupSize; param = (i) => Math.floor(i / groupSize);
  } else if (granularity === 'separable') {
    K = n / shape[0]!; P = shape[0]!; param = (i) => Math.floor(i / K); colOf = (i) => i % K;
  }
  // Scales that put roughly 5-10 % of the elements outside the range, so both branches are hit.
  const base = 5 / levels;
  const scale = new Float32Array(P).map(() => base * (0.6 + 0.8 * r()));
  const col = granularity === 'separable' ? new Float32Array(K).map(() => 0.7 + 0.6 * r()) : null;
  const mid = (qmin + qmax) / 2;
  const zero = new Float32Array(P).map(() => Math.round(mid + (r() - 0.5) * levels * 0.3));
  return { granularity, shape, x, scale, zero, col, qmin, qmax, channelAxis, groupSize, param, colOf };
}

export function scaleAt(c: Case, i: number): number {
  const p = c.param(i);
  return c.col ? Math.fround(c.scale[p]! * c.col[c.colOf(i)]!) : c.scale[p]!;
}

/** float64 reference of the fp32 forward: the quotient rounded to fp32 as the kernel computes it. */
export function refForward(c: Case): Float64Array {
  const out = new Float64Array(c.x.length);
  for (let i = 0; i < c.x.length; i++) {
    const s = scaleAt(c, i), z = c.zero[c.param(i)]!;
    const q = Math.min(Math.max(roundHalfEven(Math.fround(c.x[i]! / s)) + z, c.qmin), c.qmax);
    out[i] = Math.fround((q - z) * s);
  }
  return out;
}

/**
 * The STE surrogate the LSQ gradients differentiate: round(v) replaced by v + (round(v0) - v0)
 * with v0 frozen at the base point, and the clip's branch frozen too. Its exact derivatives are
 * the kernel's gradients; finite differences of it check them.
 */
export function surrogate(c: Case, weights: Float64Array, x: Float64Array, scale: Float64Array, col: Float64Array | null, zero: Float64Array): number {
  let L = 0;
  for (let i = 0; i < x.length; i++) {
    const p = c.param(i);
    const s0 = scaleAt(c, i), z0 = c.zero[p]!;
    const v0 = Math.fround(c.x[i]! / s0);
    const q0 = roundHalfEven(v0) + z0;
    const s = col ? scale[p]! * col[c.colOf(i)]! : scale[p]!, z = zero[p]!;
    let q: number;
    if (q0 < c.qmin) q = c.qmin;
    else if (q0 > c.qmax) q = c.qmax;
    else q = x[i]! / s + (roundHalfEven(v0) - v0) + z;
    L += weights[i]! * (q - z) * s;
  }
  return L;
}

/** A float tensor's elements as a Float32Array (data() is typed for every dtype). */
export function vals(t: { data(): unknown }): Float32Array { return t.data() as Float32Array; }
