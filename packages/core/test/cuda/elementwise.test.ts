// The CUDA elementwise family against the CPU kernels: every binary op (broadcasting, strided
// views, ties), every unary op and its backward, where, casts and fills for every dtype,
// reductions over any dims (including the two-pass split), Philox random numbers (same seed,
// same numbers), row gathers / scatter-adds and nearest upsampling. f32 runs must agree to
// ~1e-5 (the GPU math is --use_fast_math f32), f16/bf16 to 1e-2 (one rounding of the output).
// Outputs come from a poisoned allocator cache (NaN), so unwritten elements fail. Skips without a GPU.
import { describe, expect, it } from 'vitest';
import {
  Tensor, abs, add, affine, cast, detach, div, empty, eq, ge, gt, interpolate, kernel, le, lt, maximum, minimum, mul, ne,
  pow, rand, randn, sub, sum, mean, max, min, argmax, argmin, tensor, transpose, unaryOp, where, full,
} from '@qdm/core';
import type { DType } from '@qdm/core';
import { ReduceOp, UnaryOp, type UnaryOpName } from '../../src/backend/opcodes.js';
import { compareOp, cudaAvailable, poison, relErr, skipNote } from './harness.js';

const HALVES: DType[] = ['f32', 'f16', 'bf16'];
const tolFor = (dt: DType, f32 = 1e-5) => (dt === 'f32' ? f32 : dt === 'f16' ? 4e-3 : 2e-2);
let seed = 1000;
const rn = (shape: number[]) => randn(shape, { seed: seed++ });
/** Small integers (many exact ties), as f32. */
const ints = (shape: number[]) => rn(shape).mul(2).round();
function bytesOf(t: Tensor): Uint8Array { const d = t.cpuData(); return new Uint8Array(d.buffer, d.byteOffset, d.byteLength); }

describe.skipIf(!cudaAvailable)(`CUDA elementwise vs CPU${skipNote}`, () => {
  it('binary ops in f32/f16/bf16, broadcasting and strided operands', () => {
    const ops: Record<string, (a: Tensor, b: Tensor) => Tensor> = {
      add, sub, mul, div: (a, b) => div(a, add(abs(b), 0.5)), pow: (a, b) => pow(add(abs(a), 0.25), b), maximum, minimum,
      eq, ne, lt, le, gt, ge,
    };
    for (const dt of HALVES) {
      for (const [name, f] of Object.entries(ops)) {
        const tieful = ['maximum', 'minimum', 'eq', 'ne', 'lt', 'le', 'gt', 'ge'].includes(name);
        const mk = tieful ? ints : rn;
        // Views are made inside the compared function: inputs travel to the GPU packed.
        const T = (t: Tensor) => transpose(t, 0, 1);
        const cases: Array<[string, Tensor, Tensor, (a: Tensor, b: Tensor) => Tensor]> = [
          ['same shape', mk([37, 41]), mk([37, 41]), f],
          ['broadcast', mk([4, 1, 33]), mk([7, 1]), f],
          ['scalar', mk([5, 9]), mk([]), f],
          ['strided', mk([29, 31]), mk([62, 29]), (a, b) => f(T(a), b.slice(0, 0, 62, 2))],
        ];
        for (const [label, a, b, g] of cases) {
          const r = compareOp(g, [a, b], { dtype: dt, tol: tolFor(dt, 2e-5) });
          expect(r.err, `${name} ${dt} ${label}`).toBeLessThanOrEqual(tolFor(dt, 2e-5));
        }
      }
    }
  });

  it('every unary op and its backward, in f32/f16/bf16, contiguous and strided', () => {
    const positive = new Set<UnaryOpName>(['log', 'sqrt', 'rsqrt', 'log1p', 'pows', 'recip']);
    const params: Partial<Record<UnaryOpName, [number, number]>> = { clamp: [-0.5, 0.7], affine: [1.7, -0.3], pows: [2.5, 0] };
    for (const dt of HALVES) {
      for (const name of Object.keys(UnaryOp) as UnaryOpName[]) {
        const [p0, p1] = params[name] ?? [0, 0];
        const base = rn([23, 45]);
        const x = positive.has(name) ? add(abs(base), 0.2) : base;
        const T = (t: Tensor) => transpose(t, 0, 1);  // a strided operand, made on each device
        const g = rn([45, 23]);
        for (const [label, view] of [['contiguous', (t: Tensor) => t], ['strided', T]] as const) {
          const fwd = compareOp((t) => unaryOp(name, view(t), p0, p1), [x], { dtype: dt });
          expect(fwd.err, `${name} ${dt} ${label}`).toBeLessThanOrEqual(tolFor(dt, 2e-5));
        }
        const bwd = compareOp((t, gt_) => {
          const xl = detach(t).requiresGrad_();
          unaryOp(name, T(xl), p0, p1).backward(gt_);
          return xl.grad!;
        }, [x, g], { dtype: dt });
        expect(bwd.err, `${name} backward ${dt}`).toBeLessThanOrEqual(tolFor(dt, 2e-5));
      }
    }
  });

  it('where with broadcasting, in every float dtype', () => {
    for (const dt of HALVES) {
      const r = compareOp((c, a, b) => where(gt(c, 0), a, b), [rn([6, 1, 17]), rn([5, 17]), rn([6, 5, 1])], { dtype: dt });
      expect(r.err, dt).toBe(0);
    }
  });

  it('casts and fills every dtype exactly as the CPU (strided sources included)', () => {
    const all: DType[] = ['f32', 'f16', 'bf16', 'i8', 'u8', 'i32', 'i64', 'f8e4m3'];
    const src = rn([19, 23]).mul(40);  // spans fp8 saturation and integer clipping
    for (const from of all) {
      const h = cast(src, from);
      const d = h.to('cuda');
      for (const to of all) {
        const ref = cast(transpose(h, 0, 1), to).contiguous();
        const got = poison(empty([23, 19], to, 'cuda'));
        kernel('copyCast', transpose(d, 0, 1), got);
        expect(Buffer.compare(bytesOf(got.to('cpu')), bytesOf(ref)), `${from} -> ${to}`).toBe(0);
      }
      const f = full([7, 3], -3.7, { dtype: from, device: 'cuda' });
      expect(Buffer.compare(bytesOf(f.to('cpu')), bytesOf(full([7, 3], -3.7, { dtype: from }))), `fill ${from}`).toBe(0);
    }
  });

  it('reductions over any dims, strided input, arg ops, and the long two-pass case', () => {
    const dimsList: Array<number[] | undefined> = [undefined, [0], [1], [2], [0, 2], [1, 2]];
    for (const dt of HALVES) {
      for (const dims of dimsList) {
        const cases = [['contiguous', rn([6, 50, 33]), (t: Tensor) => t], ['strided', rn([33, 50, 6]), (t: Tensor) => transpose(t, 0, 2)]] as const;
        for (const [label, x, view] of cases) {
          for (const [name, f] of Object.entries({ sum, mean, max, min })) {
            const r = compareOp((t) => f(view(t), dims), [x], { dtype: dt });
            expect(r.err, `${name} ${dt} ${label} dims ${JSON.stringify(dims)}`).toBeLessThanOrEqual(tolFor(dt));
          }
        }
      }
      for (const d of [0, 1, 2]) {
        const x = ints([6, 50, 33]);  // ties: the lowest index must win on both devices
        expect(compareOp((t) => argmax(t, d), [x], { dtype: dt }).err, `argmax ${dt} ${d}`).toBe(0);
        expect(compareOp((t) => argmin(t, d), [x], { dtype: dt }).err, `argmin ${dt} ${d}`).toBe(0);
      }
    }
    // Few outputs, long rows: the fixed two-pass split (K < 64, R > 65536).
    const long = rand([3, 200_003], { seed: 5 }).add(0.5);
    expect(compareOp((t) => sum(t, 1), [long]).err).toBeLessThanOrEqual(1e-5);
    expect(compareOp((t) => argmax(t, 1), [long]).err).toBe(0);
    expect(compareOp((t) => max(t), [long]).err).toBe(0);
    // sumsq and prod have no public op of their own: call the kernel.
    for (const op of ['sumsq', 'prod'] as const) {
      const x = op === 'prod' ? affine(rn([8, 40]), 0.01, 1) : rn([8, 40]);
      const r = compareOp((t) => { const o = empty([8], 'f32', t.device); kernel('reduce', ReduceOp[op], t, [1], o); return o; }, [x]);
      expect(r.err, op).toBeLessThanOrEqual(1e-5);
    }
  });

  it('reduce is deterministic: the same input gives the same bits twice', () => {
    const x = rn([2, 300_000]).to('cuda');
    const a = sum(x, 1).to('cpu'), b = sum(x, 1).to('cpu');
    expect(Buffer.compare(bytesOf(a), bytesOf(b))).toBe(0);
  });

  it('random numbers equal the CPU stream for the same seed and offset', () => {
    for (const dist of [0, 1]) {
      const n = 100_003;
      const cpu = empty([n], 'f32');
      kernel('random', dist, cpu, 0x1234, 0x9abcdef, 77, dist ? 0.5 : -2, dist ? 3 : 5);
      const gpu = poison(empty([n], 'f32', 'cuda'));
      kernel('random', dist, gpu, 0x1234, 0x9abcdef, 77, dist ? 0.5 : -2, dist ? 3 : 5);
      const g = gpu.data() as Float32Array, c = cpu.data() as Float32Array;
      let worst = 0;
      for (let i = 0; i < n; ++i) worst = Math.max(worst, Math.abs(g[i]! - c[i]!) / Math.max(1, Math.abs(c[i]!)));
      expect(worst, `dist ${dist}`).toBeLessThanOrEqual(1e-6);
    }
  });

  it('indexRows / indexAddRows match the CPU bit for bit (repeated indices)', () => {
    const src = rn([50, 64]);
    const idxVals = Array.from({ length: 120 }, (_, i) => (i * 37) % 50);
    const idx = tensor(idxVals, { dtype: 'i64' });
    const outC = empty([120, 64]);
    kernel('indexRows', src, idx, outC);
    const outG = poison(empty([120, 64], 'f32', 'cuda'));
    kernel('indexRows', src.to('cuda'), idx.to('cuda'), outG);
    expect(Buffer.compare(bytesOf(outG.to('cpu')), bytesOf(outC))).toBe(0);
    const g = rn([120, 64]);
    const accC = full([50, 64], 0);
    kernel('indexAddRows', g, idx, accC);
    const accG = full([50, 64], 0, { device: 'cuda' });
    kernel('indexAddRows', g.to('cuda'), idx.to('cuda'), accG);
    expect(Buffer.compare(bytesOf(accG.to('cpu')), bytesOf(accC))).toBe(0);
  });

  type UpsampleCase = { scaleFactor?: number; size?: [number, number]; alignCorners?: boolean };
  const UPSAMPLE_SIZES: UpsampleCase[] = [{ scaleFactor: 2 }, { size: [11, 7] }, { size: [3, 4] }];
  const UPSAMPLE: Array<['nearest' | 'bilinear', string, UpsampleCase[]]> = [
    ['nearest', 'nearest upsampling and its gradient (integer and fractional scales)', UPSAMPLE_SIZES],
    ['bilinear', 'bilinear upsampling and its gradient (align corners or not, up and down)', [...UPSAMPLE_SIZES, { size: [9, 13], alignCorners: true }]],
  ];
  for (const [mode, title, cases] of UPSAMPLE) {
    it(title, () => {
      for (const dt of HALVES) {
        for (const opts of cases) {
          const r = compareOp((x, g) => {
            const xl = detach(x).requiresGrad_();
            const y = interpolate(xl, { ...opts, mode });
            y.backward(g.shape.every((d, i) => d === y.shape[i]) ? g : full(y.shape, 1, { dtype: y.dtype, device: y.device }));
            return [y, xl.grad!];
          }, [rn([2, 3, 5, 6]), rn([2, 3, 10, 12])], { dtype: dt });
          expect(r.err, `${dt} ${JSON.stringify(opts)}`).toBeLessThanOrEqual(tolFor(dt));
        }
      }
    });
  }

  it('half-precision ops stay in their dtype on the GPU (no f32 round trip)', () => {
    const x = cast(rn([64]), 'f16').to('cuda');
    const y = unaryOp('silu', x);
    expect(y.dtype).toBe('f16');
    expect(relErr(y.data(), unaryOp('silu', x.to('cpu')).data())).toBeLessThanOrEqual(4e-3);
  });
});
