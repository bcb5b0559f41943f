import { describe, expect, it } from 'vitest';
import { tensor, Tensor } from '@qdm/core';
import { dequantizeCodes, fakeQuant, packTensor, quantizeCodes, type FakeQuantParams } from '@qdm/quant';
import { makeCase, refForward, rng, roundHalfEven, scaleAt, surrogate, vals, type Case } from './helpers.js';

function params(c: Case, grads = false): FakeQuantParams {
  const pshape = [c.scale.length];
  const scale = tensor(c.scale, { shape: pshape }), zeroPoint = tensor(c.zero, { shape: pshape });
  const colScale = c.col ? tensor(c.col, { shape: [c.col.length] }) : null;
  if (grads) { scale.requiresGrad = true; zeroPoint.requiresGrad = true; if (colScale) colScale.requiresGrad = true; }
  return { scale, zeroPoint, colScale, qmin: c.qmin, qmax: c.qmax, granularity: c.granularity, channelAxis: c.channelAxis, groupSize: c.groupSize };
}

const CASES: Array<[string, (bits: number, signed: boolean, seed: number) => Case]> = [
  ['tensor', (b, s, seed) => makeCase('tensor', [6, 7, 5], b, s, seed)],
  ['channel axis 0', (b, s, seed) => makeCase('channel', [8, 3, 3, 3], b, s, seed)],
  ['channel axis 1', (b, s, seed) => makeCase('channel', [4, 6, 10], b, s, seed, { channelAxis: 1 })],
  ['group', (b, s, seed) => makeCase('group', [5, 16], b, s, seed, { groupSize: 8 })],
  ['separable', (b, s, seed) => makeCase('separable', [6, 3, 2, 2], b, s, seed)],
];

describe('fakeQuant forward', () => {
  for (const [name, mk] of CASES) {
    for (const bits of [2, 4, 8]) {
      for (const signed of [false, true]) {
        it(`${name}, ${bits} bits, ${signed ? 'signed' : 'unsigned'} matches the float64 reference exactly`, () => {
          const c = mk(bits, signed, bits * 10 + (signed ? 1 : 0));
          const y = vals(fakeQuant(tensor(c.x, { shape: c.shape }), params(c)));
          const ref = refForward(c);
          let bad = 0;
          for (let i = 0; i < ref.length; i++) if (y[i] !== ref[i]) bad++;
          expect(bad).toBe(0);
          // both branches of the clip are exercised
          let clipped = 0;
          for (let i = 0; i < ref.length; i++) {
            const code = roundHalfEven(Math.fround(c.x[i]! / scaleAt(c, i))) + c.zero[c.param(i)]!;
            if (code < c.qmin || code > c.qmax) clipped++;
          }
          expect(clipped).toBeGreaterThan(0);
          expect(clipped).toBeLessThan(ref.length);
        });
      }
    }
  }

  it('rounds half to even as torch.round', () => {
    const x = tensor([0.5, 1.5, 2.5, -0.5, -1.5, -2.5], { shape: [6] });
    const y = fakeQuant(x, { scale: tensor([1]), zeroPoint: tensor([0]), qmin: -8, qmax: 7, granularity: 'tensor' });
    expect(Array.from(vals(y))).toEqual([0, 2, 2, 0, -2, -2]);
  });

  it('keeps half-precision inputs in their dtype', () => {
    const x = tensor([0.3, -1.2, 2.6], { shape: [3] }).to('f16');
    const y = fakeQuant(x, { scale: tensor([0.5]), zeroPoint: tensor([0]), qmin: -4, qmax: 3, granularity: 'tensor' });
    expect(y.dtype).toBe('f16');
    expect(Array.from(vals(y))).toEqual([0.5, -1, 1.5]);
  });

  it('rejects parameters of the wrong size with a ShapeError naming them', () => {
    const x = tensor(new Float32Array(12), { shape: [3, 4] });
    expect(() => fakeQuant(x, { scale: tensor([1, 1]), zeroPoint: tensor([0, 0]), qmin: 0, qmax: 15, granularity: 'channel' })).toThrow(/scale \[2\] has 2 entries, expected 3/);
    expect(() => fakeQuant(x, { scale: tensor([1]), zeroPoint: tensor([0]), qmin: 0, qmax: 15, granularity: 'group', groupSize: 3 })).toThrow(/group size 3/);
    expect(() => fakeQuant(x, { scale: tensor([1, 1, 1]), zeroPoint: tensor([0, 0, 0]), qmin: 0, qmax: 15, granularity: 'separable' })).toThrow(/colScale is required/);
  });
});

describe('fakeQuant gradients (LSQ / EfficientDM)', () => {
  for (const [name, mk] of CASES) {
    for (const [bits, signed] of [[2, false], [4, true], [8, false]] as const) {
      it(`${name}, ${bits} bits: x, scale${name === 'separable' ? ', column scale' : ''} and zero point match finite differences of the STE surrogate`, () => {
        const c = mk(bits, signed, 100 + bits);
        const r = rng(7);
        const w = new Float64Array(c.x.length).map(() => r() - 0.5);
        const q = params(c, true);
        const x = tensor(c.x, { shape: c.shape }); x.requiresGrad = true;
        const y = fakeQuant(x, q);
        y.mul(tensor(Float32Array.from(w), { shape: c.shape })).sum().backward();
        const base = { x: Float64Array.from(c.x), s: Float64Array.from(c.scale), col: c.col ? Float64Array.from(c.col) : null, z: Float64Array.from(c.zero) };
        const f = (o: typeof base) => surrogate(c, w, o.x, o.s, o.col, o.z);
        const check = (key: 'x' | 's' | 'col' | 'z', got: Tensor) => {
          const g = vals(got);
          const arr = base[key]!;
          let worst = 0;
          for (let i = 0; i < arr.length; i++) {
            const h = 1e-4 * Math.max(1e-2, Math.abs(arr[i]!));
            const plus = { ...base, [key]: Float64Array.from(arr) }; plus[key]![i] += h;
            const minus = { ...base, [key]: Float64Array.from(arr) }; minus[key]![i] -= h;
            const fd = (f(plus) - f(minus)) / (2 * h);
            worst = Math.max(worst, Math.abs(fd - g[i]!) / (1e-3 + Math.abs(fd)));
          }
          expect(worst, `${key}`).toBeLessThan(2e-3);
        };
        check('x', x.grad!);
        check('s', q.scale.grad!);
        check('z', q.zeroPoint.grad!);
        if (q.colScale) check('col', q.colScale.grad!);
      });
    }
  }

  it('computes no gradient for inputs that do not require it', () => {
    const c = makeCase('channel', [4, 5], 4, false, 3);
    const q = params(c);
    q.scale.requiresGrad = true;
    const y = fakeQuant(tensor(c.x, { shape: c.shape }), q);
    y.sum().backward();
    expect(q.scale.grad).not.toBeNull();
    expect(q.zeroPoint.grad).toBeNull();
  });

  it('gives the same gradients whatever the thread count (fixed reduction order)', async () => {
    const { setNumThreads, getNumThreads } = await import('@qdm/core');
    const c = makeCase('tensor', [300, 200], 4, false, 9);
    const run = () => {
      const q = params(c, true);
      fakeQuant(tensor(c.x, { shape: c.shape }), q).sum().backward();
      return [q.scale.grad!.item(), q.zeroPoint.grad!.item()];
    };
    const prev = getNumThreads();
    setNumThreads(1); const a = run();
    setNumThreads(2); const b = run();
    setNumThreads(prev);
    expect(b).toEqual(a);
  });
});

describe('quantize / pack / dequantize', () => {
  for (const [name, mk] of CASES) {
    for (const [bits, signed] of [[2, false], [4, false], [4, true], [8, false], [8, true]] as const) {
      it(`${name}, ${bits} bits ${signed ? 'signed' : 'unsigned'}: dequantize(pack(x)) equals fakeQuant(x) exactly`, () => {
        const c = mk(bits, signed, 200 + bits);
        const q = params(c);
        const x = tensor(c.x, { shape: c.shape });
        const packed = packTensor(x, q);
        expect(packed.codes.dtype).toBe(bits <= 4 ? 'i4' : signed ? 'i8' : 'u8');
        const back = dequantizeCodes(packed.codes, { ...q, zeroPoint: packed.zeroPoint });
        expect(Array.from(vals(back))).toEqual(Array.from(vals(fakeQuant(x, q))));
      });
    }
  }

  it('packs int4 two per byte, low nibble first, and unpacks them back', () => {
    const x = tensor([-8, -1, 0, 7, 3, -5, 1], { shape: [7] });
    const q: FakeQuantParams = { scale: tensor([1]), zeroPoint: tensor([0]), qmin: -8, qmax: 7, granularity: 'tensor' };
    const codes = quantizeCodes(x, q, 'i4');
    expect(Array.from(codes.cpuData() as Uint8Array)).toEqual([0xf8, 0x70, 0xb3, 0x01]);
    expect(Array.from(codes.toArray() as number[])).toEqual([-8, -1, 0, 7, 3, -5, 1]);
    expect(Array.from(vals(dequantizeCodes(codes, q)))).toEqual([-8, -1, 0, 7, 3, -5, 1]);
  });

  it('refuses a range that does not fit the code dtype', () => {
    const x = tensor([1, 2], { shape: [2] });
    expect(() => quantizeCodes(x, { scale: tensor([1]), zeroPoint: tensor([0]), qmin: 0, qmax: 15, granularity: 'tensor' }, 'i4')).toThrow(/does not fit i4/);
  });
});
