// The CPU GEMM driver, checked two ways: through @qdm/core's matmul (shapes, transposed and
// broadcast operands as the library passes them) and through the addon's matmul directly
// (alpha/beta and arbitrary strides that matmul never produces). Reference: float64 in JS.
// Error measure: |c - ref| / sum_k |a_ik * b_kj|, the forward-error bound of a dot product,
// so cancellation in ref does not make a correct result look wrong.
import { createRequire } from 'node:module';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { matmul, transpose, randn, setNumThreads, getNumThreads, Tensor } from '@qdm/core';

const require_ = createRequire(import.meta.url);
type View = [Float32Array, number, number[], number[], number];
interface GemmAddon {
  matmul(a: View, b: View, out: View, alpha?: number, beta?: number): void;
  gemmKernelInfo(): { name: string; mr: number; nr: number; mc: number; kc: number; nc: number; available: string[] };
  forceGemmKernel(name: string): boolean;
}
const addon = require_('@qdm/native') as GemmAddon;
const TOL = 1e-5;

/** Deterministic values in [-1, 1) (a small LCG: independent of the library under test). */
function fill(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let s = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < n; ++i) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s / 2 ** 31 - 1;
  }
  return out;
}

interface Strided { data: Float32Array; off: number; rs: number; cs: number }
const at = (m: Strided, i: number, j: number) => m.data[m.off + i * m.rs + j * m.cs]!;

/** Worst normalized error of C (M x N, strided) against alpha*A@B + beta*C0 in float64. */
function gemmError(M: number, N: number, K: number, alpha: number, A: Strided, B: Strided, beta: number,
  C0: Float32Array | null, C: Strided): number {
  let worst = 0;
  for (let i = 0; i < M; ++i)
    for (let j = 0; j < N; ++j) {
      let s = 0, bound = 0;
      for (let k = 0; k < K; ++k) { const p = at(A, i, k) * at(B, k, j); s += p; bound += Math.abs(p); }
      const c0 = C0 ? C0[C.off + i * C.rs + j * C.cs]! : 0;
      const ref = alpha * s + (beta === 0 ? 0 : beta * c0);
      const scale = Math.abs(alpha) * bound + Math.abs(beta * c0) + 1e-30;
      const got = at(C, i, j);
      if (!Number.isFinite(got)) return Infinity;
      worst = Math.max(worst, Math.abs(got - ref) / scale);
    }
  return worst;
}

/** C = A @ B via @qdm/core, error against float64. a, b may be any (non-contiguous) 2-d views. */
function coreError(a: Tensor, b: Tensor): number {
  const c = matmul(a, b);
  const [M, K] = a.shape as [number, number], N = b.shape[1]!;
  const A = { data: a.contiguous().data(), off: 0, rs: K, cs: 1 };
  const B = { data: b.contiguous().data(), off: 0, rs: N, cs: 1 };
  return gemmError(M, N, K, 1, A, B, 0, null, { data: c.data(), off: 0, rs: N, cs: 1 });
}

const SIZES = [1, 7, 13, 65, 257];
const originalThreads = getNumThreads();
afterEach(() => { addon.forceGemmKernel('auto'); setNumThreads(originalThreads); });
afterAll(() => { addon.forceGemmKernel('auto'); setNumThreads(originalThreads); });

describe('sgemm through matmul', () => {
  it('matches float64 on odd sizes, including every M/N/K edge tile', () => {
    let seed = 1;
    for (const M of SIZES) for (const N of [1, 13, 65, 257]) for (const K of [1, 7, 65, 257]) {
      if (M * N * K > 257 * 65 * 257) continue;  // keep the float64 reference cheap
      const a = randn([M, K], { seed: seed++ }), b = randn([K, N], { seed: seed++ });
      expect(coreError(a, b), `${M}x${K} @ ${K}x${N}`).toBeLessThan(TOL);
    }
  });

  it('sizes that cross the cache blocks (M > mc, K > kc) and a 300x300x300 product', () => {
    const { mc, kc } = addon.gemmKernelInfo();
    for (const [M, N, K] of [[mc + 5, 33, kc + 3], [2 * mc + 1, 17, 2 * kc + 7], [300, 300, 300]] as const) {
      const a = randn([M, K], { seed: M }), b = randn([K, N], { seed: K });
      expect(coreError(a, b), `${M}x${K} @ ${K}x${N}`).toBeLessThan(TOL);
    }
  });

  it('takes transposed (non-contiguous) operands', () => {
    for (const [M, N, K] of [[13, 65, 257], [65, 7, 13], [100, 90, 80]] as const) {
      const at_ = randn([K, M], { seed: 10 + M }), bt = randn([N, K], { seed: 20 + N });
      const a = transpose(at_, 0, 1), b = transpose(bt, 0, 1);
      expect(a.isContiguous()).toBe(false);
      expect(coreError(a, b), `A^T ${M}x${K}`).toBeLessThan(TOL);
      expect(coreError(randn([M, K], { seed: 3 }), b), `B^T ${K}x${N}`).toBeLessThan(TOL);
      expect(coreError(a, randn([K, N], { seed: 4 })), `A^T only`).toBeLessThan(TOL);
    }
  });

  it('broadcasts a batch (batch stride 0) and matches per-item products', () => {
    for (const [Bn, M, N, K] of [[6, 13, 7, 65], [3, 70, 40, 50]] as const) {
      const a = randn([Bn, M, K], { seed: 7 }), b = randn([K, N], { seed: 8 });  // b broadcast over the batch
      const c = matmul(a, b), bT = randn([1, N, K], { seed: 9 });
      const c2 = matmul(a, transpose(bT, 1, 2));  // broadcast and transposed
      const Bd = b.data(), Btd = bT.data();
      for (let i = 0; i < Bn; ++i) {
        const A = { data: a.data(), off: i * M * K, rs: K, cs: 1 };
        expect(gemmError(M, N, K, 1, A, { data: Bd, off: 0, rs: N, cs: 1 }, 0, null,
          { data: c.data(), off: i * M * N, rs: N, cs: 1 }), `item ${i}`).toBeLessThan(TOL);
        expect(gemmError(M, N, K, 1, A, { data: Btd, off: 0, rs: 1, cs: K }, 0, null,
          { data: c2.data(), off: i * M * N, rs: N, cs: 1 }), `item ${i} (B^T)`).toBeLessThan(TOL);
      }
    }
  });
});

describe('sgemm through the addon', () => {
  /** Runs addon.matmul on [1, M, K] x [1, K, N] -> [1, M, N] views with the given layouts. */
  function direct(M: number, N: number, K: number, alpha: number, beta: number,
    layout: { aT?: boolean; bT?: boolean; cT?: boolean; cPad?: number; gap?: boolean }) {
    // gap: every other element in both directions (neither stride is 1), as a stepped slice gives.
    const g = layout.gap ? 2 : 1;
    const Ad = fill(g * g * M * K + 3, M + 1), Bd = fill(g * g * K * N + 5, N + 2);
    const A: Strided = layout.aT ? { data: Ad, off: 3, rs: g, cs: g * g * M } : { data: Ad, off: 3, rs: g * g * K, cs: g };
    const B: Strided = layout.bT ? { data: Bd, off: 5, rs: g, cs: g * g * K } : { data: Bd, off: 5, rs: g * g * N, cs: g };
    const pad = layout.cPad ?? 0;
    const C: Strided = layout.cT ? { data: new Float32Array(0), off: 0, rs: 1, cs: M + pad } : { data: new Float32Array(0), off: 0, rs: N + pad, cs: 1 };
    const span = layout.cT ? (M + pad) * N : M * (N + pad);
    C.data = fill(span, 99);
    const C0 = C.data.slice();
    addon.matmul([Ad, A.off, [1, M, K], [0, A.rs, A.cs], 0], [Bd, B.off, [1, K, N], [0, B.rs, B.cs], 0],
      [C.data, 0, [1, M, N], [0, C.rs, C.cs], 0], alpha, beta);
    return { err: gemmError(M, N, K, alpha, A, B, beta, C0, C), C, C0 };
  }

  it('applies alpha and beta (beta only once, across several kc blocks)', () => {
    const { kc } = addon.gemmKernelInfo();
    for (const [M, N, K] of [[7, 13, 5], [65, 33, 2 * kc + 9], [20, 70, kc + 1]] as const)
      for (const [alpha, beta] of [[1, 1], [0.5, -2], [-1.5, 0.25], [2, 0]]) {
        const r = direct(M, N, K, alpha, beta, {});
        expect(r.err, `${M}x${N}x${K} alpha=${alpha} beta=${beta}`).toBeLessThan(TOL);
      }
  });

  it('beta = 0 treats C as write-only (NaN in C does not leak)', () => {
    const M = 40, N = 30, K = 50;
    const A = fill(M * K, 1), B = fill(K * N, 2), C = new Float32Array(M * N).fill(NaN);
    addon.matmul([A, 0, [1, M, K], [0, K, 1], 0], [B, 0, [1, K, N], [0, N, 1], 0], [C, 0, [1, M, N], [0, N, 1], 0], 1, 0);
    expect(C.every(Number.isFinite)).toBe(true);
  });

  it('K = 0 gives beta * C', () => {
    const C = new Float32Array([1, 2, 3, 4]);
    addon.matmul([new Float32Array(0), 0, [1, 2, 0], [0, 0, 1], 0], [new Float32Array(0), 0, [1, 0, 2], [0, 2, 1], 0],
      [C, 0, [1, 2, 2], [0, 2, 1], 0], 1, 3);
    expect(Array.from(C)).toEqual([3, 6, 9, 12]);
  });

  it('any strides: transposed A/B, column-major and padded C', () => {
    for (const [M, N, K] of [[13, 17, 65], [70, 40, 300], [1, 257, 33], [257, 1, 7]] as const)
      for (const layout of [{ aT: true }, { bT: true }, { cT: true }, { aT: true, bT: true, cT: true, cPad: 3 }, { cPad: 5 }, { gap: true },
        { gap: true, aT: true, bT: true }]) {
        const r = direct(M, N, K, 1.25, 0.5, layout);
        expect(r.err, `${M}x${N}x${K} ${JSON.stringify(layout)}`).toBeLessThan(TOL);
      }
  });

  it('rejects mismatched shapes and non-f32 views with typed errors', () => {
    const f = new Float32Array(16);
    expect(() => addon.matmul([f, 0, [1, 2, 3], [0, 3, 1], 0], [f, 0, [1, 2, 2], [0, 2, 1], 0], [f, 0, [1, 2, 2], [0, 2, 1], 0]))
      .toThrow(/shapes do not agree/);
    expect(() => addon.forceGemmKernel('sse9')).toThrow(/unknown kernel/);
  });
});

describe('determinism and kernels', () => {
  function run(M: number, N: number, K: number, batch = 1): Float32Array {
    const a = randn([batch, M, K], { seed: 41 }), b = randn([batch, K, N], { seed: 42 });
    return matmul(transpose(transpose(a, 1, 2).contiguous(), 1, 2), b).data();
  }
  const shapes: [number, number, number, number][] = [[1, 5, 2000, 300], [1, 300, 200, 280], [1, 513, 129, 257], [1, 64, 1000, 700], [16, 40, 50, 60]];

  it('1 thread and 2 threads give bit-identical results', () => {
    for (const [Bn, M, N, K] of shapes) {
      setNumThreads(1);
      const one = run(M, N, K, Bn);
      setNumThreads(2);
      const two = run(M, N, K, Bn);
      setNumThreads(3);  // more threads than cores: a different tile-to-thread assignment
      const three = run(M, N, K, Bn);
      expect(Buffer.from(two.buffer).equals(Buffer.from(one.buffer)), `${Bn}x${M}x${N}x${K} 2 threads`).toBe(true);
      expect(Buffer.from(three.buffer).equals(Buffer.from(one.buffer)), `${Bn}x${M}x${N}x${K} 3 threads`).toBe(true);
    }
  });

  it('every micro-kernel available here agrees with float64 (and with the others)', () => {
    const info = addon.gemmKernelInfo();
    expect(info.available).toContain('scalar');
    expect(info.available).toContain(info.name);
    const results: Record<string, number> = {};
    for (const name of info.available) {
      expect(addon.forceGemmKernel(name)).toBe(true);
      expect(addon.gemmKernelInfo().name).toBe(name);
      for (const [M, N, K] of [[257, 65, 300], [13, 7, 65], [100, 300, 40]] as const) {
        const a = transpose(randn([K, M], { seed: 5 }), 0, 1), b = randn([K, N], { seed: 6 });
        results[`${name} ${M}`] = coreError(a, b);
        expect(results[`${name} ${M}`], `${name} ${M}x${N}x${K}`).toBeLessThan(TOL);
      }
    }
    expect(addon.forceGemmKernel('auto')).toBe(true);
    expect(addon.gemmKernelInfo().name).toBe(info.name);
    for (const unusable of ['avx512', 'avx2'].filter((n) => !info.available.includes(n)))
      expect(addon.forceGemmKernel(unusable), unusable).toBe(false);
  });

  it('measures a positive peak', () => {
    const peak = (require_('@qdm/native') as { peakGflops(t: number, s: number): number }).peakGflops(1, 0.05);
    expect(peak).toBeGreaterThan(0);
  });
});
