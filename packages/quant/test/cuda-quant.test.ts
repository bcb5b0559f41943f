// CUDA quant kernels against the CPU kernels of the same name (and float64 references), on
// fresh random inputs: fake-quant forward (bit-exact), backward (gradX bit-exact, reductions to
// 1e-5 and bit-reproducible run to run), quantizePack / dequantize (bit-exact), the 8-bit GEMM
// (W8A8 and W4A8 against the CPU qgemm: same codes, same integer sums, same epilogue order, so
// f32 outputs agree to rounding; an exact-integer case with unit scales), fp8 e4m3 against a
// float64 reference of the decoded codes, and the activation-quantize kernel. Device outputs are
// poisoned with NaN before each run so unwritten elements show. Skips without a GPU.
import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import { Tensor, cast, empty, full, kernel, tensor } from '@qdm/core';
import { fakeQuant, layoutOf, packWeights, qgemmCudaPath, quantConv2d, quantLinear, quantizeActivations, type FakeQuantParams } from '@qdm/quant';
import { cudaUnavailableReason } from '../../core/src/backend/index.js';
import { makeCase, rng, vals, type Case } from './helpers.js';

const cudaReason = cudaUnavailableReason();
const cudaAvailable = cudaReason === null;
const require_ = createRequire(import.meta.url);
interface CudaQuantAddon { qgemmPackedBytes(n: number, k: number, bits: number): number; deviceInfo?(): { capability: number } }
const cudaAddon = () => (require_('@qdm/native') as { cuda: CudaQuantAddon }).cuda;
const capability = () => cudaAddon().deviceInfo?.().capability ?? 0;

const dev = (t: Tensor) => t.to('cuda');
const host = (t: Tensor) => t.to('cpu');
const f32 = (a: ArrayLike<number>, shape: number[]) => tensor(Float32Array.from(a), { shape });
const nanDev = (shape: number[], dtype: 'f32' | 'f16' | 'bf16' = 'f32') => full(shape, NaN, { device: 'cuda', dtype });
/** An integer / fp8 device buffer with every byte 0x55, so unwritten codes show. */
function poisonDev(shape: number[], dtype: 'i8' | 'u8' | 'i4' | 'i32' | 'f8e4m3'): Tensor {
  const t = empty(shape, dtype), d = t.cpuData();
  new Uint8Array(d.buffer, d.byteOffset, d.byteLength).fill(0x55);
  return dev(t);
}

function relErr(got: Float32Array | Float64Array, ref: Float32Array | Float64Array): number {
  let num = 0, den = 0;
  for (let i = 0; i < ref.length; ++i) {
    if (!Number.isFinite(got[i]!)) return Infinity;  // NaN never passes
    num += (got[i]! - ref[i]!) ** 2;
    den += ref[i]! ** 2;
  }
  return Math.sqrt(num / Math.max(den, 1e-30));
}
function bitsEqual(a: Tensor, b: Tensor): number {
  const x = new Uint8Array(a.cpuData().buffer, a.cpuData().byteOffset, a.cpuData().byteLength);
  const y = new Uint8Array(b.cpuData().buffer, b.cpuData().byteOffset, b.cpuData().byteLength);
  expect(x.length).toBe(y.length);
  let bad = 0;
  for (let i = 0; i < x.length; ++i) if (x[i] !== y[i]) bad++;
  return bad;
}

// ---- fake quant -----------------------------------------------------------------------------
const CASES: Array<[string, (bits: number, signed: boolean, seed: number) => Case]> = [
  ['tensor', (b, s, seed) => makeCase('tensor', [37, 41, 13], b, s, seed)],
  ['channel axis 0', (b, s, seed) => makeCase('channel', [24, 9, 3, 3], b, s, seed)],
  ['channel axis 1', (b, s, seed) => makeCase('channel', [4, 19, 33], b, s, seed, { channelAxis: 1 })],
  ['group', (b, s, seed) => makeCase('group', [13, 96], b, s, seed, { groupSize: 32 })],
  ['separable', (b, s, seed) => makeCase('separable', [21, 7, 3, 3], b, s, seed)],
];
function params(c: Case): FakeQuantParams {
  return {
    scale: f32(c.scale, [c.scale.length]), zeroPoint: f32(c.zero, [c.zero.length]), colScale: c.col ? f32(c.col, [c.col.length]) : null,
    qmin: c.qmin, qmax: c.qmax, granularity: c.granularity, channelAxis: c.channelAxis, groupSize: c.groupSize,
  };
}
/** The same operands on both devices. */
function operands(c: Case) {
  const q = params(c);
  const layout = layoutOf(c.shape, q);
  const cpu = { x: f32(c.x, c.shape), s: q.scale, z: q.zeroPoint, col: q.colScale ?? null };
  const gpu = { x: dev(cpu.x), s: dev(cpu.s), z: dev(cpu.z), col: cpu.col ? dev(cpu.col) : null };
  return { layout, cpu, gpu };
}

describe.skipIf(!cudaAvailable)(`CUDA fake quant${cudaAvailable ? '' : ` (skipped: ${cudaReason})`}`, () => {
  for (const [name, mk] of CASES) {
    for (const [bits, signed] of [[8, true], [8, false], [4, true], [2, false]] as Array<[number, boolean]>) {
      it(`forward ${name}, ${bits} bits ${signed ? 'signed' : 'unsigned'}: bit-exact vs CPU (f32 and f16 input)`, () => {
        const c = mk(bits, signed, bits * 7 + (signed ? 1 : 0));
        const { layout, cpu, gpu } = operands(c);
        const ref = empty(c.shape, 'f32');
        kernel('fakeQuantForward', cpu.x, cpu.s, cpu.z, cpu.col, ref, c.qmin, c.qmax, ...layout);
        const out = nanDev(c.shape);
        kernel('fakeQuantForward', gpu.x, gpu.s, gpu.z, gpu.col, out, c.qmin, c.qmax, ...layout);
        expect(bitsEqual(host(out), ref)).toBe(0);
        // f16 input read directly by the kernel == the CPU kernel on the widened values
        const xh = cast(cpu.x, 'f16'), xw = cast(xh, 'f32');
        const refH = empty(c.shape, 'f32');
        kernel('fakeQuantForward', xw, cpu.s, cpu.z, cpu.col, refH, c.qmin, c.qmax, ...layout);
        const outH = nanDev(c.shape);
        kernel('fakeQuantForward', dev(xh), gpu.s, gpu.z, gpu.col, outH, c.qmin, c.qmax, ...layout);
        expect(bitsEqual(host(outH), refH)).toBe(0);
      });

      it(`backward ${name}, ${bits} bits ${signed ? 'signed' : 'unsigned'}: gradX exact, parameter gradients 1e-5, reproducible`, () => {
        const c = mk(bits, signed, bits * 11 + (signed ? 3 : 0));
        const { layout, cpu, gpu } = operands(c);
        const r = rng(99);
        const g = f32(Array.from({ length: c.x.length }, () => r() * 2 - 1), c.shape);
        const P = c.scale.length, K = c.col?.length ?? 0;
        const ref = { gx: empty(c.shape), gs: empty([P]), gz: empty([P]), gc: K ? empty([K]) : null };
        kernel('fakeQuantBackward', cpu.x, cpu.s, cpu.z, cpu.col, g, ref.gx, ref.gs, ref.gc, ref.gz, c.qmin, c.qmax, ...layout);
        const run = () => {
          const o = { gx: nanDev(c.shape), gs: nanDev([P]), gz: nanDev([P]), gc: K ? nanDev([K]) : null };
          kernel('fakeQuantBackward', gpu.x, gpu.s, gpu.z, gpu.col, dev(g), o.gx, o.gs, o.gc, o.gz, c.qmin, c.qmax, ...layout);
          return { gx: host(o.gx), gs: host(o.gs), gz: host(o.gz), gc: o.gc ? host(o.gc) : null };
        };
        const a = run(), b = run();
        expect(bitsEqual(a.gx, ref.gx)).toBe(0);
        expect(relErr(vals(a.gs), vals(ref.gs))).toBeLessThan(1e-5);
        expect(relErr(vals(a.gz), vals(ref.gz))).toBeLessThan(1e-5);
        if (a.gc) expect(relErr(vals(a.gc), vals(ref.gc!))).toBeLessThan(1e-5);
        // deterministic reductions: a second run gives the same bits
        expect(bitsEqual(a.gs, b.gs) + bitsEqual(a.gz, b.gz) + (a.gc ? bitsEqual(a.gc, b.gc!) : 0)).toBe(0);
      });
    }
  }

  it('fakeQuant() from @qdm/quant dispatches to the CUDA kernel for device tensors (f32, channel layout)', () => {
    const c = makeCase('channel', [16, 8, 3, 3], 4, true, 21);
    const q = params(c);
    const ref = fakeQuant(f32(c.x, c.shape), q);
    const got = fakeQuant(dev(f32(c.x, c.shape)), { ...q, scale: dev(q.scale), zeroPoint: dev(q.zeroPoint) });
    expect(got.device).toBe('cuda');
    expect(bitsEqual(host(got), ref)).toBe(0);
  });

  it('backward with only some gradient buffers, and a large tensor-granularity reduction (many partial blocks)', () => {
    const c = makeCase('tensor', [1 << 18, 5], 8, true, 5);
    const { layout, cpu, gpu } = operands(c);
    const g = f32(Array.from({ length: c.x.length }, (_, i) => Math.sin(i)), c.shape);
    const gsRef = empty([1]);
    kernel('fakeQuantBackward', cpu.x, cpu.s, cpu.z, null, g, null, gsRef, null, null, c.qmin, c.qmax, ...layout);
    const gs = nanDev([1]);
    kernel('fakeQuantBackward', gpu.x, gpu.s, gpu.z, null, dev(g), null, gs, null, null, c.qmin, c.qmax, ...layout);
    expect(relErr(vals(host(gs)), vals(gsRef))).toBeLessThan(1e-5);
  });

  for (const [name, mk] of CASES) {
    for (const [dtype, bits, signed] of [['i8', 8, true], ['u8', 8, false], ['i4', 4, true]] as Array<['i8' | 'u8' | 'i4', number, boolean]>) {
      it(`quantizePack / dequantize ${name} to ${dtype}: bit-exact vs CPU`, () => {
        const c = mk(bits, signed, bits * 13 + (signed ? 5 : 0));
        const { layout, cpu, gpu } = operands(c);
        const ref = empty(c.shape, dtype);
        kernel('quantizePack', cpu.x, cpu.s, cpu.z, cpu.col, ref, c.qmin, c.qmax, ...layout);
        const codes = poisonDev(c.shape, dtype);
        kernel('quantizePack', gpu.x, gpu.s, gpu.z, gpu.col, codes, c.qmin, c.qmax, ...layout);
        expect(bitsEqual(host(codes), ref)).toBe(0);
        const deRef = empty(c.shape, 'f32');
        kernel('dequantize', ref, cpu.s, cpu.z, cpu.col, deRef, ...layout);
        const de = nanDev(c.shape);
        kernel('dequantize', codes, gpu.s, gpu.z, gpu.col, de, ...layout);
        expect(bitsEqual(host(de), deRef)).toBe(0);
      });
    }
  }
});

// ---- 8-bit GEMM -----------------------------------------------------------------------------
function i8Codes(shape: number[], lo: number, hi: number, seed: number): Tensor {
  const t = empty(shape, 'i8');
  const d = t.cpuData() as Int8Array, r = rng(seed);
  for (let i = 0; i < d.length; ++i) d[i] = lo + Math.floor(r() * (hi - lo + 1));
  return t;
}
/** Packed i4 codes (low nibble first) and their values. */
function i4Codes(n: number, k: number, seed: number): { t: Tensor; v: Int8Array } {
  const t = empty([n, k], 'i4');
  const d = t.cpuData() as Uint8Array, r = rng(seed), v = new Int8Array(n * k);
  d.fill(0);
  for (let i = 0; i < n * k; ++i) {
    v[i] = -8 + Math.floor(r() * 16);
    d[i >> 1]! |= (v[i]! & 0xf) << ((i & 1) * 4);
  }
  return { t, v };
}
const vec = (n: number, f: (i: number) => number) => f32(Array.from({ length: n }, (_, i) => f(i)), [n]);

interface QgCase { M: number; N: number; K: number; bits: 8 | 4; aZero?: boolean; wZero?: boolean; perTensor?: boolean; bias?: boolean; lowRank?: number; out?: 'f32' | 'f16' | 'bf16'; unitScales?: boolean; clampCase?: boolean; path?: 'mma' | 'wgmma' }

/** Runs f with the CUDA W8 GEMM pinned to `path` (none: as configured), then back to 'auto'. */
function withPath(path: 'mma' | 'wgmma' | undefined, f: () => void): void {
  if (!path) { f(); return; }
  qgemmCudaPath(path);
  try { f(); } finally { qgemmCudaPath('auto'); }
}

/** CPU qgemmLinear (CPU packing) and CUDA qgemmLinear (CUDA packing) on the same codes. */
function runQgemm(c: QgCase, seed: number): { got: Float32Array; ref: Float32Array; exact: Float64Array } {
  const { M, N, K, bits } = c;
  const r = rng(seed);
  const a = i8Codes([M, K], -128, 127, seed + 1);
  let w: Tensor, wv: ArrayLike<number>;
  if (bits === 8) { w = i8Codes([N, K], c.clampCase ? -128 : -127, 127, seed + 2); wv = (w.cpuData() as Int8Array).map((x) => Math.max(x, -127)); }
  else { const q = i4Codes(N, K, seed + 2); w = q.t; wv = q.v; }
  const rows = c.perTensor ? 1 : M;
  const sa = vec(rows, () => (c.unitScales ? 1 : 0.01 + 0.02 * r()));
  const za = vec(rows, () => (c.aZero ? Math.round((r() - 0.5) * 40) : 0));
  const sw = vec(N, () => (c.unitScales ? 1 : 0.005 + 0.01 * r()));
  const zw = c.wZero ? vec(N, () => Math.round((r() - 0.5) * 6)) : null;
  const bias = c.bias ? vec(N, () => r() - 0.5) : null;
  const R = c.lowRank ?? 0;
  const xa = R ? f32(Array.from({ length: M * R }, () => r() - 0.5), [M, R]) : null;
  const lb = R ? f32(Array.from({ length: R * N }, () => r() - 0.5), [R, N]) : null;

  // CPU
  const packedC = empty([kernel('qgemmPackedBytes', N, K, bits) as number], 'i8'), sumsC = empty([N], 'i32');
  kernel('qgemmPackWeights', w, packedC, sumsC, bits);
  const ref = empty([M, N], 'f32');
  kernel('qgemmLinear', a, sa, za, packedC, sumsC, sw, zw, bias, ref, bits, xa, lb);
  // CUDA
  const packedG = poisonDev([cudaAddon().qgemmPackedBytes(N, K, bits)], 'i8');
  const sumsG = poisonDev([N], 'i32');
  kernel('qgemmPackWeights', dev(w), packedG, sumsG, bits);
  expect(bitsEqual(host(sumsG), sumsC)).toBe(0);
  const out = nanDev([M, N], c.out ?? 'f32');
  const d = (t: Tensor | null) => (t ? dev(t) : null);
  withPath(c.path, () => kernel('qgemmLinear', dev(a), dev(sa), dev(za), packedG, sumsG, dev(sw), d(zw), d(bias), out, bits, d(xa), d(lb)));
  // float64 reference of the dequantized math
  const av = a.cpuData() as Int8Array, sav = vals(sa), zav = vals(za), swv = vals(sw), zwv = (zw ? vals(zw) : undefined), bv = (bias ? vals(bias) : undefined);
  const xav = (xa ? vals(xa) : undefined), lbv = (lb ? vals(lb) : undefined);
  const exact = new Float64Array(M * N);
  for (let m = 0; m < M; ++m) {
    const ri = c.perTensor ? 0 : m;
    for (let n = 0; n < N; ++n) {
      let s = 0;
      for (let k = 0; k < K; ++k) s += (av[m * K + k]! - zav[ri]!) * (wv[n * K + k]! - (zwv ? zwv[n]! : 0));
      let y = sav[ri]! * swv[n]! * s + (bv ? bv[n]! : 0);
      for (let q = 0; q < R; ++q) y += xav![m * R + q]! * lbv![q * N + n]!;
      exact[m * N + n] = y;
    }
  }
  return { got: vals(host(out)), ref: vals(ref), exact };
}

const QG_CASES: Array<[string, QgCase]> = [
  ['W8A8 32x64x64', { M: 32, N: 64, K: 64, bits: 8 }],
  ['W8A8 odd 17x5x100', { M: 17, N: 5, K: 100, bits: 8 }],
  ['W8A8 1x1x1', { M: 1, N: 1, K: 1, bits: 8 }],
  ['W8A8 300x320x320 (128x64 tiles)', { M: 300, N: 320, K: 320, bits: 8 }],
  ['W8A8 257x640x192 (128x128 tiles, M tail)', { M: 257, N: 640, K: 192, bits: 8 }],
  ['W8A8 asymmetric activations + weight zero points', { M: 63, N: 130, K: 77, bits: 8, aZero: true, wZero: true }],
  ['W8A8 per-tensor scale, bias', { M: 129, N: 96, K: 128, bits: 8, perTensor: true, aZero: true, bias: true }],
  ['W8A8 low rank 40', { M: 70, N: 200, K: 96, bits: 8, bias: true, lowRank: 40 }],
  ['W8A8 weight code -128 (clamped to -127 like the CPU)', { M: 16, N: 24, K: 48, bits: 8, clampCase: true }],
  ['W4A8 64x128x256', { M: 64, N: 128, K: 256, bits: 4 }],
  ['W4A8 odd 33x17x90, zero points, bias', { M: 33, N: 17, K: 90, bits: 4, aZero: true, wZero: true, bias: true }],
  ['W4A8 200x1280x320', { M: 200, N: 1280, K: 320, bits: 4, bias: true }],
];

describe.skipIf(!cudaAvailable)(`CUDA 8-bit GEMM${cudaAvailable ? '' : ` (skipped: ${cudaReason})`}`, () => {
  for (const [name, c] of QG_CASES) {
    it(`${name}: f32 out equals the CPU qgemm to rounding and the float64 reference`, () => {
      const { got, ref, exact } = runQgemm(c, c.M * 31 + c.N * 7 + c.K);
      expect(relErr(got, ref)).toBeLessThan(c.lowRank ? 1e-5 : 1e-6);
      expect(relErr(got, exact)).toBeLessThan(1e-5);
    });
  }
  it('integer part exact: unit scales, |sums| < 2^24, zero points', () => {
    const { got, exact } = runQgemm({ M: 45, N: 70, K: 150, bits: 8, aZero: true, wZero: true, unitScales: true }, 7);
    let bad = 0;
    for (let i = 0; i < exact.length; ++i) if (got[i] !== exact[i]) bad++;
    expect(bad).toBe(0);
    const w4 = runQgemm({ M: 19, N: 33, K: 200, bits: 4, aZero: true, unitScales: true }, 8);
    bad = 0;
    for (let i = 0; i < w4.exact.length; ++i) if (w4.got[i] !== w4.exact[i]) bad++;
    expect(bad).toBe(0);
  });
  for (const out of ['f16', 'bf16'] as const) {
    it(`${out} output`, () => {
      const { got, exact } = runQgemm({ M: 130, N: 192, K: 256, bits: 8, bias: true, out }, 11);
      expect(relErr(got, exact)).toBeLessThan(out === 'f16' ? 2e-3 : 1e-2);
    });
  }

  it('activation quantization (static u8 range with column factor, dynamic per token) equals the CPU kernel', () => {
    const T = 37, K = 150, r = rng(3);
    const x = f32(Array.from({ length: T * K }, () => (r() - 0.5) * 8), [T, K]);
    const col = vec(K, () => 0.5 + r());
    for (const [dynamic, scale, zero, qmin, qmax, c] of [[false, 0.03, 128, 0, 255, col], [false, 0.05, 0, -128, 127, null], [true, 1, 0, -127, 127, col], [true, 1, 0, -7, 7, null]] as Array<[boolean, number, number, number, number, Tensor | null]>) {
      const codes = empty([T, K], 'i8'), so = empty([T]), zo = empty([T]);
      kernel('qgemmQuantizeActs', x, codes, so, zo, dynamic, scale, zero, qmin, qmax, c);
      const codesG = poisonDev([T, K], 'i8'), soG = nanDev([T]), zoG = nanDev([T]);
      kernel('qgemmQuantizeActs', dev(x), codesG, soG, zoG, dynamic, scale, zero, qmin, qmax, c ? dev(c) : null);
      expect(bitsEqual(host(codesG), codes)).toBe(0);
      expect(bitsEqual(host(soG), so)).toBe(0);
      expect(bitsEqual(host(zoG), zo)).toBe(0);
    }
  });
});

// ---- fp8 e4m3 -------------------------------------------------------------------------------
function e4m3Decode(b: number): number {
  const s = b & 0x80 ? -1 : 1, e = (b >> 3) & 0xf, m = b & 7;
  if (e === 0xf && m === 7) return NaN;
  return e === 0 ? s * (m / 8) * 2 ** -6 : s * (1 + m / 8) * 2 ** (e - 7);
}
/** Random finite e4m3 codes of moderate magnitude (|v| in about [2^-4, 16]). */
function e4m3Codes(shape: number[], seed: number): { t: Tensor; v: Float64Array } {
  const t = empty(shape, 'f8e4m3'), d = t.cpuData() as Uint8Array, r = rng(seed), v = new Float64Array(d.length);
  for (let i = 0; i < d.length; ++i) {
    const e = 3 + Math.floor(r() * 8), m = Math.floor(r() * 8), s = r() < 0.5 ? 0x80 : 0;
    d[i] = s | (e << 3) | m;
    v[i] = e4m3Decode(d[i]!);
  }
  return { t, v };
}

describe.skipIf(!cudaAvailable)(`CUDA fp8 e4m3 GEMM${cudaAvailable ? '' : ` (skipped: ${cudaReason})`}`, () => {
  for (const [name, M, N, K, bits] of [['W8 e4m3 96x200x160', 96, 200, 160, 8], ['W8 e4m3 odd 33x17x50', 33, 17, 50, 8], ['W4 -> e4m3 130x256x320', 130, 256, 320, 4]] as Array<[string, number, number, number, 8 | 4]>) {
    it(`${name} vs the float64 reference of the decoded codes (or QDM_UNSUPPORTED below sm_89)`, () => {
      const a = e4m3Codes([M, K], M + K);
      let w: Tensor, wv: ArrayLike<number>;
      if (bits === 8) { const q = e4m3Codes([N, K], N * 3 + K); w = q.t; wv = q.v; } else { const q = i4Codes(N, K, N + 5); w = q.t; wv = q.v; }
      const r = rng(M * N);
      const sa = vec(M, () => 0.01 + 0.02 * r()), sw = vec(N, () => 0.01 + 0.02 * r()), bias = vec(N, () => r() - 0.5);
      const packed = poisonDev([cudaAddon().qgemmPackedBytes(N, K, bits)], 'i8');
      kernel('qgemmPackWeights', dev(w), packed, null, bits);
      const out = nanDev([M, N]);
      const call = () => kernel('qgemmLinear', dev(a.t), dev(sa), null, packed, null, dev(sw), null, dev(bias), out, bits, null, null);
      if (capability() > 0 && capability() < 89) { expect(call).toThrow(/QDM_UNSUPPORTED|sm_89/); return; }
      call();
      const sav = vals(sa), swv = vals(sw), bv = vals(bias), exact = new Float64Array(M * N);
      for (let m = 0; m < M; ++m)
        for (let n = 0; n < N; ++n) {
          let s = 0;
          for (let k = 0; k < K; ++k) s += a.v[m * K + k]! * wv[n * K + k]!;
          exact[m * N + n] = sav[m]! * swv[n]! * s + bv[n]!;
        }
      // products of e4m3 values are exact; only the tensor-core summation (f32, or narrower on Hopper) differs
      expect(relErr(vals(host(out)), exact)).toBeLessThan(2e-3);
    });
  }

  it('fp8 activation quantization: per-token amax / 448 scales, codes within half an e4m3 step', () => {
    const T = 20, K = 333, r = rng(17);
    const x = f32(Array.from({ length: T * K }, () => (r() - 0.5) * 10), [T, K]);
    const codes = poisonDev([T, K], 'f8e4m3'), so = nanDev([T]);
    kernel('qgemmQuantizeActs', dev(x), codes, so, null, true, 1, 0, -448, 448, null);
    const c = host(codes).cpuData() as Uint8Array, s = vals(host(so)), xv = vals(x);
    for (let t = 0; t < T; ++t) {
      let amax = 0;
      for (let k = 0; k < K; ++k) amax = Math.max(amax, Math.abs(xv[t * K + k]!));
      expect(Math.abs(s[t]! - amax / 448)).toBeLessThanOrEqual(amax / 448 * 1e-6);
      for (let k = 0; k < K; ++k) {
        const v = xv[t * K + k]! / s[t]!, d = e4m3Decode(c[t * K + k]!);
        // half an ulp of e4m3 (3 mantissa bits), or of its subnormal step 2^-9
        expect(Math.abs(d - v)).toBeLessThanOrEqual(Math.max(Math.abs(v) * 2 ** -4, 2 ** -10) * 1.0001);
      }
    }
  });
});

// ---- Hopper wgmma path (opt-in) -----------------------------------------------------------------
/** An fp8 W8 GEMM on CUDA with the kernel pinned to `path`; bias and low-rank optional. */
function runFp8(M: number, N: number, K: number, o: { lowRank?: number; out?: 'f32' | 'f16' }, path: 'mma' | 'wgmma', seed: number): Float32Array {
  const a = e4m3Codes([M, K], seed), w = e4m3Codes([N, K], seed + 1), r = rng(seed + 2), R = o.lowRank ?? 0;
  const sa = vec(M, () => 0.01 + 0.02 * r()), sw = vec(N, () => 0.01 + 0.02 * r()), bias = vec(N, () => r() - 0.5);
  const xa = R ? f32(Array.from({ length: M * R }, () => r() - 0.5), [M, R]) : null;
  const lb = R ? f32(Array.from({ length: R * N }, () => r() - 0.5), [R, N]) : null;
  const packed = poisonDev([cudaAddon().qgemmPackedBytes(N, K, 8)], 'i8');
  kernel('qgemmPackWeights', dev(w.t), packed, null, 8);
  const out = nanDev([M, N], o.out ?? 'f32');
  withPath(path, () => kernel('qgemmLinear', dev(a.t), dev(sa), null, packed, null, dev(sw), null, dev(bias), out, 8, xa ? dev(xa) : null, lb ? dev(lb) : null));
  return vals(host(out));
}

const hopper = cudaAvailable && capability() === 90;
describe.skipIf(!cudaAvailable)(`CUDA W8 GEMM kernel choice${cudaAvailable ? '' : ` (skipped: ${cudaReason})`}`, () => {
  it('qgemmCudaPath: mma.sync unless opted in; wgmma only on sm_90 (else QDM_UNSUPPORTED); bad names are QDM_BAD_ARGUMENT', () => {
    const optIn = process.env.QDM_QGEMM_WGMMA === '1' && hopper;
    expect(qgemmCudaPath()).toBe(optIn ? 'wgmma' : 'mma');
    expect(qgemmCudaPath('mma')).toBe('mma');
    if (hopper) expect(qgemmCudaPath('wgmma')).toBe('wgmma');
    else expect(() => qgemmCudaPath('wgmma')).toThrow(expect.objectContaining({ code: 'QDM_UNSUPPORTED' }));
    expect(() => qgemmCudaPath('tcgen05' as 'mma')).toThrow(expect.objectContaining({ code: 'QDM_BAD_ARGUMENT' }));
    expect(qgemmCudaPath('auto')).toBe(optIn ? 'wgmma' : 'mma');
  });

  // The int8 sums are exact and the epilogue is the same code, so the two kernels agree bit for bit.
  const WG_CASES: Array<[string, QgCase]> = [
    ['odd 17x5x100', { M: 17, N: 5, K: 100, bits: 8 }],
    ['257x640x192, f16 out', { M: 257, N: 640, K: 192, bits: 8, out: 'f16' }],
    ['zero points + bias 63x130x77', { M: 63, N: 130, K: 77, bits: 8, aZero: true, wZero: true, bias: true }],
    ['per-tensor, low rank 40, bias 200x300x330', { M: 200, N: 300, K: 330, bits: 8, perTensor: true, aZero: true, bias: true, lowRank: 40 }],
    ['bf16 out 129x256x1024', { M: 129, N: 256, K: 1024, bits: 8, wZero: true, out: 'bf16' }],
  ];
  for (const [name, c] of WG_CASES) {
    it.skipIf(!hopper)(`int8 W8 ${name}: wgmma output bit-identical to mma.sync`, () => {
      const seed = c.M + c.N + c.K;
      const ref = runQgemm({ ...c, path: 'mma' }, seed).got, got = runQgemm({ ...c, path: 'wgmma' }, seed).got;
      let bad = 0;
      for (let i = 0; i < ref.length; ++i) if (!Object.is(got[i], ref[i])) bad++;
      expect(bad).toBe(0);
    });
  }
  for (const [M, N, K, o] of [[33, 17, 50, {}], [300, 384, 320, { out: 'f16' }], [130, 200, 160, { lowRank: 24 }]] as Array<[number, number, number, { lowRank?: number; out?: 'f32' | 'f16' }]>) {
    it.skipIf(!hopper)(`fp8 W8 ${M}x${N}x${K}${o.out ? ` ${o.out} out` : ''}${o.lowRank ? ` low rank ${o.lowRank}` : ''}: wgmma equals mma.sync to 1e-3`, () => {
      const ref = runFp8(M, N, K, o, 'mma', M + N), got = runFp8(M, N, K, o, 'wgmma', M + N);
      expect(relErr(got, ref)).toBeLessThan(1e-3);
    });
  }
});

// ---- the @qdm/quant ops (qgemm.ts) on CUDA operands ----------------------------------------------
describe.skipIf(!cudaAvailable)(`qgemm ops on CUDA tensors${cudaAvailable ? '' : ` (skipped: ${cudaReason})`}`, () => {
  const M = 37, N = 70, K = 150;
  const r = rng(91);
  const x = f32(Array.from({ length: M * K }, () => (r() - 0.5) * 4), [M, K]);
  const w = i8Codes([N, K], -128, 127, 92);
  const sw = vec(N, () => 0.005 + 0.01 * r()), zw = vec(N, () => Math.round((r() - 0.5) * 6));
  const bias = vec(N, () => r() - 0.5), colF = vec(K, () => 0.5 + r());
  const stat = { scale: 0.02, zeroPoint: 3, qmin: -128, qmax: 127 };

  it('packWeights on a CUDA tensor packs there with the CUDA layout size; rowSums equal the CPU ones', () => {
    const pc = packWeights(w, sw, zw), pg = packWeights(dev(w), dev(sw), dev(zw));
    expect(pg.packed.device).toBe('cuda');
    expect(pg.rowSums.device).toBe('cuda');
    expect(pg.packed.numel).toBe(cudaAddon().qgemmPackedBytes(N, K, 8));
    expect(bitsEqual(host(pg.rowSums), pc.rowSums)).toBe(0);
  });

  it('quantizeActivations on CUDA: codes, scales and zero points bit-exact vs the CPU (static and dynamic)', () => {
    for (const act of ['dynamic', stat] as const) {
      const c = quantizeActivations(x, act, colF), g = quantizeActivations(dev(x), act, dev(colF));
      expect(g.codes.device).toBe('cuda');
      expect(bitsEqual(host(g.codes), c.codes)).toBe(0);
      expect(bitsEqual(host(g.scale), c.scale)).toBe(0);
      expect(bitsEqual(host(g.zeroPoint), c.zeroPoint)).toBe(0);
    }
  });

  it('quantLinear on CUDA equals the CPU (f32 out to rounding); f16 / bf16 inputs give outputs of their dtype', () => {
    const pc = packWeights(w, sw, zw), pg = packWeights(dev(w), dev(sw), dev(zw));
    for (const act of ['dynamic', stat] as const) {
      const ref = quantLinear(x, pc, act, { bias, colFactor: colF });
      const got = quantLinear(dev(x), pg, act, { bias: dev(bias), colFactor: dev(colF) });
      expect(got.device).toBe('cuda');
      expect(got.dtype).toBe('f32');
      expect(relErr(vals(host(got)), vals(ref))).toBeLessThan(1e-6);
    }
    for (const dt of ['f16', 'bf16'] as const) {
      const xh = cast(x, dt);
      const ref = quantLinear(xh, pc, 'dynamic', { bias });  // the CPU widens the same half values
      const got = quantLinear(dev(xh), pg, 'dynamic', { bias: dev(bias) });
      expect(got.dtype).toBe(dt);
      expect(relErr(vals(host(got)), vals(ref))).toBeLessThan(dt === 'f16' ? 2e-3 : 1e-2);
    }
  });

  it('quantConv2d on CUDA (im2row of codes + the integer GEMM) equals the CPU conv kernel: 1x1 / 3x3, stride, padding with the zero-point code, dilation, W8 / W4, colFactor', () => {
    const C = 24, O = 40, xs = f32(Array.from({ length: 2 * C * 9 * 7 }, () => (r() - 0.5) * 3), [2, C, 9, 7]);
    const b1 = vec(O, () => r() - 0.5), s1 = vec(O, () => 0.01 + 0.01 * r()), colC = vec(C, () => 0.5 + r());
    const u8 = { scale: 0.025, zeroPoint: 60, qmin: 0, qmax: 255 };  // padding must be the code 60
    const geoms = [
      { k: 1, stride: 2, padding: 0, dilation: 1 }, { k: 3, stride: 1, padding: 1, dilation: 1 },
      { k: 3, stride: 2, padding: 1, dilation: 1 }, { k: 3, stride: 1, padding: 2, dilation: 2 },
    ];
    for (const bits of [8, 4] as const)
      for (const g of geoms) {
        const codes = bits === 8 ? i8Codes([O, C, g.k, g.k], -127, 127, 93 + g.k) : i4Codes(O, C * g.k * g.k, 95 + g.k).t.reshape([O, C, g.k, g.k]);
        for (const act of [stat, u8]) {
          const opts = { stride: g.stride, padding: g.padding, dilation: g.dilation };
          const ref = quantConv2d(xs, packWeights(codes, s1), [g.k, g.k], act, { bias: b1, colFactor: colC, ...opts });
          const got = quantConv2d(dev(xs), packWeights(dev(codes), dev(s1)), [g.k, g.k], act, { bias: dev(b1), colFactor: dev(colC), ...opts });
          expect(got.device).toBe('cuda');
          expect(got.shape).toEqual(ref.shape);
          expect(relErr(vals(host(got)), vals(ref))).toBeLessThan(1e-6);
        }
      }
    const w3 = i8Codes([O, C, 3, 3], -127, 127, 94);
    const half = quantConv2d(dev(cast(xs, 'f16')), packWeights(dev(w3), dev(s1)), [3, 3], stat, { padding: 1 });
    expect(half.dtype).toBe('f16');
    expect(relErr(vals(host(half)), vals(quantConv2d(cast(xs, 'f16'), packWeights(w3, s1), [3, 3], stat, { padding: 1 })))).toBeLessThan(2e-3);
    expect(() => quantConv2d(dev(xs), packWeights(w3, s1), [3, 3], stat)).toThrow(expect.objectContaining({ code: 'QDM_DEVICE_MISMATCH' }));
    expect(() => quantLinear(dev(x), packWeights(w, sw), 'dynamic')).toThrow(expect.objectContaining({ code: 'QDM_DEVICE_MISMATCH' }));
  });
});

// ---- integer execution of a quantized model on CUDA ----------------------------------------------
describe.skipIf(!cudaAvailable)(`toIntegerExecution on CUDA${cudaAvailable ? '' : ` (skipped: ${cudaReason})`}`, () => {
  it('a W8A8 / W4A8 U-Net with temporal activation tables runs in integers on the GPU and matches its CPU integer twin', async () => {
    const { UNet2DModel, manualSeed, noGrad: ng, withContext } = await import('@qdm/core');
    const { quantize, toIntegerExecution } = await import('@qdm/quant');
    const config = {
      block_out_channels: [8, 16], down_block_types: ['DownBlock2D', 'AttnDownBlock2D'], up_block_types: ['AttnUpBlock2D', 'UpBlock2D'],
      norm_num_groups: 4, attention_head_dim: 4, layers_per_block: 1, in_channels: 1, out_channels: 1,
    };
    const steps = [999, 500, 1];
    const r = rng(97);
    const calibration = steps.map((t, i) => ({ args: [f32(Array.from({ length: 2 * 64 }, () => r() - 0.5), [2, 1, 8, 8]), t], context: { stepIndex: i, timestep: t } }));
    for (const bits of [8, 4] as const) {
      manualSeed(0);
      const cpuModel = new UNet2DModel(config);
      await quantize(cpuModel, { weights: { bits, granularity: 'channel' }, activations: { bits: 8, granularity: 'tensor', timestepGroups: 3 }, splitShortcut: true }, { calibration });
      const gpuModel = new UNet2DModel(config);
      await quantize(gpuModel, { weights: { bits, granularity: 'channel' }, activations: { bits: 8, granularity: 'tensor', timestepGroups: 3 }, splitShortcut: true }, { calibration });
      gpuModel.loadStateDict(cpuModel.stateDict());
      gpuModel.to('cuda');
      const a = toIntegerExecution(cpuModel), b = toIntegerExecution(gpuModel);
      expect(b.integer).toEqual(a.integer);
      expect(b.integer.length).toBeGreaterThan(20);
      const x = f32(Array.from({ length: 64 }, () => r() - 0.5), [1, 1, 8, 8]);
      for (let i = 0; i < steps.length; i++) {
        const run = (m: InstanceType<typeof UNet2DModel>, xi: Tensor) => ng(() => withContext({ stepIndex: i, timestep: steps[i]! }, () => m.call(xi, steps[i]!) as Tensor));
        const ref = run(cpuModel, x), got = run(gpuModel, dev(x));
        expect(got.device).toBe('cuda');
        // Same codes and integer sums; the float layers in between (GroupNorm, attention) differ in summation order.
        expect(relErr(vals(host(got)), vals(ref))).toBeLessThan(1e-3);
      }
    }
  });
});
