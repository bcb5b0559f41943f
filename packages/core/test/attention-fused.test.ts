// The fused CPU attention kernel (native/src/cpu/attention.cpp) against the composite path
// (matmul, softmax, matmul: what runs when a gradient is recorded) and against float64.
// Covers odd and unequal lengths (block tails), masks (additive, u8, causal, fully masked
// rows), strided and broadcast operands, half inputs, thread-count determinism, and that
// gradient-recording calls still take the composite path.
import { createRequire } from 'node:module';
import { afterAll, describe, expect, it } from 'vitest';
import {
  randn, rand, tensor, scaledDotProductAttention, transpose, gradcheck, setNumThreads, getNumThreads, cast, Tensor,
} from '@qdm/core';

function relErr(got: ArrayLike<number>, ref: ArrayLike<number>): number {
  let num = 0, den = 0;
  for (let i = 0; i < ref.length; ++i) { const d = Number(got[i]) - Number(ref[i]); num += d * d; den += Number(ref[i]) ** 2; }
  return Math.sqrt(num / Math.max(den, 1e-300));
}
const data = (t: Tensor) => t.data() as Float32Array;

/** The composite path: a requiresGrad copy of q forces it (the fused kernel is inference-only). */
function composite(q: Tensor, k: Tensor, v: Tensor, opts: Parameters<typeof scaledDotProductAttention>[3] = {}): Float32Array {
  return data(scaledDotProductAttention(q.detach().requiresGrad_(), k, v, opts));
}

/** float64 reference over [B, L, D] contiguous operands with an optional [Lq, Lk] additive mask. */
function ref64(q: Tensor, k: Tensor, v: Tensor, scale: number, mask?: ArrayLike<number>): Float64Array {
  const [B, L, D] = q.shape as [number, number, number]; const S = k.shape[1]!, DV = v.shape[2]!;
  const Q = data(q), K = data(k), V = data(v), out = new Float64Array(B * L * DV);
  for (let b = 0; b < B; ++b) for (let i = 0; i < L; ++i) {
    const s = new Float64Array(S);
    for (let j = 0; j < S; ++j) {
      let a = 0; for (let d = 0; d < D; ++d) a += Q[(b * L + i) * D + d]! * K[(b * S + j) * D + d]!;
      s[j] = a * scale + (mask ? mask[i * S + j]! : 0);
    }
    let m = -Infinity; for (const x of s) m = Math.max(m, x);
    let z = 0; for (let j = 0; j < S; ++j) { s[j] = Math.exp(s[j]! - m); z += s[j]!; }
    for (let d = 0; d < DV; ++d) { let a = 0; for (let j = 0; j < S; ++j) a += s[j]! * V[(b * S + j) * DV + d]!; out[(b * L + i) * DV + d] = a / z; }
  }
  return out;
}

const addon = createRequire(import.meta.url)('../../../native') as { forceGemmKernel(name: string): boolean };
const originalThreads = getNumThreads();
afterAll(() => { setNumThreads(originalThreads); addon.forceGemmKernel('auto'); });

describe('fused attention', () => {
  it('matches float64 and the composite path on odd and unequal lengths', () => {
    const cases: Array<[number, number, number, number, number]> = [
      // [B, Lq, Lk, D, Dv]: tails of the query and 256-key blocks, cross-attention (Lk = 77)
      [1, 1, 1, 1, 1], [2, 7, 7, 7, 7], [3, 65, 300, 40, 40], [2, 300, 77, 64, 40], [1, 1, 300, 65, 1], [2, 130, 513, 8, 24],
      // enough batch x query blocks for the 128- and 256-row query blocks, with partial last blocks
      [8, 200, 130, 40, 40], [16, 300, 77, 24, 16],
    ];
    let seed = 100;
    for (const [B, Lq, Lk, D, Dv] of cases) {
      const q = randn([B, Lq, D], { seed: seed++ }), k = randn([B, Lk, D], { seed: seed++ }), v = randn([B, Lk, Dv], { seed: seed++ });
      const got = data(scaledDotProductAttention(q, k, v));
      const tag = `B=${B} Lq=${Lq} Lk=${Lk} D=${D} Dv=${Dv}`;
      expect(relErr(got, ref64(q, k, v, 1 / Math.sqrt(D))), tag).toBeLessThan(2e-6);
      expect(relErr(got, composite(q, k, v)), tag).toBeLessThan(1e-5);
    }
  });

  it('runs on every GEMM micro-kernel shape (register tiles differ: scalar 4x8, avx2 6x16, avx512 12x32)', () => {
    const q = randn([16, 150, 40], { seed: 5 }), k = randn([16, 77, 40], { seed: 6 }), v = randn([16, 77, 24], { seed: 7 });
    const mask = randn([150, 77], { seed: 8 });
    const ref = ref64(q, k, v, 0.3, data(mask));
    try {
      for (const name of ['scalar', 'avx2', 'avx512']) {
        if (!addon.forceGemmKernel(name)) continue;  // not available on this CPU
        expect(relErr(data(scaledDotProductAttention(q, k, v, { mask, scale: 0.3 })), ref), name).toBeLessThan(2e-6);
      }
    } finally { addon.forceGemmKernel('auto'); }
  });

  it('the vectorised exp holds ~1e-7 relative error over its whole range', () => {
    // One query, two keys with scores 0 and x, v = [1, 0]: the output is 1 / (1 + e^x), which for
    // x > 0 is e^-x to within e^-2x, so its relative error is the exp's over [-87, 0].
    const n = 1741, xs = Float32Array.from({ length: n }, (_, i) => -87 + (174 * i) / (n - 1));
    const q = tensor(new Float32Array(n).fill(1), { shape: [n, 1, 1] });
    const k = tensor(Float32Array.from({ length: 2 * n }, (_, i) => (i % 2 ? xs[i >> 1]! : 0)), { shape: [n, 2, 1] });
    const v = tensor(Float32Array.from({ length: 2 * n }, (_, i) => (i % 2 ? 0 : 1)), { shape: [n, 2, 1] });
    const got = data(scaledDotProductAttention(q, k, v, { scale: 1 }));
    let worst = 0;
    for (let i = 0; i < n; ++i) {
      const ref = 1 / (1 + Math.exp(xs[i]!));
      worst = Math.max(worst, Math.abs(got[i]! - ref) / ref);
    }
    expect(worst).toBeLessThan(5e-7);
  });

  it('large scores (peaked softmax) stay accurate', () => {
    const q = randn([2, 70, 16], { seed: 1 }).mul(6), k = randn([2, 300, 16], { seed: 2 }).mul(6), v = randn([2, 300, 16], { seed: 3 });
    expect(relErr(data(scaledDotProductAttention(q, k, v)), ref64(q, k, v, 0.25))).toBeLessThan(2e-6);
  });

  it('additive masks broadcast over batch and heads, u8 masks and causal masking', () => {
    const q = randn([2, 3, 70, 16], { seed: 10 }), k = randn([2, 3, 300, 16], { seed: 11 }), v = randn([2, 3, 300, 8], { seed: 12 });
    for (const shape of [[70, 300], [2, 1, 70, 300], [1, 3, 1, 300], [300]]) {
      const mask = randn(shape, { seed: 13 }).mul(3);
      expect(relErr(data(scaledDotProductAttention(q, k, v, { mask, scale: 0.2 })), composite(q, k, v, { mask, scale: 0.2 })), String(shape)).toBeLessThan(1e-5);
    }
    const keep = rand([70, 300], { seed: 14 }).gt(0.3);  // u8: 0 = masked out
    expect(relErr(data(scaledDotProductAttention(q, k, v, { mask: keep })), composite(q, k, v, { mask: keep }))).toBeLessThan(1e-5);
    const kc = randn([2, 3, 70, 16], { seed: 15 }), vc = randn([2, 3, 70, 8], { seed: 16 });
    expect(relErr(data(scaledDotProductAttention(q, kc, vc, { isCausal: true })), composite(q, kc, vc, { isCausal: true }))).toBeLessThan(1e-5);
  });

  it('fully masked rows give zeros (not NaN); other rows are unaffected', () => {
    const Lq = 5, Lk = 300;
    const m = new Float32Array(Lq * Lk);
    for (let j = 0; j < Lk; ++j) { m[1 * Lk + j] = -Infinity; m[3 * Lk + j] = j < 290 ? -Infinity : 0; }  // row 1 all masked, row 3 only in the last block
    const mask = tensor(m, { shape: [Lq, Lk] });
    const q = randn([2, Lq, 8], { seed: 20 }), k = randn([2, Lk, 8], { seed: 21 }), v = randn([2, Lk, 4], { seed: 22 });
    const got = data(scaledDotProductAttention(q, k, v, { mask }));
    expect(got.every(Number.isFinite)).toBe(true);
    const ref = ref64(q, k, v, 1 / Math.sqrt(8), m);
    for (let b = 0; b < 2; ++b) for (let i = 0; i < Lq; ++i) for (let d = 0; d < 4; ++d) {
      const idx = (b * Lq + i) * 4 + d;
      if (i === 1) expect(got[idx]).toBe(0);
      else expect(Math.abs(got[idx]! - ref[idx]!)).toBeLessThan(1e-5);
    }
  });

  it('takes strided operands (transposed head layouts) and broadcast batch dims', () => {
    // diffusers layout: [B, L, H, D] viewed as [B, H, L, D] without a copy
    const x = randn([2, 90, 4, 24], { seed: 30 }), y = randn([2, 77, 4, 24], { seed: 31 }), z = randn([2, 77, 4, 24], { seed: 32 });
    const q = transpose(x, 1, 2), k = transpose(y, 1, 2), v = transpose(z, 1, 2);
    const qc = q.contiguous(), kc = k.contiguous(), vc = v.contiguous();
    expect(relErr(data(scaledDotProductAttention(q, k, v)), composite(qc, kc, vc))).toBeLessThan(1e-5);
    // k given as a column-major view; k and v shared across the batch (broadcast)
    const kt = transpose(randn([24, 77], { seed: 33 }), 0, 1), vb = randn([77, 24], { seed: 34 });
    const qb = randn([3, 90, 24], { seed: 35 });
    expect(relErr(data(scaledDotProductAttention(qb, kt, vb)), composite(qb, kt.contiguous(), vb))).toBeLessThan(1e-5);
  });

  it('f16 and bf16 inputs: computed in f32, narrowed like the composite', () => {
    const q = randn([2, 70, 40], { seed: 40 }), k = randn([2, 77, 40], { seed: 41 }), v = randn([2, 77, 40], { seed: 42 });
    for (const dt of ['f16', 'bf16'] as const) {
      const out = scaledDotProductAttention(cast(q, dt), cast(k, dt), cast(v, dt));
      expect(out.dtype).toBe(dt);
      // against f32 attention of the rounded inputs: only the final rounding differs
      const ref = ref64(cast(cast(q, dt), 'f32'), cast(cast(k, dt), 'f32'), cast(cast(v, dt), 'f32'), 1 / Math.sqrt(40));
      expect(relErr(data(out), ref), dt).toBeLessThan(dt === 'f16' ? 1e-3 : 8e-3);
    }
  });

  it('is bit-identical for 1 and 2 threads', () => {
    // 16 x 2 query blocks of 256 rows: more tasks than threads either way
    const q = randn([16, 300, 40], { seed: 50 }), k = randn([16, 600, 40], { seed: 51 }), v = randn([16, 600, 40], { seed: 52 });
    const mask = randn([300, 600], { seed: 53 });
    setNumThreads(1);
    const a = data(scaledDotProductAttention(q, k, v, { mask }));
    setNumThreads(2);
    const b = data(scaledDotProductAttention(q, k, v, { mask }));
    setNumThreads(originalThreads);
    expect(Buffer.from(a.buffer).equals(Buffer.from(b.buffer))).toBe(true);
  });

  it('with requiresGrad inputs the composite path runs and gradients pass gradcheck', () => {
    const q = randn([2, 3, 4], { seed: 60 }).requiresGrad_(), k = randn([2, 5, 4], { seed: 61 }).requiresGrad_(), v = randn([2, 5, 3], { seed: 62 }).requiresGrad_();
    const out = scaledDotProductAttention(q, k, v, { mask: randn([3, 5], { seed: 63 }) });
    expect(out.requiresGrad).toBe(true);
    expect(out.gradFn).toBeTruthy();
    const r = gradcheck((a, b, c) => scaledDotProductAttention(a, b, c, { isCausal: false, scale: 0.7 }), [q, k, v], { atol: 2e-3 });
    expect(r.ok, r.worst).toBe(true);
  });

  it('shape errors still come from the op', () => {
    expect(() => scaledDotProductAttention(randn([2, 3, 4]), randn([2, 5, 3]), randn([2, 5, 3]))).toThrow(/do not agree/);
  });
});
