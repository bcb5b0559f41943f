import { describe, expect, it } from 'vitest';
import { ArgumentError, tensor, withContext, noGrad, randn } from '@qdm/core';
import { ActivationQuantizer, SeparableScales, WeightQuantizer, fakeQuant, fitScaleZero, resolveSpec, quantRange, rangeToScaleZero } from '@qdm/quant';
import { gauss, rng, vals } from './helpers.js';

const lp = (a: Float32Array, b: Float32Array) => { let s = 0; for (let i = 0; i < a.length; i++) s += Math.abs(a[i]! - b[i]!) ** 2.4; return s; };

describe('QuantSpec', () => {
  it('fills the documented defaults and integer ranges', () => {
    const s = resolveSpec({ bits: 4, granularity: 'channel' });
    expect(s).toMatchObject({ signed: false, symmetric: false, channelAxis: 0, groupSize: 128, timestepGroups: 1, qmin: 0, qmax: 15 });
    expect(quantRange(4, true)).toEqual({ qmin: -8, qmax: 7 });
    expect(resolveSpec({ bits: 8, granularity: 'tensor', symmetric: true })).toMatchObject({ signed: true, qmin: -128, qmax: 127 });
  });
  it('names the bad field in an ArgumentError', () => {
    expect(() => resolveSpec({ bits: 9, granularity: 'tensor' })).toThrow(ArgumentError);
    expect(() => resolveSpec({ bits: 9, granularity: 'tensor' })).toThrow(/QuantSpec\.bits/);
    expect(() => resolveSpec({ bits: 4, granularity: 'rows' as never })).toThrow(/QuantSpec\.granularity/);
    expect(() => resolveSpec({ bits: 4, granularity: 'group', groupSize: 0 })).toThrow(/QuantSpec\.groupSize/);
    expect(() => resolveSpec({ bits: 4, granularity: 'tensor', timestepGroups: 1.5 })).toThrow(/QuantSpec\.timestepGroups/);
    expect(() => resolveSpec({ bits: 4, granularity: 'tensor', symmetric: true, signed: false })).toThrow(/QuantSpec\.signed/);
    expect(() => resolveSpec({ bits: 4, granularity: 'tensor', bit: 3 } as never)).toThrow(/QuantSpec\.bit: unknown field/);
  });
  it('derives scale and zero point as EfficientDM (unsigned) and TuneQDM (signed)', () => {
    const u = rangeToScaleZero(-1, 3, resolveSpec({ bits: 4, granularity: 'tensor' }));
    expect(u.scale).toBeCloseTo(4 / 15, 7);
    expect(u.zero).toBe(Math.round(1 / (4 / 15)));
    const s = rangeToScaleZero(-1, 3, resolveSpec({ bits: 4, granularity: 'tensor', signed: true }));
    expect(s.zero).toBe(-8 - Math.round(-1 / s.scale));
  });
});

describe('WeightQuantizer', () => {
  const r = rng(1);
  const w = tensor(Float32Array.from({ length: 6 * 20 }, () => gauss(r) * 0.2), { shape: [6, 20] });

  it('initialises per output channel from min/max', () => {
    const q = new WeightQuantizer({ bits: 4, granularity: 'channel' }, w.shape).initFrom(w);
    const wd = vals(w), d = vals(q.delta), z = vals(q.zero_point);
    for (let o = 0; o < 6; o++) {
      const row = wd.subarray(o * 20, o * 20 + 20);
      const lo = Math.min(0, ...row), hi = Math.max(0, ...row);
      expect(d[o]).toBeCloseTo((hi - lo) / 15, 6);
      expect(z[o]).toBe(Math.round(-lo / d[o]!));
    }
    expect(q.delta.requiresGrad).toBe(true);
    expect(q.zero_point.requiresGrad).toBe(false);
  });

  it("'mse' init never does worse than min/max under the Lp 2.4 loss", () => {
    const mm = new WeightQuantizer({ bits: 3, granularity: 'channel' }, w.shape).initFrom(w);
    const mse = new WeightQuantizer({ bits: 3, granularity: 'channel' }, w.shape, { init: 'mse' }).initFrom(w);
    const e1 = lp(vals(w), vals(noGrad(() => mm.call(w)))), e2 = lp(vals(w), vals(noGrad(() => mse.call(w))));
    expect(e2).toBeLessThan(e1);
  });

  it('supports per-tensor and per-group scales and passes LSQ gradients to delta', () => {
    const g = new WeightQuantizer({ bits: 4, granularity: 'group', groupSize: 5 }, w.shape).initFrom(w);
    expect(g.delta.shape).toEqual([24]);
    const y = g.call(w);
    y.sum().backward();
    expect(g.delta.grad!.shape).toEqual([24]);
    expect(() => new WeightQuantizer({ bits: 4, granularity: 'group', groupSize: 7 }, w.shape)).toThrow(/groupSize/);
  });
});

describe('ActivationQuantizer (temporal)', () => {
  const make = () => {
    const q = new ActivationQuantizer({ bits: 8, granularity: 'tensor', timestepGroups: 3 });
    (q.delta.cpuData() as Float32Array).set([0.1, 0.5, 1.0]);
    return q;
  };
  const x = tensor([0.37], { shape: [1] });

  it('picks the table entry from withContext({ stepIndex }), not from a call count', () => {
    const q = make();
    const at = (step: number) => withContext({ stepIndex: step }, () => q.call(x).item());
    expect(at(2)).toBe(0);
    expect(at(0)).toBeCloseTo(0.4, 6);
    expect(at(0)).toBeCloseTo(0.4, 6);  // a repeated call at the same step uses the same entry
    expect(at(1)).toBeCloseTo(0.5, 6);
  });

  it('fails clearly without a step index, or falls back to entry 0 when asked', () => {
    expect(() => make().call(x)).toThrow(ArgumentError);
    expect(() => make().call(x)).toThrow(/needs the step index/);
    expect(() => withContext({ stepIndex: 3 }, () => make().call(x))).toThrow(/outside the temporal table/);
    const q = new ActivationQuantizer({ bits: 8, granularity: 'tensor', timestepGroups: 3 }, { missingStep: 'first' });
    (q.delta.cpuData() as Float32Array).set([0.1, 0.5, 1.0]);
    expect(q.call(x).item()).toBeCloseTo(0.4, 6);
  });

  it('sends the gradient to the active entry only', () => {
    const q = make();
    const xi = tensor([0.37, 9.0], { shape: [2] });
    withContext({ stepIndex: 1 }, () => q.call(xi)).sum().backward();
    const g = vals(q.delta.grad!);
    expect(g[0]).toBe(0); expect(g[2]).toBe(0);
    expect(g[1]).not.toBe(0);
  });

  it('calibrates one range per step from batches filed under their step index', () => {
    const q = new ActivationQuantizer({ bits: 8, granularity: 'tensor', timestepGroups: 2 }, { calibrator: 'minmax' });
    withContext({ stepIndex: 0 }, () => q.observe(tensor([-1, 1], { shape: [2] })));
    withContext({ stepIndex: 1 }, () => q.observe(tensor([-4, 4], { shape: [2] })));
    q.finishCalibration();
    const d = vals(q.delta);
    expect(d[0]).toBeCloseTo(2 / 255, 7);
    expect(d[1]).toBeCloseTo(8 / 255, 7);
  });

  it("'running' calibration is Q-Diffusion's EMA (momentum 0.95) of the batch min/max", () => {
    const q = new ActivationQuantizer({ bits: 8, granularity: 'tensor' }, { calibrator: 'running' });
    q.observe(tensor([-1, 1], { shape: [2] }));
    q.observe(tensor([-3, 5], { shape: [2] }));
    q.finishCalibration();
    const lo = -1 * 0.95 - 3 * 0.05, hi = 1 * 0.95 + 5 * 0.05;
    expect(q.delta.item()).toBeCloseTo((hi - lo) / 255, 7);
    expect(q.zero_point.item()).toBe(Math.round(-lo / Math.fround((hi - lo) / 255)));
  });

  it('percentile calibration clips outliers', () => {
    const q = new ActivationQuantizer({ bits: 8, granularity: 'tensor' }, { calibrator: 'percentile', percentile: 0.99 });
    const vals = Float32Array.from({ length: 10000 }, (_, i) => (i === 0 ? 1000 : (i % 100) / 100));
    q.observe(tensor(vals, { shape: [vals.length] }));
    q.finishCalibration();
    expect(q.delta.item()).toBeLessThan(2 / 255);
  });

  it('rejects non-tensor granularity', () => {
    expect(() => new ActivationQuantizer({ bits: 8, granularity: 'channel' })).toThrow(ArgumentError);
  });
});

describe('SeparableScales (TuneQDM)', () => {
  const w = randn([4, 3, 2, 2], { seed: 5 });
  const spec = { bits: 4, granularity: 'separable' as const, signed: true, timestepGroups: 4 };

  it('initialises delta_out per row, delta_in to 1, and matches per-channel quantization', () => {
    const s = new SeparableScales(spec, w.shape).initFrom(w);
    expect(s.delta_out.shape).toEqual([4, 4]);
    expect(Array.from(vals(s.delta_in))).toEqual(new Array(12).fill(1));
    const y = withContext({ timestep: 10 }, () => s.call(w));
    const ref = fakeQuant(w, { scale: tensor(vals(s.delta_out).subarray(0, 4), { shape: [4] }), zeroPoint: s.zero_point, qmin: -8, qmax: 7, granularity: 'channel' });
    expect(Array.from(vals(y))).toEqual(Array.from(vals(ref)));
  });

  it('picks expert k = min(N-1, floor(t·N/T)) and trains only that expert', () => {
    const s = new SeparableScales(spec, w.shape).initFrom(w);
    expect(withContext({ timestep: 999 }, () => s.expertIndex())).toBe(3);
    expect(withContext({ timestep: 250 }, () => s.expertIndex())).toBe(1);
    expect(withContext({ timestep: 249, numTrainTimesteps: 1000 }, () => s.expertIndex())).toBe(0);
    expect(() => s.expertIndex()).toThrow(/need the timestep/);
    withContext({ timestep: 600 }, () => s.call(w)).square().sum().backward();
    const gOut = vals(s.delta_out.grad!), gIn = vals(s.delta_in.grad!);
    for (let k = 0; k < 4; k++) {
      const rowNorm = Math.hypot(...gOut.subarray(k * 4, k * 4 + 4)), colNorm = Math.hypot(...gIn.subarray(k * 3, k * 3 + 3));
      if (k === 2) { expect(rowNorm).toBeGreaterThan(0); expect(colNorm).toBeGreaterThan(0); }
      else { expect(rowNorm).toBe(0); expect(colNorm).toBe(0); }
    }
  });
});

describe('MSE range search: native sums vs the JS reference', () => {
  // Heavy-tailed data (a few outliers), so the search really clips: the chosen factor is not 1.
  const data = (n: number, seed: number) => {
    const r = rng(seed);
    return Float32Array.from({ length: n }, (_, i) => gauss(r) * (i % 211 === 0 ? 12 : 1) + 0.3);
  };
  for (const [label, spec] of [
    ['8-bit asymmetric', { bits: 8, granularity: 'tensor' as const }],
    ['4-bit symmetric', { bits: 4, granularity: 'tensor' as const, symmetric: true }],
    ['6-bit unsigned', { bits: 6, granularity: 'tensor' as const, signed: false }],
  ] as const) {
    it(`${label}: per tensor and per row, the native kernel picks the same (scale, zero) as the JS loop`, () => {
      const resolved = resolveSpec(spec);
      const x = data(20000, 7);
      const a = fitScaleZero(x, 1, () => 0, resolved, 'mse'), b = fitScaleZero(x, 1, () => 0, resolved, 'mse', { js: true });
      expect(Array.from(a.scale)).toEqual(Array.from(b.scale));
      expect(Array.from(a.zero)).toEqual(Array.from(b.zero));
      const minmax = fitScaleZero(x, 1, () => 0, resolved, 'minmax');
      expect(a.scale[0]!).toBeLessThan(minmax.scale[0]!);  // the outliers are clipped
      const rows = 7, per = 4099;
      const w = data(rows * per, 8);
      const c = fitScaleZero(w, rows, (i) => Math.floor(i / per), resolved, 'mse', { rowLength: per });
      const d = fitScaleZero(w, rows, (i) => Math.floor(i / per), resolved, 'mse', { js: true });
      expect(Array.from(c.scale)).toEqual(Array.from(d.scale));
      expect(Array.from(c.zero)).toEqual(Array.from(d.zero));
    });
  }
  it('WeightQuantizer with init mse on a [O, C, 3, 3] weight uses the native sums (same result as the JS loop)', () => {
    const w = randn([16, 32, 3, 3], { seed: 4 });
    const q = new WeightQuantizer({ bits: 4, granularity: 'channel' }, w.shape, { init: 'mse' }).initFrom(w);
    const ref = fitScaleZero(vals(w), 16, (i) => Math.floor(i / 288), resolveSpec({ bits: 4, granularity: 'channel' }), 'mse', { js: true });
    expect(Array.from(vals(q.delta))).toEqual(Array.from(ref.scale));
    expect(Array.from(vals(q.zero_point))).toEqual(Array.from(ref.zero));
  });
});
