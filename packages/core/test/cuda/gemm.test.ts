// CUDA matmul and conv2d kernels against the CPU kernels of the same name, on fresh random
// inputs. Half-precision inputs are rounded first and the CPU reference gets the rounded
// values, so with an f32 output the only difference is the fp32 summation order (products of
// two halves are exact in fp32): those runs must agree to 1e-5. TF32 (the default for f32
// operands) rounds each operand to 10 mantissa bits: about 4e-4 relative error on random data.
// Outputs are poisoned with NaN before every run so unwritten elements show. Skips without a GPU.
import { createRequire } from 'node:module';
import { afterEach, describe, expect, it } from 'vitest';
import { Tensor, cast, expand, full, kernel, randn, transpose, matmul, conv2d, sum, mul } from '@qdm/core';
import type { DType } from '@qdm/core';
import { cudaUnavailableReason } from '../../src/backend/index.js';

const cudaReason = cudaUnavailableReason();
const cudaAvailable = cudaReason === null;
const require_ = createRequire(import.meta.url);
const cudaAddon = () => (require_('@qdm/native') as { cuda: { forceGemmKernel(n: string): boolean } }).cuda;

const TF32 = 1e-3, EXACT = 1e-5, OUT_F16 = 2e-3, OUT_BF16 = 1.5e-2;
let seed = 1;

function relErr(got: Float32Array, refData: ReturnType<Tensor['data']>): number {
  const ref = refData as Float32Array;
  let num = 0, den = 0;
  for (let i = 0; i < ref.length; ++i) {
    if (!Number.isFinite(got[i]!)) return Infinity;  // NaN never passes
    num += (got[i]! - ref[i]!) ** 2;
    den += ref[i]! ** 2;
  }
  return Math.sqrt(num / Math.max(den, 1e-30));
}
/** Random values representable in `dt`, as an f32 CPU tensor. */
function rnd(shape: number[], dt: DType): Tensor {
  const t = randn(shape, { seed: seed++ });
  return dt === 'f32' ? t : cast(cast(t, dt), 'f32');
}
const dev = (t: Tensor, dt: DType) => cast(t, dt).to('cuda');
const host = (t: Tensor) => t.to('cpu').data() as Float32Array;  // float dtypes read back as f32

interface MmCase { B: number; M: number; N: number; K: number; dt: DType; out?: DType; transA?: boolean; transB?: boolean; bcastB?: boolean; alpha?: number; beta?: number }
function runMatmul(c: MmCase): number {
  const { B, M, N, K, dt } = c;
  const out = c.out ?? 'f32', alpha = c.alpha ?? 1, beta = c.beta ?? 0;
  // CPU f32 operands with the same view structure as the device ones.
  const a0 = rnd(c.transA ? [B, K, M] : [B, M, K], dt);
  const b0 = rnd(c.bcastB ? (c.transB ? [1, N, K] : [1, K, N]) : c.transB ? [B, N, K] : [B, K, N], dt);
  const view = (t: Tensor, tr: boolean | undefined, bc: boolean | undefined) => {
    let v = tr ? transpose(t, 1, 2) : t;
    if (bc) v = expand(v, [B, v.shape[1]!, v.shape[2]!]);
    return v;
  };
  const c0 = rnd([B, M, N], out);
  const ref = beta !== 0 ? cast(c0, 'f32').clone() : full([B, M, N], 0);
  kernel('matmul', view(a0, c.transA, false), view(b0, c.transB, c.bcastB), ref, alpha, beta);
  const got = beta !== 0 ? dev(c0, out) : full([B, M, N], NaN, { device: 'cuda', dtype: out });
  kernel('matmul', view(dev(a0, dt), c.transA, false), view(dev(b0, dt), c.transB, c.bcastB), got, alpha, beta);
  return relErr(host(got), ref.data());
}
const bound = (dt: DType, out: DType = 'f32') => (out === 'f16' ? OUT_F16 : out === 'bf16' ? OUT_BF16 : dt === 'f32' ? TF32 : EXACT);

describe.skipIf(!cudaAvailable)(`CUDA matmul${cudaAvailable ? '' : ` (skipped: ${cudaReason})`}`, () => {
  afterEach(() => { cudaAddon().forceGemmKernel('auto'); });
  const dts: DType[] = ['f32', 'f16', 'bf16'];
  for (const dt of dts) {
    it(`${dt}: odd shapes (bounds, zero fill, packing of unaligned rows)`, () => {
      for (const [M, N, K] of [[1, 1, 1], [7, 33, 130], [33, 7, 257], [130, 257, 33], [257, 130, 7], [64, 64, 64], [1, 257, 130]] as const) {
        expect(runMatmul({ B: 1, M, N, K, dt }), `${M}x${N}x${K}`).toBeLessThan(bound(dt));
      }
    });
    it(`${dt}: every operand layout (A^T, B^T) on both tile sizes`, () => {
      for (const [M, N, K] of [[96, 80, 72], [2048, 2048, 96]] as const) {  // 64x64 tiles, then 128x128
        for (const transA of [false, true]) for (const transB of [false, true]) {
          expect(runMatmul({ B: 1, M, N, K, dt, transA, transB }), `${M}x${N}x${K} tA=${transA} tB=${transB}`).toBeLessThan(bound(dt));
        }
      }
    });
    it(`${dt}: batched, broadcast B, alpha/beta, half outputs`, () => {
      expect(runMatmul({ B: 3, M: 130, N: 72, K: 40, dt })).toBeLessThan(bound(dt));
      expect(runMatmul({ B: 4, M: 65, N: 129, K: 48, dt, bcastB: true, transB: true })).toBeLessThan(bound(dt));
      expect(runMatmul({ B: 2, M: 100, N: 120, K: 64, dt, alpha: 0.5, beta: 2 })).toBeLessThan(bound(dt));
      expect(runMatmul({ B: 2, M: 100, N: 120, K: 64, dt, out: 'f16' })).toBeLessThan(bound(dt, 'f16'));
      expect(runMatmul({ B: 2, M: 100, N: 120, K: 64, dt, out: 'bf16', beta: 1 })).toBeLessThan(bound(dt, 'bf16'));
    });
  }
  it('f32 exact SIMT path (forceGemmKernel("simt")); mixed dtypes in TF32', () => {
    expect(cudaAddon().forceGemmKernel('simt')).toBe(true);
    for (const [M, N, K] of [[7, 33, 130], [200, 150, 300]] as const) {
      expect(runMatmul({ B: 2, M, N, K, dt: 'f32', transA: true })).toBeLessThan(EXACT);
    }
    cudaAddon().forceGemmKernel('auto');
    // f16 x f32 operands: the f16 one is widened, both run in TF32.
    const a = rnd([1, 40, 50], 'f16'), b = rnd([1, 50, 30], 'f32');
    const ref = full([1, 40, 30], 0);
    kernel('matmul', a, b, ref, 1, 0);
    const got = full([1, 40, 30], NaN, { device: 'cuda' });
    kernel('matmul', cast(a, 'f16').to('cuda'), b.to('cuda'), got, 1, 0);
    expect(relErr(host(got), ref.data())).toBeLessThan(TF32);
  });
  it('K == 0 writes beta * out (and zeros for beta = 0)', () => {
    const got = full([1, 5, 6], NaN, { device: 'cuda' });
    kernel('matmul', full([1, 5, 0], 0, { device: 'cuda' }), full([1, 0, 6], 0, { device: 'cuda' }), got, 1, 0);
    expect(Array.from(host(got))).toEqual(new Array(30).fill(0));
  });
  it('matmul op forward and backward on CUDA match the CPU', () => {
    const a = rnd([2, 37, 45], 'f32'), b = rnd([45, 29], 'f32');
    const ac = a.to('cuda'), bc = b.to('cuda');
    ac.requiresGrad = true; bc.requiresGrad = true; a.requiresGrad = true; b.requiresGrad = true;
    const w = rnd([2, 37, 29], 'f32');
    sum(mul(matmul(a, b), w)).backward();
    sum(mul(matmul(ac, bc), w.to('cuda'))).backward();
    expect(relErr(host(ac.grad!), a.grad!.data())).toBeLessThan(TF32);
    expect(relErr(host(bc.grad!), b.grad!.data())).toBeLessThan(TF32);
  });
});

// ---- conv2d --------------------------------------------------------------------------------
interface ConvCase { N: number; C: number; H: number; W: number; O: number; k: number; s?: number; p?: number; d?: number; g?: number; bias?: boolean }
function convCase(c: ConvCase, dt: DType): { fwd: number; bwdIn: number; bwdW: number } {
  const s = c.s ?? 1, p = c.p ?? 0, d = c.d ?? 1, g = c.g ?? 1;
  const OH = Math.floor((c.H + 2 * p - d * (c.k - 1) - 1) / s) + 1, OW = Math.floor((c.W + 2 * p - d * (c.k - 1) - 1) / s) + 1;
  const params = [s, s, p, p, d, d, g];
  const x = rnd([c.N, c.C, c.H, c.W], dt), w = rnd([c.O, c.C / g, c.k, c.k], dt), gy = rnd([c.N, c.O, OH, OW], dt);
  const b = c.bias ? rnd([c.O], 'f32') : null;
  const yRef = full([c.N, c.O, OH, OW], 0);
  kernel('conv2dForward', x, w, b, yRef, ...params);
  const y = full([c.N, c.O, OH, OW], NaN, { device: 'cuda' });
  kernel('conv2dForward', dev(x, dt), dev(w, dt), b ? b.to('cuda') : null, y, ...params);
  const gxRef = full(x.shape, 0), gwRef = full(w.shape, 0);
  kernel('conv2dBackwardInput', gy, w, gxRef, ...params);
  kernel('conv2dBackwardWeight', x, gy, gwRef, ...params);
  const gx = full(x.shape, NaN, { device: 'cuda' }), gw = full(w.shape, NaN, { device: 'cuda' });
  kernel('conv2dBackwardInput', dev(gy, dt), dev(w, dt), gx, ...params);
  kernel('conv2dBackwardWeight', dev(x, dt), dev(gy, dt), gw, ...params);
  return { fwd: relErr(host(y), yRef.data()), bwdIn: relErr(host(gx), gxRef.data()), bwdW: relErr(host(gw), gwRef.data()) };
}

describe.skipIf(!cudaAvailable)(`CUDA conv2d${cudaAvailable ? '' : ` (skipped: ${cudaReason})`}`, () => {
  const cases: [string, ConvCase][] = [
    ['1x1', { N: 2, C: 16, H: 9, W: 7, O: 24, k: 1, bias: true }],
    ['3x3 pad 1', { N: 2, C: 32, H: 17, W: 15, O: 40, k: 3, p: 1, bias: true }],
    ['3x3 stride 2', { N: 3, C: 8, H: 16, W: 13, O: 16, k: 3, s: 2, p: 1 }],
    ['3x3 dilation 2', { N: 1, C: 12, H: 14, W: 14, O: 20, k: 3, p: 2, d: 2, bias: true }],
    ['groups 2', { N: 2, C: 16, H: 10, W: 11, O: 32, k: 3, p: 1, g: 2, bias: true }],
    ['depthwise', { N: 2, C: 6, H: 9, W: 9, O: 6, k: 3, p: 1, g: 6 }],
    ['odd: 3 in-channels, 5x5, 130 outputs', { N: 1, C: 3, H: 13, W: 11, O: 130, k: 5, p: 2, bias: true }],
    ['128x128 tiles (2 x 81 tiles, more than the SMs)', { N: 2, C: 32, H: 72, W: 72, O: 256, k: 3, p: 1, bias: true }],
  ];
  for (const dt of ['f32', 'f16', 'bf16'] as DType[]) {
    for (const [name, c] of cases) {
      it(`${dt}: ${name}`, () => {
        const r = convCase(c, dt), tol = bound(dt);
        expect(r.fwd, 'forward').toBeLessThan(tol);
        expect(r.bwdIn, 'backward input').toBeLessThan(tol);
        expect(r.bwdW, 'backward weight').toBeLessThan(tol);
      });
    }
  }
  it('mixed dtypes (f16 input, f32 weight and gradOut) are computed in f32', () => {
    const x = rnd([2, 8, 9, 9], 'f16'), w = rnd([12, 8, 3, 3], 'f32'), gy = rnd([2, 12, 9, 9], 'f32');
    const params = [1, 1, 1, 1, 1, 1, 1];
    const yRef = full([2, 12, 9, 9], 0), gxRef = full(x.shape, 0), gwRef = full(w.shape, 0);
    kernel('conv2dForward', x, w, null, yRef, ...params);
    kernel('conv2dBackwardInput', gy, w, gxRef, ...params);
    kernel('conv2dBackwardWeight', x, gy, gwRef, ...params);
    const y = full([2, 12, 9, 9], NaN, { device: 'cuda' }), gx = full(x.shape, NaN, { device: 'cuda', dtype: 'f16' }), gw = full(w.shape, NaN, { device: 'cuda' });
    kernel('conv2dForward', dev(x, 'f16'), w.to('cuda'), null, y, ...params);
    kernel('conv2dBackwardInput', gy.to('cuda'), w.to('cuda'), gx, ...params);
    kernel('conv2dBackwardWeight', dev(x, 'f16'), gy.to('cuda'), gw, ...params);
    expect(relErr(host(y), yRef.data())).toBeLessThan(TF32);
    expect(relErr(host(gx), gxRef.data())).toBeLessThan(OUT_F16);
    expect(relErr(host(gw), gwRef.data())).toBeLessThan(TF32);
  });
  it('conv2d op with autograd on CUDA matches the CPU', () => {
    const x = rnd([2, 8, 12, 12], 'f32'), w = rnd([16, 8, 3, 3], 'f32'), b = rnd([16], 'f32');
    const run = (dv: 'cpu' | 'cuda') => {
      const xs = x.to(dv), ws = w.to(dv), bs = b.to(dv);
      for (const t of [xs, ws, bs]) t.requiresGrad = true;
      const y = conv2d(xs, ws, bs, { stride: 1, padding: 1 });
      sum(mul(y, y)).backward();
      return [y, xs.grad!, ws.grad!, bs.grad!].map(host);
    };
    const ref = run('cpu'), got = run('cuda');
    for (let i = 0; i < ref.length; ++i) expect(relErr(got[i]!, ref[i]!), `output ${i}`).toBeLessThan(2 * TF32);
  });
});
