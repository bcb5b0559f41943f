// CUDA nn kernels (groupNorm incl. the fused GroupNorm+SiLU, layerNorm, softmax, attention)
// against the CPU kernels of the same name, called directly with their binding argument lists.
// Inputs are random values representable in the tested dtype; the CPU gets them as f32, the GPU
// in the dtype itself. Every GPU output is poisoned with NaN first, so an unwritten element
// fails (relErr never passes a NaN). Norm/softmax math is f32 on both sides: f32 runs agree to
// ~1e-6; half outputs differ by their rounding (< 1e-2). Attention runs on the f16/bf16 tensor
// cores (f32 operands converted to f16): f32 ~5e-4, f16 ~1e-3, bf16 ~5e-3. attentionBackward
// (CUDA only) is checked against the CPU composite path's autograd gradients. Skips without a GPU.
import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import { Tensor, cast, empty, expand, full, kernel, permute, randn, reshape, scaledDotProductAttention, tensor } from '@qdm/core';
import type { DType } from '@qdm/core';
import { cudaAvailable, poison, relErr, skipNote } from './harness.js';

let seed = 1000;
/** Random values representable in `dt`, as an f32 CPU tensor. */
function rnd(shape: number[], dt: DType, scale = 1, shift = 0): Tensor {
  const src = randn(shape, { seed: seed++ }).data() as Float32Array;
  const u = tensor(Float32Array.from(src, (v) => v * scale + shift), { shape });
  return dt === 'f32' ? u : cast(cast(u, dt), 'f32');
}
const dev = (t: Tensor, dt: DType) => cast(t, dt).to('cuda');
const host = (t: Tensor) => t.to('cpu').data() as Float32Array;
const outOn = (shape: number[], dt: DType) => poison(empty(shape, dt, 'cuda'));
const tolOf = (dt: DType) => (dt === 'f32' ? 1e-5 : 1e-2);
const dtypes: DType[] = ['f32', 'f16', 'bf16'];

describe.skipIf(!cudaAvailable)(`CUDA group norm${skipNote}`, () => {
  const cases = [
    { N: 2, C: 32, S: 64, G: 8 },
    { N: 3, C: 12, S: 37, G: 3 },       // odd spatial size: scalar path
    { N: 2, C: 320, S: 1024, G: 32 },   // a U-Net shape (vectorised path)
    { N: 1, C: 6, S: 1, G: 6 },
  ];
  for (const dt of dtypes)
    for (const c of cases)
      for (const affine of [true, false]) {
        it(`forward, backward and fused SiLU ${dt} N${c.N} C${c.C} S${c.S} G${c.G}${affine ? '' : ' no affine'}`, () => {
          const { N, C, S, G } = c;
          const eps = 1e-3;
          const x = rnd([N, C, S], dt, 2, 0.5), gy = rnd([N, C, S], dt);
          const w = affine ? rnd([C], dt, 0.5, 1) : null, b = affine ? rnd([C], dt) : null;
          // CPU reference
          const y = empty([N, C, S], 'f32', 'cpu'), mean = empty([N, G], 'f32', 'cpu'), rstd = empty([N, G], 'f32', 'cpu');
          kernel('groupNormForward', x, w, b, y, mean, rstd, G, eps);
          const gx = empty([N, C, S], 'f32', 'cpu'), gw = empty([C], 'f32', 'cpu'), gb = empty([C], 'f32', 'cpu');
          kernel('groupNormBackward', x, gy, w, mean, rstd, gx, affine ? gw : null, affine ? gb : null, G);
          // GPU
          const xd = dev(x, dt), gyd = dev(gy, dt), wd = w && dev(w, dt), bd = b && dev(b, dt);
          const yd = outOn([N, C, S], dt), md = outOn([N, G], 'f32'), rd = outOn([N, G], 'f32');
          kernel('groupNormForward', xd, wd, bd, yd, md, rd, G, eps);
          expect(relErr(host(yd), y.data() as Float32Array)).toBeLessThan(tolOf(dt));
          expect(relErr(host(md), mean.data() as Float32Array)).toBeLessThan(1e-5);
          expect(relErr(host(rd), rstd.data() as Float32Array)).toBeLessThan(1e-5);
          // fused GroupNorm + SiLU
          const ys = outOn([N, C, S], dt);
          kernel('groupNormSiluForward', xd, wd, bd, ys, outOn([N, G], 'f32'), outOn([N, G], 'f32'), G, eps);
          const ref = (y.data() as Float32Array).map((v) => v / (1 + Math.exp(-v)));
          expect(relErr(host(ys), ref)).toBeLessThan(tolOf(dt));
          // backward (with the CPU's mean/rstd, so only the backward kernel is compared)
          const mc = md, rc = rd;
          const gxd = outOn([N, C, S], dt), gwd = outOn([C], 'f32'), gbd = outOn([C], 'f32');
          kernel('groupNormBackward', xd, gyd, wd, mc, rc, gxd, affine ? gwd : null, affine ? gbd : null, G);
          expect(relErr(host(gxd), gx.data() as Float32Array)).toBeLessThan(dt === 'f32' ? 1e-4 : 2e-2);
          if (affine) {
            expect(relErr(host(gwd), gw.data() as Float32Array)).toBeLessThan(1e-4);
            expect(relErr(host(gbd), gb.data() as Float32Array)).toBeLessThan(1e-5);
            // deterministic: a second run gives the same bits
            const gw2 = outOn([C], 'f32');
            kernel('groupNormBackward', xd, gyd, wd, mc, rc, outOn([N, C, S], dt), gw2, null, G);
            expect(Array.from(host(gw2))).toEqual(Array.from(host(gwd)));
          }
        });
      }
});

describe.skipIf(!cudaAvailable)(`CUDA layer norm${skipNote}`, () => {
  const cases = [{ M: 33, D: 320 }, { M: 7, D: 77 }, { M: 600, D: 1280 }, { M: 3, D: 3000 }, { M: 5, D: 1 }];
  for (const dt of dtypes)
    for (const c of cases)
      for (const affine of [true, false]) {
        it(`forward and backward ${dt} M${c.M} D${c.D}${affine ? '' : ' no affine'}`, () => {
          const { M, D } = c;
          const x = rnd([M, D], dt, 3, -1), gy = rnd([M, D], dt);
          const w = affine ? rnd([D], dt, 0.5, 1) : null, b = affine ? rnd([D], dt) : null;
          const y = empty([M, D], 'f32', 'cpu'), mean = empty([M], 'f32', 'cpu'), rstd = empty([M], 'f32', 'cpu');
          kernel('layerNormForward', x, w, b, y, mean, rstd, 1e-5);
          const gx = empty([M, D], 'f32', 'cpu'), gw = empty([D], 'f32', 'cpu'), gb = empty([D], 'f32', 'cpu');
          kernel('layerNormBackward', x, gy, w, mean, rstd, gx, affine ? gw : null, affine ? gb : null);

          const xd = dev(x, dt), gyd = dev(gy, dt), wd = w && dev(w, dt), bd = b && dev(b, dt);
          const yd = outOn([M, D], dt), md = outOn([M], 'f32'), rd = outOn([M], 'f32');
          kernel('layerNormForward', xd, wd, bd, yd, md, rd, 1e-5);
          // D == 1: y is exactly b (x - mean == 0), compare absolutely through relErr's den
          expect(relErr(host(yd), y.data() as Float32Array)).toBeLessThan(D === 1 ? 1e-2 : tolOf(dt));
          expect(relErr(host(md), mean.data() as Float32Array)).toBeLessThan(1e-5);
          expect(relErr(host(rd), rstd.data() as Float32Array)).toBeLessThan(D === 1 ? 1e-3 : 1e-5);
          const gxd = outOn([M, D], dt), gwd = outOn([D], 'f32'), gbd = outOn([D], 'f32');
          kernel('layerNormBackward', xd, gyd, wd, md, rd, gxd, affine ? gwd : null, affine ? gbd : null);
          if (D > 1) expect(relErr(host(gxd), gx.data() as Float32Array)).toBeLessThan(dt === 'f32' ? 1e-4 : 2e-2);
          else expect(host(gxd).every((v) => Number.isFinite(v))).toBe(true);
          if (affine) {
            if (D > 1) expect(relErr(host(gwd), gw.data() as Float32Array)).toBeLessThan(1e-4);
            expect(relErr(host(gbd), gb.data() as Float32Array)).toBeLessThan(1e-5);
          }
        });
      }
});

describe.skipIf(!cudaAvailable)(`CUDA softmax${skipNote}`, () => {
  const cases = [{ M: 40, D: 77 }, { M: 256, D: 1024 }, { M: 5, D: 4099 }, { M: 3, D: 8192 }, { M: 9, D: 1 }];
  for (const dt of dtypes)
    for (const c of cases)
      for (const log of [false, true]) {
        it(`${log ? 'log-' : ''}softmax forward and backward ${dt} M${c.M} D${c.D}`, () => {
          const { M, D } = c;
          const x = rnd([M, D], dt, 4), gy = rnd([M, D], dt);
          const y = empty([M, D], 'f32', 'cpu');
          kernel('softmaxForward', x, y, log);
          const yd = outOn([M, D], dt);
          kernel('softmaxForward', dev(x, dt), yd, log);
          expect(relErr(host(yd), y.data() as Float32Array)).toBeLessThan(dt === 'f32' ? 1e-5 : 1e-2);
          // backward from the same (rounded) y on both sides
          const yIn = dt === 'f32' ? y : cast(cast(y, dt), 'f32');
          const gx = empty([M, D], 'f32', 'cpu');
          kernel('softmaxBackward', yIn, gy, gx, log);
          const gxd = outOn([M, D], dt);
          kernel('softmaxBackward', dev(yIn, dt), dev(gy, dt), gxd, log);
          expect(relErr(host(gxd), gx.data() as Float32Array)).toBeLessThan(dt === 'f32' ? 1e-5 : 1e-2);
        });
      }
  it('a fully -inf row gives NaN as on the CPU', () => {
    const x = full([2, 5], -Infinity);
    const yd = outOn([2, 5], 'f32');
    kernel('softmaxForward', x.to('cuda'), yd, false);
    expect(host(yd).every((v) => Number.isNaN(v))).toBe(true);
  });
});

// ---- attention ---------------------------------------------------------------------------
interface AttnCase { B: number; Lq: number; Lk: number; D: number; Dv?: number; mask?: 'none' | 'full' | 'bcast' | 'rowsOff'; layout?: 'contig' | 'heads'; scale?: number }
const attnTol: Record<string, number> = { f32: 2e-3, f16: 1e-2, bf16: 1e-2 };

function attnErr(c: AttnCase, dt: DType, outDt: DType = dt === 'f32' ? 'f32' : dt): number {
  const { B, Lq, Lk, D } = c;
  const Dv = c.Dv ?? D;
  const scale = c.scale ?? 1 / Math.sqrt(D);
  // 'heads': q/k/v are [2, L, B/2, D] tensors permuted to [2, B/2, L, D] (the layout a
  // [batch, tokens, heads, dim] projection gives), so rows are strided.
  const make = (L: number, d: number) => {
    if (c.layout === 'heads') {
      const t = rnd([2, L, B / 2, d], dt);
      return { cpu: permute(t, [0, 2, 1, 3]), gpu: permute(dev(t, dt), [0, 2, 1, 3]) };
    }
    const t = rnd([B, L, d], dt);
    return { cpu: t, gpu: dev(t, dt) };
  };
  const q = make(Lq, D), k = make(Lk, D), v = make(Lk, Dv);
  const batch = c.layout === 'heads' ? [2, B / 2] : [B];
  let mCpu: Tensor | null = null, mGpu: Tensor | null = null;
  if (c.mask && c.mask !== 'none') {
    const shape = c.mask === 'bcast' ? [Lq, Lk] : [B, Lq, Lk];
    const m = rnd(shape, 'f32');
    const d = m.data() as Float32Array;
    for (let i = 0; i < d.length; ++i) d[i] = d[i]! > 1.2 ? -Infinity : d[i]!;  // ~12 % masked keys
    if (c.mask === 'rowsOff') for (let j = 0; j < Lk; ++j) { d[j] = -Infinity; d[(B - 1) * Lq * Lk + (Lq - 1) * Lk + j] = -Infinity; }
    const mm = tensor(d, { shape });
    const full_ = [...batch, Lq, Lk];
    mCpu = c.mask === 'bcast' ? expand(reshape(mm, [...batch.map(() => 1), Lq, Lk]), full_) : reshape(mm, full_);
    const mg = dev(mm, dt === 'f32' ? 'f32' : dt === 'f16' ? 'f16' : 'f32');
    mGpu = c.mask === 'bcast' ? expand(reshape(mg, [...batch.map(() => 1), Lq, Lk]), full_) : reshape(mg, full_);
    if (dt === 'f16') mCpu = cast(cast(mCpu.contiguous(), 'f16'), 'f32');  // the GPU mask is f16 here: same values
  }
  const ref = empty([...batch, Lq, Dv], 'f32', 'cpu');
  kernel('attentionForward', q.cpu, k.cpu, v.cpu, mCpu, ref, scale);
  const got = outOn([...batch, Lq, Dv], outDt);
  kernel('attentionForward', q.gpu, k.gpu, v.gpu, mGpu, got, scale);
  return relErr(host(got), ref.data() as Float32Array);
}

describe.skipIf(!cudaAvailable)(`CUDA attention${skipNote}`, () => {
  const small: AttnCase[] = [
    { B: 3, Lq: 70, Lk: 45, D: 64 },
    { B: 2, Lq: 1, Lk: 1, D: 40 },
    { B: 2, Lq: 129, Lk: 200, D: 33, Dv: 20 },   // odd head dims: packed path
    { B: 4, Lq: 100, Lk: 77, D: 80, mask: 'full' },
    { B: 4, Lq: 65, Lk: 130, D: 160, mask: 'bcast', layout: 'heads' },
    { B: 2, Lq: 64, Lk: 64, D: 128, mask: 'rowsOff' },
    { B: 2, Lq: 50, Lk: 300, D: 8, scale: 0.7 },
  ];
  for (const dt of dtypes)
    for (const c of small)
      it(`${dt} B${c.B} Lq${c.Lq} Lk${c.Lk} D${c.D}${c.Dv ? ` Dv${c.Dv}` : ''}${c.mask ? ` mask ${c.mask}` : ''}${c.layout === 'heads' ? ' strided heads' : ''}`, () => {
        expect(attnErr(c, dt)).toBeLessThan(attnTol[dt]!);
      });

  it('f16 operands, f32 output', () => {
    expect(attnErr({ B: 2, Lq: 96, Lk: 96, D: 64 }, 'f16', 'f32')).toBeLessThan(5e-3);
  });

  // Stable Diffusion 1.5 shapes: batch 2 x 8 heads = 16.
  const sd: AttnCase[] = [
    { B: 16, Lq: 4096, Lk: 4096, D: 40, layout: 'heads' },
    { B: 16, Lq: 1024, Lk: 1024, D: 80 },
    { B: 16, Lq: 256, Lk: 256, D: 160 },
    { B: 16, Lq: 64, Lk: 64, D: 160 },
    { B: 16, Lq: 1024, Lk: 1024, D: 64 },
    { B: 16, Lq: 4096, Lk: 77, D: 40 },
    { B: 16, Lq: 1024, Lk: 77, D: 80, mask: 'bcast' },
    { B: 16, Lq: 256, Lk: 77, D: 160, mask: 'full' },
  ];
  for (const dt of ['f16', 'f32'] as DType[])
    for (const c of sd)
      it(`SD shape ${dt} ${c.B}x${c.Lq}x${c.Lk}x${c.D}${c.mask ? ` mask ${c.mask}` : ''}`, { timeout: 120_000 }, () => {
        expect(attnErr(c, dt)).toBeLessThan(attnTol[dt]!);
      });

  it('rejects head dims over 160 and mismatched shapes with typed errors', () => {
    const q = empty([1, 4, 192], 'f16', 'cuda'), out = empty([1, 4, 192], 'f16', 'cuda');
    expect(() => kernel('attentionForward', q, q, q, null, out, 1)).toThrow(/head dims up to 160/);
    const k = empty([1, 4, 64], 'f16', 'cuda');
    expect(() => kernel('attentionForward', empty([1, 4, 32], 'f16', 'cuda'), k, k, null, empty([1, 4, 64], 'f16', 'cuda'), 1)).toThrow(/do not agree/);
  });
});

// attentionBackward against the gradients of the composite path on the CPU (matmul, softmax,
// matmul under autograd), from the same rounded inputs. dS is rounded to the compute dtype for
// its two products, so the bounds are looser than the forward's.
interface BwdCase { B: number; Lq: number; Lk: number; D: number; Dv?: number; mask?: boolean }
function attnBwdErr(c: BwdCase, dt: DType): number[] {
  const { B, Lq, Lk, D } = c;
  const Dv = c.Dv ?? D, scale = 1 / Math.sqrt(D);
  const q = rnd([B, Lq, D], dt), k = rnd([B, Lk, D], dt), v = rnd([B, Lk, Dv], dt), gy = rnd([B, Lq, Dv], dt);
  let mask: Tensor | null = null;
  if (c.mask) {
    const d = rnd([B, Lq, Lk], 'f32').data() as Float32Array;
    for (let i = 0; i < d.length; ++i) d[i] = d[i]! > 1.2 ? -Infinity : 0.5 * d[i]!;
    for (let i = 0; i < B * Lq; ++i) d[i * Lk] = 0;  // key 0 always visible: no fully masked row (NaN in the composite)
    mask = tensor(d, { shape: [B, Lq, Lk] });
  }
  const qc = q.detach().requiresGrad_(), kc = k.detach().requiresGrad_(), vc = v.detach().requiresGrad_();
  scaledDotProductAttention(qc, kc, vc, { scale, mask }).backward(gy);

  const qd = dev(q, dt), kd = dev(k, dt), vd = dev(v, dt), md = mask && mask.to('cuda');
  const out = outOn([B, Lq, Dv], dt), lse = outOn([B * Lq], 'f32');
  kernel('attentionForward', qd, kd, vd, md, out, scale, lse);
  const gq = outOn([B, Lq, D], dt), gk = outOn([B, Lk, D], dt), gv = outOn([B, Lk, Dv], dt);
  kernel('attentionBackward', qd, kd, vd, md, out, dev(gy, dt), lse, gq, gk, gv, scale);
  return [
    relErr(host(gq), qc.grad!.data() as Float32Array),
    relErr(host(gk), kc.grad!.data() as Float32Array),
    relErr(host(gv), vc.grad!.data() as Float32Array),
  ];
}

describe.skipIf(!cudaAvailable)(`CUDA attention backward${skipNote}`, () => {
  const cases: BwdCase[] = [
    { B: 2, Lq: 70, Lk: 45, D: 64 },
    { B: 3, Lq: 129, Lk: 77, D: 40, mask: true },
    { B: 2, Lq: 64, Lk: 100, D: 80 },
    { B: 2, Lq: 33, Lk: 65, D: 160, mask: true },
    { B: 2, Lq: 50, Lk: 50, D: 128 },
    { B: 2, Lq: 40, Lk: 31, D: 33, Dv: 20 },  // packed operands, D != Dv
    { B: 16, Lq: 1024, Lk: 1024, D: 40 },     // SD 1.5 64x64-level head dim at a shorter length
  ];
  const tol: Record<string, number> = { f32: 5e-3, f16: 1e-2, bf16: 3e-2 };
  for (const dt of dtypes)
    for (const c of cases)
      it(`${dt} B${c.B} Lq${c.Lq} Lk${c.Lk} D${c.D}${c.Dv ? ` Dv${c.Dv}` : ''}${c.mask ? ' mask' : ''}`, { timeout: 120_000 }, () => {
        const [eq, ek, ev] = attnBwdErr(c, dt);
        expect(eq).toBeLessThan(tol[dt]!);
        expect(ek).toBeLessThan(tol[dt]!);
        expect(ev).toBeLessThan(tol[dt]!);
      });

  it('lse is the row log-sum-exp of the scaled scores (+inf for a fully masked row)', () => {
    const q = rnd([1, 3, 16], 'f32'), k = rnd([1, 5, 16], 'f32'), v = rnd([1, 5, 16], 'f32');
    const m = tensor(Float32Array.from({ length: 15 }, (_, i) => (i < 5 ? -Infinity : 0)), { shape: [1, 3, 5] });
    const lse = outOn([3], 'f32');
    kernel('attentionForward', dev(q, 'f32'), dev(k, 'f32'), dev(v, 'f32'), m.to('cuda'), outOn([1, 3, 16], 'f32'), 0.25, lse);
    const got = host(lse), qa = q.data() as Float32Array, ka = k.data() as Float32Array;
    expect(got[0]).toBe(Infinity);
    for (let i = 1; i < 3; ++i) {
      let sum = 0;
      for (let j = 0; j < 5; ++j) { let dot = 0; for (let d = 0; d < 16; ++d) dot += qa[i * 16 + d]! * ka[j * 16 + d]!; sum += Math.exp(0.25 * dot); }
      expect(Math.abs(got[i]! - Math.log(sum))).toBeLessThan(5e-3);
    }
  });
});

// Argument validation happens in the binding before anything touches the device, so it runs
// wherever the addon was built with CUDA, GPU or not: fake device views (a pointer number, never
// dereferenced) must be rejected with typed errors.
type CudaFn = (...args: unknown[]) => void;
const cudaAddon = (() => {
  try { return (createRequire(import.meta.url)('@qdm/native') as { cuda?: Record<string, CudaFn> }).cuda ?? null; } catch { return null; }
})();
describe.skipIf(!cudaAddon)('CUDA nn bindings reject bad arguments before launching', () => {
  const view = (shape: number[], dtype = 1) => {
    const strides: number[] = [];
    let n = 1;
    for (let i = shape.length - 1; i >= 0; --i) { strides[i] = n; n *= shape[i]!; }
    return [65536, 0, shape, strides, dtype, n];
  };
  const call = (name: string, ...args: unknown[]) => () => cudaAddon![name]!(...args);
  it('attention', () => {
    expect(call('attentionForward', view([1, 4, 192]), view([1, 4, 192]), view([1, 4, 192]), null, view([1, 4, 192]), 1)).toThrow(/head dims up to 160/);
    expect(call('attentionForward', view([1, 4, 32]), view([1, 4, 64]), view([1, 4, 64]), null, view([1, 4, 64]), 1)).toThrow(/do not agree/);
    expect(call('attentionForward', view([1, 4, 32]), view([1, 5, 32]), view([1, 5, 32]), view([1, 4, 4]), view([1, 4, 32]), 1)).toThrow(/mask/);
    expect(call('attentionForward', view([1, 4, 32]), view([1, 5, 32]), view([1, 5, 32]), null, view([1, 4, 32]), 1, view([3], 0))).toThrow(/lse/);
    expect(call('attentionBackward', view([1, 4, 32]), view([1, 5, 32]), view([1, 5, 32]), null, view([1, 4, 32]), view([1, 4, 32]), view([4], 0),
      view([1, 4, 32]), view([1, 5, 32]), view([1, 4, 32]), 1)).toThrow(/gradV/);
  });
  it('norms and softmax', () => {
    expect(call('groupNormForward', view([2, 6, 4]), null, null, view([2, 6, 4]), view([2, 4], 0), view([2, 4], 0), 4, 1e-5)).toThrow(/cannot be split/);
    expect(call('groupNormSiluForward', view([2, 6, 4]), null, null, view([2, 6, 4]), view([2, 2], 0), view([2, 3], 0), 3, 1e-5)).toThrow(/mean/);
    expect(call('layerNormForward', view([2, 6]), view([5]), null, view([2, 6]), view([2], 0), view([2], 0), 1e-5)).toThrow(/weight/);
    expect(call('softmaxForward', view([2, 6], 3), view([2, 6]), false)).toThrow(/f32, f16 or bf16/);
    expect(call('softmaxForward', [65536, 0, [2, 6], [1, 2], 0, 12], view([2, 6]), false)).toThrow(/contiguous/);
  });
});
