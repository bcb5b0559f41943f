// Low-bit CPU GEMM: the integer part against exact float64 references (odd sizes, zero points,
// the vpmaddubsw saturation worst case), scalar vs AVX2 bit-for-bit, and quantLinear /
// quantConv2d against the fake-quant float graph on the same codes.
import { afterAll, describe, expect, it } from 'vitest';
import { conv2d, empty, enableGrad, getNumThreads, kernel, linear, noGrad, setNumThreads, tensor, type Tensor } from '@qdm/core';
import { fakeQuant, forceQgemmKernel, packConvWeightsIm2row, packWeights, qgemmKernelInfo, quantConv2d, quantLinear, quantizeActivations, quantizeCodes, type ActQuant } from '@qdm/quant';
import { gauss, rng, roundHalfEven } from './helpers.js';

afterAll(() => { forceQgemmKernel('auto'); });

const kernels = qgemmKernelInfo().available.filter((k) => k !== 'avx512-vnni' || qgemmKernelInfo().available.includes(k));

function ints(n: number, lo: number, hi: number, r: () => number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; ++i) out[i] = lo + Math.floor(r() * (hi - lo + 1));
  return out;
}
/** Integer-valued floats -> i8 or i4 code tensor (scale 1, zero 0: the codes are the values). */
function codesOf(v: Float32Array, shape: number[], bits: 8 | 4): Tensor {
  const one = tensor([1]), zero = tensor([0]);
  return quantizeCodes(tensor(v, { shape }), { scale: one, zeroPoint: zero, qmin: bits === 8 ? -128 : -8, qmax: bits === 8 ? 127 : 7, granularity: 'tensor' }, bits === 8 ? 'i8' : 'i4');
}
function withKernel<T>(name: string, fn: () => T): T {
  if (!forceQgemmKernel(name as 'scalar')) throw new Error(`kernel ${name} unavailable`);
  try { return fn(); } finally { forceQgemmKernel('auto'); }
}
function maxRelErr(y: Float32Array, ref: Float64Array): number {
  let scale = 1e-30, err = 0;
  for (let i = 0; i < ref.length; ++i) scale = Math.max(scale, Math.abs(ref[i]!));
  for (let i = 0; i < ref.length; ++i) err = Math.max(err, Math.abs(y[i]! - ref[i]!));
  return err / scale;
}

interface IntCase { T: number; N: number; K: number; bits: 8 | 4; act4: boolean; zeros: boolean }
const SIZES: Array<[number, number, number]> = [[1, 1, 1], [3, 17, 5], [17, 63, 100], [100, 3, 63], [5, 33, 7], [63, 100, 17], [9, 16, 64]];

function runIntCase(c: IntCase, seed: number) {
  const r = rng(seed);
  const aLo = c.act4 ? -8 : -128, aHi = c.act4 ? 7 : 127, wLo = c.bits === 8 ? -127 : -8, wHi = c.bits === 8 ? 127 : 7;
  // With zero points the activations are asymmetric u8 codes (A8) or [0, 15] (A4, stored signed after the shift).
  const za = c.zeros ? (c.act4 ? 3 : 131) : 0;
  const act: ActQuant = c.zeros && !c.act4 ? { scale: 1, zeroPoint: za, qmin: 0, qmax: 255 } : { scale: 1, zeroPoint: za, qmin: aLo, qmax: aHi };
  const xa = c.zeros && !c.act4 ? ints(c.T * c.K, 0, 255, r) : ints(c.T * c.K, aLo, aHi, r);
  const x = new Float32Array(xa.length);
  for (let i = 0; i < x.length; ++i) x[i] = xa[i]! - za;  // x / 1 + za = the code
  const wq = ints(c.N * c.K, wLo, wHi, r);
  const zw = c.zeros ? ints(c.N, -3, 3, r) : null;
  const w = packWeights(codesOf(wq, [c.N, c.K], c.bits), tensor(new Float32Array(c.N).fill(1)), zw ? tensor(zw) : undefined);
  const ref = new Float64Array(c.T * c.N);
  for (let t = 0; t < c.T; ++t)
    for (let o = 0; o < c.N; ++o) {
      let s = 0;
      for (let k = 0; k < c.K; ++k) s += (xa[t * c.K + k]! - za) * (wq[o * c.K + k]! - (zw ? zw[o]! : 0));
      ref[t * c.N + o] = s;
    }
  return { x: tensor(x, { shape: [c.T, c.K] }), w, act, ref };
}

describe('qgemm integer part', () => {
  it('reports its kernels', () => {
    const info = qgemmKernelInfo();
    expect(info.available).toContain('scalar');
    expect(info.available).toContain(info.name);
    expect(info.nr).toBe(16);
  });

  for (const [bits, act4, name] of [[8, false, 'W8A8'], [4, false, 'W4A8'], [4, true, 'W4A4']] as const) {
    for (const zeros of [false, true]) {
      it(`${name}${zeros ? ' with zero points' : ''}: exact integers at odd sizes on every kernel, scalar == avx2 bit for bit`, () => {
        let seed = 1;
        for (const [T, N, K] of SIZES) {
          const c = runIntCase({ T, N, K, bits, act4, zeros }, seed++);
          const outs = kernels.map((k) => withKernel(k, () => quantLinear(c.x, c.w, c.act).data()));
          for (const y of outs) expect(Array.from(y)).toEqual(Array.from(c.ref));
          for (const y of outs.slice(1)) expect(Buffer.from(y.buffer).equals(Buffer.from(outs[0]!.buffer))).toBe(true);
        }
      });
    }
  }

  it('results do not depend on the thread count', () => {
    const c = runIntCase({ T: 130, N: 70, K: 200, bits: 8, act4: false, zeros: true }, 77);
    const r = rng(3);
    const x = tensor(Float32Array.from({ length: 130 * 200 }, () => gauss(r)), { shape: [130, 200] });
    const before = getNumThreads();
    try {
      const outs = [1, 2].map((n) => { setNumThreads(n); return [quantLinear(c.x, c.w, c.act).data(), quantLinear(x, c.w, 'dynamic').data()]; });
      expect(Buffer.from(outs[0]![0]!.buffer).equals(Buffer.from(outs[1]![0]!.buffer))).toBe(true);
      expect(Buffer.from(outs[0]![1]!.buffer).equals(Buffer.from(outs[1]![1]!.buffer))).toBe(true);
    } finally { setNumThreads(before); }
  });

  it('saturation worst case: a = -128 against w = +-127 (and -128 clamped to -127), large K, is exact', () => {
    for (const K of [1000, 4099]) {
      const T = 5, N = 18;
      const x = tensor(new Float32Array(T * K).fill(-128), { shape: [T, K] });
      const wq = new Float32Array(N * K);
      for (let o = 0; o < N; ++o) wq.fill(o % 3 === 0 ? 127 : o % 3 === 1 ? -127 : -128, o * K, (o + 1) * K);
      const w = packWeights(codesOf(wq, [N, K], 8), tensor(new Float32Array(N).fill(1)));
      expect(Array.from(w.rowSums.data())).toEqual(Array.from({ length: N }, (_, o) => (o % 3 === 0 ? 127 : -127) * K));
      const act: ActQuant = { scale: 1, zeroPoint: 0, qmin: -128, qmax: 127 };
      for (const k of kernels) {
        const y = withKernel(k, () => quantLinear(x, w, act).data());
        for (let t = 0; t < T; ++t)
          for (let o = 0; o < N; ++o) expect(y[t * N + o]).toBe(Math.fround(-128 * (o % 3 === 0 ? 127 : -127) * K));
      }
    }
  });
});

describe('qgemm scales, bias, colFactor, low rank', () => {
  for (const bits of [8, 4] as const) {
    it(`W${bits}: dynamic per-token scales with colFactor, bias and a low-rank branch match the float64 dequantized math`, () => {
      const r = rng(7 + bits);
      const T = 37, K = 70, N = 45, R = 4;
      const xv = Float32Array.from({ length: T * K }, () => gauss(r) * 2);
      const col = Float32Array.from({ length: K }, () => 0.5 + r());
      const x = tensor(xv, { shape: [T, K] });
      const qmax = bits === 8 ? 127 : 7;
      const wq = ints(N * K, -qmax, qmax, r);
      const sw = Float32Array.from({ length: N }, () => 0.01 + 0.02 * r());
      const bias = Float32Array.from({ length: N }, () => gauss(r));
      const xaV = Float32Array.from({ length: T * R }, () => gauss(r)), bV = Float32Array.from({ length: R * N }, () => gauss(r) * 0.1);
      const w = packWeights(codesOf(wq, [N, K], bits), tensor(sw));
      const q = quantizeActivations(x, 'dynamic', tensor(col));
      // The codes are fakeQuant's separable codes for the row scales r_t and the column factor.
      const ref = quantizeCodes(x, { scale: q.scale, zeroPoint: tensor(new Float32Array(T)), colScale: tensor(col), qmin: -127, qmax: 127, granularity: 'separable' }, 'i8');
      expect(Array.from(q.codes.data())).toEqual(Array.from(ref.data()));
      const rs = q.scale.data(), codes = q.codes.data();
      for (let t = 0; t < T; ++t) {
        let m = 0;
        for (let k = 0; k < K; ++k) m = Math.max(m, Math.abs(Math.fround(xv[t * K + k]! / col[k]!)));
        expect(rs[t]).toBe(Math.fround(m / 127));
      }
      const y = quantLinear(x, w, 'dynamic', { colFactor: tensor(col), bias: tensor(bias), lowRank: { xa: tensor(xaV, { shape: [T, R] }), b: tensor(bV, { shape: [R, N] }) } }).data();
      const exp = new Float64Array(T * N);
      for (let t = 0; t < T; ++t)
        for (let o = 0; o < N; ++o) {
          let s = 0, l = 0;
          for (let k = 0; k < K; ++k) s += codes[t * K + k]! * wq[o * K + k]!;
          for (let j = 0; j < R; ++j) l += xaV[t * R + j]! * bV[j * N + o]!;
          exp[t * N + o] = s * rs[t]! * sw[o]! + bias[o]! + l;
        }
      expect(maxRelErr(y, exp)).toBeLessThan(1e-6);
    });
  }

  it('static u8 activations with a zero point and colFactor', () => {
    const r = rng(99);
    const T = 11, K = 29, N = 19;
    const xv = Float32Array.from({ length: T * K }, () => gauss(r));
    const col = Float32Array.from({ length: K }, () => 0.5 + r());
    const act: ActQuant = { scale: 0.02, zeroPoint: 120, qmin: 0, qmax: 255 };
    const q = quantizeActivations(tensor(xv, { shape: [T, K] }), act, tensor(col));
    const codes = q.codes.data();
    for (let i = 0; i < T * K; ++i) {
      const s = Math.fround(0.02 * col[i % K]!);
      const c = Math.min(Math.max(roundHalfEven(Math.fround(xv[i]! / s)) + 120, 0), 255);
      expect(codes[i]).toBe(c - 128);
    }
    expect(q.zeroPoint.data()[0]).toBe(-8);
  });

  it('dynamic A4 (qmax 7) codes stay in [-7, 7]', () => {
    const r = rng(5);
    const x = tensor(Float32Array.from({ length: 6 * 40 }, () => gauss(r)), { shape: [6, 40] });
    const c = quantizeActivations(x, { dynamic: true, qmax: 7 }).codes.data();
    expect(Math.max(...c)).toBeLessThanOrEqual(7);
    expect(Math.min(...c)).toBeGreaterThanOrEqual(-7);
  });
});

describe('quantLinear in one pass (CPU)', () => {
  // quantLinear quantizes each row as the GEMM packs it; the two-step route writes the code matrix
  // first (quantizeActivations, then the codes GEMM). Same codes, same scales, same output bits.
  function twoStep(x: Tensor, w: ReturnType<typeof packWeights>, act: Parameters<typeof quantLinear>[2], opts: { bias?: Tensor; colFactor?: Tensor; xa?: Tensor; b?: Tensor; wZero?: Tensor }) {
    const [T, K] = x.shape as [number, number];
    const q = quantizeActivations(x, act, opts.colFactor);
    const out = empty([T, w.n], 'f32');
    kernel('qgemmLinear', q.codes.reshape([T, K]), q.scale, q.zeroPoint, w.packed, w.rowSums, w.scale, opts.wZero ?? w.zeroPoint ?? null, opts.bias ?? null, out, w.bits, opts.xa ?? null, opts.b ?? null);
    return out.data();
  }
  const same = (a: Float32Array, b: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));

  for (const k of kernels) {
    it(`${k}: dynamic, static u8 with a zero point, colFactor, bias, low rank, W8 and W4, odd sizes`, () => {
      const r = rng(321);
      for (const [T, K, N] of [[37, 70, 45], [64, 320, 48], [5, 3, 17], [130, 129, 33]] as Array<[number, number, number]>) {
        const x = tensor(Float32Array.from({ length: T * K }, () => gauss(r) * 3), { shape: [T, K] });
        const col = tensor(Float32Array.from({ length: K }, () => 0.5 + r()));
        const bias = tensor(Float32Array.from({ length: N }, () => gauss(r)));
        const xa = tensor(Float32Array.from({ length: T * 3 }, () => gauss(r)), { shape: [T, 3] }), b = tensor(Float32Array.from({ length: 3 * N }, () => gauss(r) * 0.1), { shape: [3, N] });
        for (const bits of [8, 4] as const) {
          const qmax = bits === 8 ? 127 : 7;
          const w = packWeights(codesOf(ints(N * K, -qmax, qmax, r), [N, K], bits), tensor(Float32Array.from({ length: N }, () => 0.01 + 0.02 * r())));
          const cases: Array<[Parameters<typeof quantLinear>[2], { bias?: Tensor; colFactor?: Tensor; xa?: Tensor; b?: Tensor }]> = [
            ['dynamic', {}], ['dynamic', { bias, colFactor: col }], [{ scale: 0.05, zeroPoint: 120, qmin: 0, qmax: 255 }, { bias, colFactor: col }],
            [{ scale: 0.05, zeroPoint: 0, qmin: -128, qmax: 127 }, { bias, xa, b }],
          ];
          for (const [act, o] of cases) {
            const y = withKernel(k, () => quantLinear(x, w, act, { bias: o.bias, colFactor: o.colFactor, lowRank: o.b ? { xa: o.xa, b: o.b } : undefined }).data());
            expect(same(y, withKernel(k, () => twoStep(x, w, act, o)))).toBe(true);
          }
        }
      }
    });
  }

  it('the fused W8 epilogue (full tiles, no zero points) rounds exactly as the separate one', () => {
    // An all-zero weight zero-point vector turns the fused tiles off without changing the math.
    const r = rng(11);
    const T = 64, K = 96, N = 64;
    const x = tensor(Float32Array.from({ length: T * K }, () => gauss(r)), { shape: [T, K] });
    const w = packWeights(codesOf(ints(N * K, -127, 127, r), [N, K], 8), tensor(Float32Array.from({ length: N }, () => 0.003 + 0.01 * r())));
    const bias = tensor(Float32Array.from({ length: N }, () => gauss(r)));
    const fused = twoStep(x, w, 'dynamic', { bias });
    expect(same(fused, twoStep(x, w, 'dynamic', { bias, wZero: tensor(new Float32Array(N)) }))).toBe(true);
  });

  it('every kernel rounds the float epilogue alike: bit-identical outputs for real scales and bias', () => {
    const r = rng(23);
    const T = 67, K = 200, N = 50;
    const x = tensor(Float32Array.from({ length: T * K }, () => gauss(r) * 2), { shape: [T, K] });
    const w = packWeights(codesOf(ints(N * K, -127, 127, r), [N, K], 8), tensor(Float32Array.from({ length: N }, () => 0.001 + 0.01 * r())));
    const bias = tensor(Float32Array.from({ length: N }, () => gauss(r)));
    for (const act of ['dynamic', { scale: 0.03, zeroPoint: 0, qmin: -128, qmax: 127 }, { scale: 0.03, zeroPoint: 100, qmin: 0, qmax: 255 }] as const) {
      const outs = kernels.map((k) => withKernel(k, () => quantLinear(x, w, act, { bias }).data()));
      for (const y of outs.slice(1)) expect(same(y, outs[0]!)).toBe(true);
    }
  });

  it('per-row activation scales and zero points (shared within some tiles only): every kernel gives the same bits, and the exact sums', () => {
    // The vector epilogue takes a call only when all rows share one zero point; rows 0-7 at 100 and
    // the rest all different must take the portable one (a tile of equal rows must not mislead it).
    const r = rng(29);
    const T = 23, K = 70, N = 40;
    const cv = ints(T * K, -128, 127, r);
    const codes = codesOf(cv, [T, K], 8);
    const s = Float32Array.from({ length: T }, () => 0.01 + 0.02 * r());
    const b = Float32Array.from({ length: N }, () => gauss(r));
    for (const bits of [8, 4] as const) {
      const qmax = bits === 8 ? 127 : 7;
      const wq = ints(N * K, -qmax, qmax, r), ws = Float32Array.from({ length: N }, () => 0.01 + 0.02 * r());
      const w = packWeights(codesOf(wq, [N, K], bits), tensor(ws));
      for (const z of [new Float32Array(T).fill(-5), Float32Array.from({ length: T }, (_, t) => (t < 8 ? 100 : t - 20))]) {
        const outs = kernels.map((k) => withKernel(k, () => {
          const out = empty([T, N], 'f32');
          kernel('qgemmLinear', codes, tensor(s), tensor(z), w.packed, w.rowSums, w.scale, null, tensor(b), out, w.bits, null, null);
          return out.data();
        }));
        for (const y of outs.slice(1)) expect(same(y, outs[0]!)).toBe(true);
        const ref = new Float64Array(T * N);
        for (let t = 0; t < T; ++t)
          for (let o = 0; o < N; ++o) {
            let acc = 0;
            for (let k = 0; k < K; ++k) acc += (cv[t * K + k]! - z[t]!) * wq[o * K + k]!;
            ref[t * N + o] = acc * s[t]! * ws[o]! + b[o]!;
          }
        expect(maxRelErr(outs[0]!, ref)).toBeLessThan(1e-6);
      }
    }
  });

  it('fails cleanly on bad activation parameters', () => {
    const w = packWeights(codesOf(ints(8 * 8, -7, 7, rng(1)), [8, 8], 8), tensor(new Float32Array(8).fill(0.1)));
    const x = tensor(new Float32Array(16), { shape: [2, 8] });
    expect(() => quantLinear(x, w, { scale: 0, zeroPoint: 0, qmin: -128, qmax: 127 })).toThrow(/scale must be positive/);
    expect(() => quantLinear(x, w, { scale: 1, zeroPoint: 0, qmin: -300, qmax: 127 })).toThrow(/does not fit 8 bits/);
  });
});

function chanParams(n: number, absmax: Float32Array, bits: 8 | 4) {
  const qmax = bits === 8 ? 127 : 7;
  return { scale: tensor(Float32Array.from(absmax, (m) => m / qmax || 1)), zeroPoint: tensor(new Float32Array(n)), qmin: bits === 8 ? -127 : -8, qmax, granularity: 'channel' as const };
}
function rowAbsMax(v: Float32Array, n: number): Float32Array {
  const k = v.length / n, out = new Float32Array(n);
  for (let o = 0; o < n; ++o) for (let j = 0; j < k; ++j) out[o] = Math.max(out[o]!, Math.abs(v[o * k + j]!));
  return out;
}

describe('quantLinear vs linear on fake-quantized operands', () => {
  for (const bits of [8, 4] as const) {
    for (const mode of ['static', 'dynamic'] as const) {
      it(`W${bits}A8 ${mode}`, () => {
        const r = rng(bits * 3 + (mode === 'static' ? 1 : 2));
        const T = 23, K = 67, N = 41;
        const xv = Float32Array.from({ length: T * K }, () => gauss(r));
        const wv = Float32Array.from({ length: N * K }, () => gauss(r) * 0.1);
        const x = tensor(xv, { shape: [T, K] }), W = tensor(wv, { shape: [N, K] });
        const wp = chanParams(N, rowAbsMax(wv, N), bits);
        const w = packWeights(quantizeCodes(W, wp, bits === 8 ? 'i8' : 'i4'), wp.scale);
        const bias = tensor(Float32Array.from({ length: N }, () => gauss(r)));
        let xq: Tensor, act: ActQuant | 'dynamic';
        if (mode === 'static') {
          act = { scale: 0.03, zeroPoint: 5, qmin: -128, qmax: 127 };
          xq = fakeQuant(x, { scale: tensor([0.03]), zeroPoint: tensor([5]), qmin: -128, qmax: 127, granularity: 'tensor' });
        } else {
          act = 'dynamic';
          const rs = Float32Array.from(rowAbsMax(xv, T), (m) => Math.fround(m / 127));
          xq = fakeQuant(x, { scale: tensor(rs), zeroPoint: tensor(new Float32Array(T)), qmin: -127, qmax: 127, granularity: 'channel' });
        }
        const ref = linear(xq, fakeQuant(W, wp), bias).data();
        const y = quantLinear(x.reshape([1, T, K]), w, act, { bias });
        expect(y.shape).toEqual([1, T, N]);
        expect(maxRelErr(y.data(), Float64Array.from(ref))).toBeLessThan(1e-5);
      });
    }
  }

  it('low-rank a [k, r] is applied as (x a) b', () => {
    const r = rng(31);
    const T = 8, K = 20, N = 12, R = 3;
    const x = tensor(Float32Array.from({ length: T * K }, () => gauss(r)), { shape: [T, K] });
    const wv = ints(N * K, -127, 127, r);
    const w = packWeights(codesOf(wv, [N, K], 8), tensor(new Float32Array(N).fill(0.01)));
    const a = tensor(Float32Array.from({ length: K * R }, () => gauss(r)), { shape: [K, R] });
    const b = tensor(Float32Array.from({ length: R * N }, () => gauss(r)), { shape: [R, N] });
    const y0 = quantLinear(x, w, 'dynamic').data();
    const y1 = quantLinear(x, w, 'dynamic', { lowRank: { a, b } }).data();
    const lr = x.matmul(a).matmul(b).data();
    for (let i = 0; i < y0.length; ++i) expect(Math.abs(y1[i]! - y0[i]! - lr[i]!)).toBeLessThan(1e-4);
  });
});

describe('quantConv2d vs conv2d on fake-quantized operands', () => {
  const CASES: Array<{ name: string; k: number; stride: number; padding: number; dilation: number; C: number; H: number }> = [
    { name: '1x1', k: 1, stride: 1, padding: 0, dilation: 1, C: 20, H: 7 },
    { name: '3x3 pad 1 (zero-point padding)', k: 3, stride: 1, padding: 1, dilation: 1, C: 13, H: 9 },
    { name: '3x3 stride 2 pad 1', k: 3, stride: 2, padding: 1, dilation: 1, C: 8, H: 11 },
    { name: '3x3 dilation 2 pad 2', k: 3, stride: 1, padding: 2, dilation: 2, C: 5, H: 8 },
    { name: '1x1 stride 2', k: 1, stride: 2, padding: 0, dilation: 1, C: 12, H: 9 },
  ];
  // 'direct': the CPU conv kernel; 'im2row': the path CUDA takes (window matrix of codes + GEMM),
  // run here on the CPU so that its logic is checked without a GPU.
  for (const packing of ['direct', 'im2row'] as const)
  for (const bits of [8, 4] as const) {
    for (const c of CASES) {
      it(`W${bits}A8 ${c.name} (${packing})`, () => {
        const r = rng(bits * 100 + c.k * 10 + c.stride + c.dilation);
        const N = 2, O = 19;
        const xv = Float32Array.from({ length: N * c.C * c.H * c.H }, () => gauss(r) + 0.8);
        const wv = Float32Array.from({ length: O * c.C * c.k * c.k }, () => gauss(r) * 0.1);
        const x = tensor(xv, { shape: [N, c.C, c.H, c.H] }), W = tensor(wv, { shape: [O, c.C, c.k, c.k] });
        const wp = chanParams(O, rowAbsMax(wv, O), bits);
        const w = (packing === 'im2row' ? packConvWeightsIm2row : packWeights)(quantizeCodes(W, wp, bits === 8 ? 'i8' : 'i4'), wp.scale);
        // Asymmetric u8 activations: zero point 60, so a padded float 0 is the code 60, not 0.
        const act: ActQuant = { scale: 0.025, zeroPoint: 60, qmin: 0, qmax: 255 };
        const xq = fakeQuant(x, { scale: tensor([0.025]), zeroPoint: tensor([60]), qmin: 0, qmax: 255, granularity: 'tensor' });
        const bias = tensor(Float32Array.from({ length: O }, () => gauss(r)));
        const opts = { stride: c.stride, padding: c.padding, dilation: c.dilation };
        const ref = conv2d(xq, fakeQuant(W, wp), bias, opts);
        const y = quantConv2d(x, w, [c.k, c.k], act, { bias, ...opts });
        expect(y.shape).toEqual(ref.shape);
        expect(maxRelErr(y.data(), Float64Array.from(ref.data()))).toBeLessThan(1e-5);
      });
    }
  }

  it('colFactor [C] divides each input channel before quantizing (3 images, 3x3, pad 1)', () => {
    const r = rng(12);
    const N = 3, C = 6, H = 7, O = 10;
    const x = tensor(Float32Array.from({ length: N * C * H * H }, () => gauss(r)), { shape: [N, C, H, H] });
    const col = Float32Array.from({ length: C }, () => 0.5 + r());
    const W = tensor(Float32Array.from({ length: O * C * 9 }, () => gauss(r) * 0.1), { shape: [O, C, 3, 3] });
    const wp = chanParams(O, rowAbsMax(W.data(), O), 8);
    const w = packWeights(quantizeCodes(W, wp, 'i8'), wp.scale);
    const act: ActQuant = { scale: 0.02, zeroPoint: 3, qmin: -128, qmax: 127 };
    // Reference: codes rne(x / fp32(0.02 c)) + 3, dequantized WITHOUT the factor (it belongs to the weights).
    const sc = tensor(Float32Array.from(col, (c) => Math.fround(0.02 * c)));
    const xhat = fakeQuant(x, { scale: sc, zeroPoint: tensor(new Float32Array(C).fill(3)), qmin: -128, qmax: 127, granularity: 'channel', channelAxis: 1 })
      .div(tensor(col, { shape: [1, C, 1, 1] }));
    const ref = conv2d(xhat, fakeQuant(W, wp), null, { padding: 1 });
    const y = quantConv2d(x, w, [3, 3], act, { padding: 1, colFactor: tensor(col) });
    expect(maxRelErr(y.data(), Float64Array.from(ref.data()))).toBeLessThan(1e-5);
  });

  it('im2row path: colFactor, weight zero points and signed activations with a zero point match the direct kernel', () => {
    const r = rng(31);
    const N = 2, C = 7, H = 6, O = 9;
    const x = tensor(Float32Array.from({ length: N * C * H * H }, () => gauss(r)), { shape: [N, C, H, H] });
    const col = tensor(Float32Array.from({ length: C }, () => 0.5 + r()));
    const wq = ints(O * C * 9, -100, 120, r), zw = tensor(ints(O, -3, 3, r));
    const scale = tensor(Float32Array.from({ length: O }, () => 0.01 + 0.01 * r()));
    const act: ActQuant = { scale: 0.03, zeroPoint: -5, qmin: -128, qmax: 127 };
    const bias = tensor(Float32Array.from({ length: O }, () => gauss(r)));
    const opts = { padding: 1, stride: 2, bias, colFactor: col };
    const direct = quantConv2d(x, packWeights(codesOf(wq, [O, C, 3, 3], 8), scale, zw), [3, 3], act, opts);
    const viaRows = quantConv2d(x, packConvWeightsIm2row(codesOf(wq, [O, C, 3, 3], 8), scale, zw), [3, 3], act, opts);
    expect(viaRows.shape).toEqual(direct.shape);
    expect(maxRelErr(viaRows.data(), Float64Array.from(direct.data()))).toBeLessThan(1e-6);
    // Weights for the im2row path are refused by quantLinear (reordered reduction) unless 1x1.
    expect(() => quantLinear(tensor(new Float32Array(C * 9), { shape: [1, C * 9] }), packConvWeightsIm2row(codesOf(wq, [O, C, 3, 3], 8), scale), act)).toThrow(/use quantConv2d/);
  });

  it('kernels agree bit for bit on a 3x3 conv', () => {
    const r = rng(4);
    const x = tensor(Float32Array.from({ length: 16 * 10 * 10 }, () => gauss(r)), { shape: [1, 16, 10, 10] });
    const wq = ints(24 * 16 * 9, -127, 127, r);
    const w = packWeights(codesOf(wq, [24, 16, 3, 3], 8), tensor(new Float32Array(24).fill(0.01)));
    const act: ActQuant = { scale: 0.05, zeroPoint: 0, qmin: -128, qmax: 127 };
    const outs = kernels.map((k) => withKernel(k, () => quantConv2d(x, w, [3, 3], act, { padding: 1 }).data()));
    for (const y of outs.slice(1)) expect(Array.from(y)).toEqual(Array.from(outs[0]!));
  });
});

describe('qgemm errors', () => {
  const w = packWeights(codesOf(new Float32Array(6 * 8).fill(1), [6, 8], 8), tensor(new Float32Array(6).fill(1)));
  it('typed errors for bad shapes, dtypes and arguments', () => {
    expect(() => packWeights(tensor([1, 2], { dtype: 'i32' }), tensor([1]))).toThrow(/i8 or i4/);
    expect(() => packWeights(codesOf(new Float32Array(8), [2, 4], 8), tensor([1, 2, 3]))).toThrow(expect.objectContaining({ code: 'QDM_SHAPE_MISMATCH' }));
    expect(() => quantLinear(tensor(new Float32Array(10), { shape: [2, 5] }), w, 'dynamic')).toThrow(expect.objectContaining({ code: 'QDM_SHAPE_MISMATCH' }));
    expect(() => quantLinear(tensor(new Int32Array(16), { shape: [2, 8], dtype: 'i32' }), w, 'dynamic')).toThrow(expect.objectContaining({ code: 'QDM_DTYPE' }));
    expect(() => quantLinear(tensor(new Float32Array(16), { shape: [2, 8] }), w, { scale: 0, zeroPoint: 0, qmin: -128, qmax: 127 })).toThrow(expect.objectContaining({ code: 'QDM_BAD_ARGUMENT' }));
    expect(() => quantLinear(tensor(new Float32Array(16), { shape: [2, 8] }), w, { scale: 1, zeroPoint: 0, qmin: -300, qmax: 127 })).toThrow(expect.objectContaining({ code: 'QDM_BAD_ARGUMENT' }));
    const x4 = tensor(new Float32Array(2 * 8 * 4 * 4), { shape: [2, 8, 4, 4] });
    expect(() => quantConv2d(x4, w, [1, 1], { scale: 1, zeroPoint: 0, qmin: -128, qmax: 127 }, { groups: 2 })).toThrow(expect.objectContaining({ code: 'QDM_UNSUPPORTED' }));
  });
  it('inference only: refuses an input that requires grad under grad mode, runs under noGrad', () => {
    const x = tensor(new Float32Array(16), { shape: [2, 8] });
    x.requiresGrad = true;
    expect(() => enableGrad(() => quantLinear(x, w, 'dynamic'))).toThrow(/noGrad/);
    expect(noGrad(() => quantLinear(x, w, 'dynamic')).shape).toEqual([2, 6]);
  });
});
