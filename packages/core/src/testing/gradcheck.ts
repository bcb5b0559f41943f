// Gradient checking against central finite differences. The scalar objective is
// L = sum(f(x) * R) for a fixed random R, so every output element contributes; differences
// are accumulated in float64 on the JS side. Used by every package's backward tests.
import { noGrad } from '../autograd.js';
import { Tensor } from '../tensor.js';
import { randn, tensor } from '../ops/creation.js';
import { dataOf } from '../tensor-data.js';

export interface GradcheckOptions {
  eps?: number;
  /** Pass when |analytic - numeric| <= atol + rtol * max|numeric| for every element. */
  atol?: number;
  rtol?: number;
  seed?: number;
  /** Check at most this many elements per input (chosen evenly). */
  maxElements?: number;
}

export interface GradcheckResult { ok: boolean; maxError: number; worst: string }

function objective(out: Tensor, r: Float64Array): number {
  const d = dataOf(out);
  let s = 0;
  for (let i = 0; i < d.length; ++i) s += Number(d[i]) * r[i]!;
  return s;
}

export function gradcheck(fn: (...xs: Tensor[]) => Tensor, inputs: Tensor[], opts: GradcheckOptions = {}): GradcheckResult {
  const eps = opts.eps ?? 1e-2;
  const atol = opts.atol ?? 1e-3;
  const rtol = opts.rtol ?? 1e-2;
  const maxEl = opts.maxElements ?? 64;
  // Analytic gradients.
  const xs = inputs.map((x) => { const c = tensor(dataOf(x) as Float32Array, { shape: x.shape }); c.requiresGrad = x.requiresGrad; return c; });
  const out = fn(...xs);
  const rT = randn(out.shape, { seed: opts.seed ?? 1234 });
  const r = Float64Array.from(dataOf(rT) as Float32Array);
  const loss = out.mul(rT).sum();
  loss.backward();
  let maxError = 0;
  let worst = '';
  let ok = true;
  xs.forEach((x, xi) => {
    if (!x.requiresGrad) return;
    const analytic = x.grad ? (dataOf(x.grad) as Float32Array) : new Float32Array(x.numel);
    const base = Float32Array.from(dataOf(x) as Float32Array);
    const step = Math.max(1, Math.floor(base.length / maxEl));
    const numeric: number[] = [];
    const idxs: number[] = [];
    for (let i = 0; i < base.length; i += step) idxs.push(i);
    noGrad(() => {
      for (const i of idxs) {
        const plus = Float32Array.from(base); plus[i] = base[i]! + eps;
        const minus = Float32Array.from(base); minus[i] = base[i]! - eps;
        const args = (v: Float32Array) => xs.map((y, yi) => (yi === xi ? tensor(v, { shape: x.shape }) : y.detach()));
        const lp = objective(fn(...args(plus)), r);
        const lm = objective(fn(...args(minus)), r);
        numeric.push((lp - lm) / (2 * eps));
      }
    });
    const scale = Math.max(...numeric.map(Math.abs), 1e-12);
    idxs.forEach((i, k) => {
      const err = Math.abs(analytic[i]! - numeric[k]!);
      const tol = atol + rtol * scale;
      if (err / tol > maxError) { maxError = err / tol; worst = `input ${xi} element ${i}: analytic ${analytic[i]} vs numeric ${numeric[k]}`; }
      if (err > tol) ok = false;
    });
  });
  return { ok, maxError, worst };
}
