// Elementwise, reduction and shape ops against float64 references computed here, on random
// inputs that are broadcast and non-contiguous; every differentiable op's backward against
// finite differences.
import { describe, it, expect } from 'vitest';
import {
  Tensor, randn, rand, tensor, gradcheck, add, sub, mul, div, pow, maximum, minimum, where, gt, neg, abs, exp, log, log1p, expm1,
  sqrt, rsqrt, tanh, sigmoid, silu, relu, square, reciprocal, sin, cos, gelu, clamp, round, affine, sum, mean, max, min, variance,
  norm, argmax, argmin, transpose, permute, reshape, expand, slice, cast, matmul, linear, ShapeError,
} from '@qdm/core';

const f64 = (t: Tensor) => Float64Array.from(t.contiguous().data() as Float32Array);
function close(got: Tensor, ref: ArrayLike<number>, tol = 1e-6): void {
  const g = f64(got);
  expect(g.length).toBe(ref.length);
  let num = 0, den = 0;
  for (let i = 0; i < ref.length; ++i) { num += (g[i]! - ref[i]!) ** 2; den += ref[i]! ** 2; }
  expect(Math.sqrt(num / Math.max(den, 1e-300))).toBeLessThan(tol);
}
/** A non-contiguous [3, 4] view (the transpose of a contiguous [4, 3]). */
const nc = (seed: number, positive = false) => {
  const base = positive ? rand([4, 3], { seed, low: 0.2, high: 2 }) : randn([4, 3], { seed });
  return transpose(base, 0, 1);
};

const erf = (x: number) => {
  // Abramowitz-Stegun 7.1.26 is too coarse; use a series/continued fraction accurate to 1e-12.
  const t = Math.abs(x);
  if (t < 2.5) { let s = 0, term = t; for (let n = 0; n < 80; ++n) { s += term / (2 * n + 1); term *= -t * t / (n + 1); } return Math.sign(x) * 2 / Math.sqrt(Math.PI) * s; }
  let f = 0; for (let n = 60; n >= 1; --n) f = n / 2 / (t + f);
  return Math.sign(x) * (1 - Math.exp(-t * t) / Math.sqrt(Math.PI) / (t + f));
};

const unary: Array<[string, (x: Tensor) => Tensor, (v: number) => number, boolean]> = [
  ['neg', neg, (v) => -v, false], ['abs', abs, Math.abs, false], ['exp', exp, Math.exp, false], ['log', log, Math.log, true],
  ['log1p', log1p, Math.log1p, true], ['expm1', expm1, Math.expm1, false], ['sqrt', sqrt, Math.sqrt, true], ['rsqrt', rsqrt, (v) => 1 / Math.sqrt(v), true],
  ['tanh', tanh, Math.tanh, false], ['sigmoid', sigmoid, (v) => 1 / (1 + Math.exp(-v)), false], ['silu', silu, (v) => v / (1 + Math.exp(-v)), false],
  ['relu', relu, (v) => Math.max(v, 0), false], ['square', square, (v) => v * v, false], ['reciprocal', reciprocal, (v) => 1 / v, true],
  ['sin', sin, Math.sin, false], ['cos', cos, Math.cos, false],
  ['gelu', (x) => gelu(x), (v) => 0.5 * v * (1 + erf(v / Math.SQRT2)), false],
  ['gelu tanh', (x) => gelu(x, 'tanh'), (v) => 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v ** 3))), false],
  ['clamp', (x) => clamp(x, -0.5, 0.7), (v) => Math.min(0.7, Math.max(-0.5, v)), false],
  ['affine', (x) => affine(x, 1.5, -0.25), (v) => 1.5 * v - 0.25, false],
];

describe('unary ops', () => {
  for (const [name, op, ref, positive] of unary) {
    it(`${name}: forward on a strided view, backward by finite differences`, () => {
      const x = nc(1, positive);
      close(op(x), Array.from(f64(x), ref), 2e-6);
      const r = gradcheck((a) => op(a), [x.contiguous().requiresGrad_()], { eps: 1e-3, atol: 2e-3 });
      expect(r.ok, r.worst).toBe(true);
    });
  }
  it('round: half to even; ste passes gradients straight through', () => {
    expect(round(tensor([0.5, 1.5, 2.5, -0.5, -1.6])).toArray()).toEqual([0, 2, 2, -0, -2]);
    const x = tensor([0.3, 1.7]).requiresGrad_();
    sum(round(x, { ste: true })).backward();
    expect(x.grad!.toArray()).toEqual([1, 1]);
  });
});

const binary: Array<[string, (a: Tensor, b: Tensor) => Tensor, (a: number, b: number) => number]> = [
  ['add', add, (a, b) => a + b], ['sub', sub, (a, b) => a - b], ['mul', mul, (a, b) => a * b], ['div', div, (a, b) => a / b],
  ['pow', pow, (a, b) => a ** b], ['maximum', maximum, Math.max], ['minimum', minimum, Math.min],
];

describe('binary ops with broadcasting', () => {
  for (const [name, op, ref] of binary) {
    it(`${name}: [3,4] (strided) with [4], [3,1] and a scalar tensor`, () => {
      const a = nc(2, true);
      const A = f64(a);
      for (const b of [rand([4], { seed: 3, low: 0.5, high: 1.5 }), rand([3, 1], { seed: 4, low: 0.5, high: 1.5 }), tensor(1.25)]) {
        const B = f64(b);
        const at = (i: number, j: number) => (b.ndim === 0 ? B[0]! : b.shape.length === 1 ? B[j]! : B[i]!);
        const expected: number[] = [];
        for (let i = 0; i < 3; ++i) for (let j = 0; j < 4; ++j) expected.push(ref(A[i * 4 + j]!, at(i, j)));
        close(op(a, b), expected, 2e-6);
        const r = gradcheck((x, y) => op(x, y), [a.contiguous().requiresGrad_(), b.detach().requiresGrad_()], { eps: 1e-3, atol: 3e-3 });
        expect(r.ok, `${name} ${b.shape}: ${r.worst}`).toBe(true);
      }
    });
  }
  it('numbers as operands, where with broadcasting, shape errors', () => {
    const a = tensor([[1, 2], [3, 4]]);
    expect(add(a, 1).toArray()).toEqual([[2, 3], [4, 5]]);
    expect(sub(10, a).toArray()).toEqual([[9, 8], [7, 6]]);
    expect(div(a, 2).toArray()).toEqual([[0.5, 1], [1.5, 2]]);
    expect(where(gt(a, 2), a, tensor([0, -1])).toArray()).toEqual([[0, -1], [3, 4]]);
    const r = gradcheck((x, y) => where(gt(x, 0), mul(x, y), y), [randn([3, 2], { seed: 9 }).requiresGrad_(), randn([2], { seed: 10 }).requiresGrad_()]);
    expect(r.ok, r.worst).toBe(true);
    expect(() => add(tensor([1, 2, 3]), tensor([1, 2]))).toThrow(ShapeError);
  });
});

describe('reductions over any dims', () => {
  const x = randn([3, 4, 5], { seed: 20 });
  const X = f64(x);
  const at = (i: number, j: number, k: number) => X[(i * 4 + j) * 5 + k]!;
  function reduceRef(dims: number[], f: (vals: number[]) => number): number[] {
    const shape = [3, 4, 5];
    const keep = [0, 1, 2].filter((d) => !dims.includes(d));
    const outShape = keep.map((d) => shape[d]!);
    const n = outShape.reduce((a, b) => a * b, 1);
    const out: number[] = [];
    for (let o = 0; o < n; ++o) {
      const idx: number[] = []; let rem = o;
      for (let q = outShape.length - 1; q >= 0; --q) { idx.unshift(rem % outShape[q]!); rem = Math.floor(rem / outShape[q]!); }
      const vals: number[] = [];
      for (let i = 0; i < 3; ++i) for (let j = 0; j < 4; ++j) for (let k = 0; k < 5; ++k) {
        const c = [i, j, k];
        if (keep.every((d, q) => c[d] === idx[q])) vals.push(at(i, j, k));
      }
      out.push(f(vals));
    }
    return out;
  }
  const s = (v: number[]) => v.reduce((a, b) => a + b, 0);
  const m = (v: number[]) => s(v) / v.length;
  const ops: Array<[string, (t: Tensor, d: number[]) => Tensor, (v: number[]) => number]> = [
    ['sum', (t, d) => sum(t, d), s], ['mean', (t, d) => mean(t, d), m],
    ['max', (t, d) => max(t, d), (v) => Math.max(...v)], ['min', (t, d) => min(t, d), (v) => Math.min(...v)],
    ['var (unbiased)', (t, d) => variance(t, d), (v) => v.reduce((a, b) => a + (b - m(v)) ** 2, 0) / (v.length - 1)],
    ['norm', (t, d) => norm(t, 2, d), (v) => Math.sqrt(v.reduce((a, b) => a + b * b, 0))],
  ];
  for (const [name, op, ref] of ops) {
    it(`${name}: dims [1], [0, 2], all; on a permuted view; backward`, () => {
      for (const dims of [[1], [0, 2], [0, 1, 2]]) close(op(x, dims), reduceRef(dims, ref), 2e-6);
      const p = permute(x.contiguous(), [2, 0, 1]);  // [5, 3, 4], non-contiguous
      close(op(p, [0]), reduceRef([2], ref), 2e-6);
      const r = gradcheck((a) => op(a, [1]), [randn([3, 4, 5], { seed: 21 }).requiresGrad_()], { eps: 1e-3, atol: 3e-3 });
      expect(r.ok, `${name}: ${r.worst}`).toBe(true);
    });
  }
  it('keepdim, argmax/argmin, empty dims', () => {
    expect(sum(x, [1], { keepdim: true }).shape).toEqual([3, 1, 5]);
    const a = tensor([[1, 5, 2], [7, 0, 7]]);
    expect(Array.from(argmax(a, 1).data() as ArrayLike<number>, Number)).toEqual([1, 0]);
    expect(Array.from(argmin(a, 1).data() as ArrayLike<number>, Number)).toEqual([0, 1]);
  });
});

describe('shape ops and products on views', () => {
  it('reshape copies only when needed; expand, slice with steps, cast round trips', () => {
    const x = randn([2, 3, 4], { seed: 30 });
    const r = reshape(x, [6, 4]);
    expect(r.storage).toBe(x.storage);
    const t = transpose(x, 0, 2);
    const rt = reshape(t, [4, 6]);
    expect(rt.storage).not.toBe(x.storage);
    close(rt, f64(t));
    expect(expand(tensor([[1], [2]]), [2, 3]).toArray()).toEqual([[1, 1, 1], [2, 2, 2]]);
    expect(slice(tensor([0, 1, 2, 3, 4, 5]), 0, 1, 6, 2).toArray()).toEqual([1, 3, 5]);
    close(cast(cast(x, 'f16'), 'f32'), f64(x), 1e-3);
    close(cast(cast(x, 'bf16'), 'f32'), f64(x), 1e-2);
    const g = gradcheck((a) => mul(reshape(permute(a, [2, 0, 1]), [4, 6]), 2), [x.requiresGrad_()]);
    expect(g.ok, g.worst).toBe(true);
  });
  it('batched matmul with broadcasting and transposed operands; linear', () => {
    const a = randn([2, 1, 3, 5], { seed: 31 }), b = transpose(randn([4, 2, 5], { seed: 32 }), -1, -2);  // [4, 5, 2]
    const out = matmul(a, b);  // [2, 4, 3, 2]
    expect(out.shape).toEqual([2, 4, 3, 2]);
    const A = f64(a), B = f64(b.contiguous());
    const ref: number[] = [];
    for (let i = 0; i < 2; ++i) for (let j = 0; j < 4; ++j) for (let r = 0; r < 3; ++r) for (let c = 0; c < 2; ++c) {
      let acc = 0; for (let k = 0; k < 5; ++k) acc += A[(i * 3 + r) * 5 + k]! * B[(j * 5 + k) * 2 + c]!; ref.push(acc);
    }
    close(out, ref);
    const r = gradcheck((x, w, bias) => linear(x, w, bias), [randn([3, 4], { seed: 33 }).requiresGrad_(), randn([2, 4], { seed: 34 }).requiresGrad_(), randn([2], { seed: 35 }).requiresGrad_()]);
    expect(r.ok, r.worst).toBe(true);
  });
});
