// AdaRound / BRECQ: the rectified-sigmoid initialisation reproduces the weight, the regulariser
// and β schedule follow the formulas, and learned rounding beats nearest rounding on held-out
// inputs (a comparison that can fail), per layer and per block.
import { describe, expect, it } from 'vitest';
import { ArgumentError, Module, Tensor, nn, noGrad, randn, mean, silu, Generator } from '@qdm/core';
import { AdaRoundWeight, WeightQuantizer, annealedBeta, fakeQuant, quantize, reconstructWeights, isQuantLayer, type QuantRecipe } from '@qdm/quant';
import { vals } from './helpers.js';

class Block extends Module {
  conv1: nn.Conv2d; conv2: nn.Conv2d;
  constructor(c: number, generator: Generator) {
    super();
    this.conv1 = this.registerModule('conv1', new nn.Conv2d(c, c, 3, { padding: 1, generator }));
    this.conv2 = this.registerModule('conv2', new nn.Conv2d(c, c, 3, { padding: 1, generator }));
  }
  forward(x: Tensor): Tensor { return this.conv2.call(silu(this.conv1.call(x))); }
}
class Net extends Module {
  conv_in: nn.Conv2d; blocks: nn.ModuleList<Block>; out: nn.Linear;
  constructor(seed = 3) {
    super();
    const generator = new Generator(seed);
    this.conv_in = this.registerModule('conv_in', new nn.Conv2d(3, 16, 3, { padding: 1, generator }));
    this.blocks = this.registerModule('blocks', new nn.ModuleList([new Block(16, generator), new Block(16, generator)]));
    this.out = this.registerModule('out', new nn.Linear(16, 10, { generator }));
  }
  forward(x: Tensor): Tensor {
    let h = silu(this.conv_in.call(x));
    for (const b of this.blocks) h = silu(b.call(h));
    return this.out.call(mean(h, [2, 3]));
  }
}

const calib = Array.from({ length: 6 }, (_, i) => [randn([4, 3, 8, 8], { seed: 10 + i })]);
const heldOut = randn([8, 3, 8, 8], { seed: 99 });
const mse = (a: Tensor, b: Tensor) => { const x = vals(a), y = vals(b); let s = 0; for (let i = 0; i < x.length; i++) s += (x[i]! - y[i]!) ** 2; return s / x.length; };
const W4: QuantRecipe = { weights: { bits: 4, granularity: 'channel' }, firstLastBits: null };

async function heldOutError(recipe: QuantRecipe): Promise<{ err: number; summary: Awaited<ReturnType<typeof quantize>>['summary']; model: Net }> {
  const fp = new Net(), model = new Net();
  const ref = noGrad(() => fp.call(heldOut));
  const { summary } = await quantize(model, recipe, { calibration: calib });
  return { err: mse(noGrad(() => model.call(heldOut)), ref), summary, model };
}

describe('AdaRound', () => {
  it('starts at the float weight (soft mode) and rounds to integer codes (hard mode)', () => {
    const w = randn([8, 5], { seed: 1 });
    // Symmetric: every W/Δ lies inside [qmin, qmax], so the soft weight equals W without clamping.
    const q = new WeightQuantizer({ bits: 4, granularity: 'channel', symmetric: true }, w.shape).initFrom(w);
    const a = new AdaRoundWeight(w, q);
    const soft = vals(noGrad(() => a.weight(false))), ref = vals(w);
    for (let i = 0; i < ref.length; i++) expect(Math.abs(soft[i]! - ref[i]!)).toBeLessThan(2e-3 * Math.abs(vals(q.delta)[Math.floor(i / 5)]!) + 1e-6);
    const hard = noGrad(() => a.weight(true));
    const again = vals(noGrad(() => fakeQuant(hard, q.params())));
    const h = vals(hard);
    for (let i = 0; i < h.length; i++) expect(again[i]).toBeCloseTo(h[i]!, 6);  // codes: fake quant maps them to themselves
    // regulariser: Σ(1 - |2h - 1|^β) is between 0 and n, and 0 for saturated h
    const r = noGrad(() => a.regularizer(2)).item();
    expect(r).toBeGreaterThan(0);
    expect(r).toBeLessThanOrEqual(40);
  });
  it('anneals β from 20 to 2 after the warm-up', () => {
    expect(annealedBeta(0, 100, 0.2, 20, 2)).toBeNull();
    expect(annealedBeta(19, 100, 0.2, 20, 2)).toBeNull();
    expect(annealedBeta(20, 100, 0.2, 20, 2)).toBeCloseTo(20);
    expect(annealedBeta(99, 100, 0.2, 20, 2)).toBeCloseTo(2);
  });
  it('layer reconstruction gives a lower held-out error than nearest rounding at W4', async () => {
    const nearest = await heldOutError(W4);
    const learned = await heldOutError({ ...W4, rounding: 'adaround', reconstruction: { granularity: 'layer', iters: 300, lr: 1e-2 } });
    const units = learned.summary.reconstruction!.units;
    expect(units.length).toBe(6);
    for (const u of units) expect(u.mseLearned).toBeLessThanOrEqual(u.mseNearest * 1.05);
    expect(units.some((u) => u.flipped > 0)).toBe(true);
    expect(learned.err).toBeLessThan(nearest.err);
  }, 120_000);
  it('block reconstruction (BRECQ) learns the rounding of a block jointly', async () => {
    const nearest = await heldOutError(W4);
    const learned = await heldOutError({ ...W4, rounding: 'adaround', reconstruction: { granularity: 'block', blocks: /^blocks\.\d+$/, iters: 300, lr: 1e-2 } });
    const units = learned.summary.reconstruction!.units;
    expect(units.map((u) => u.unit)).toEqual(['conv_in', 'blocks.0', 'blocks.1', 'out'].filter((n) => units.some((u) => u.unit === n)));
    expect(units.find((u) => u.unit === 'blocks.0')!.layers).toEqual(['blocks.0.conv1', 'blocks.0.conv2']);
    expect(learned.err).toBeLessThan(nearest.err);
    // the final weights are codes of the layers' own quantizers: fake quant leaves them unchanged
    for (const [, m] of learned.model.namedModules()) {
      if (!isQuantLayer(m)) continue;
      const w = vals(m.weight), fq = vals(noGrad(() => m.effectiveWeight()));
      for (let i = 0; i < w.length; i++) expect(Math.abs(fq[i]! - w[i]!)).toBeLessThan(1e-5);
    }
  }, 120_000);
  it('works with activation quantization (W8A8) and rejects bad options', async () => {
    const r = await heldOutError({ weights: { bits: 8, granularity: 'channel' }, activations: { bits: 8, granularity: 'tensor' }, calibrator: 'minmax', rounding: 'adaround', reconstruction: { iters: 50 } });
    expect(r.summary.uncalibrated).toEqual([]);
    expect(Number.isFinite(r.err)).toBe(true);
    await expect(quantize(new Net(), { ...W4, rounding: 'adaround', reconstruction: { iters: 0 } }, { calibration: calib })).rejects.toThrow(/iters must be a positive integer/);
    await expect(quantize(new Net(), { ...W4, rounding: 'adaround', reconstruction: { granularity: 'net' as 'layer' } }, { calibration: calib })).rejects.toThrow(ArgumentError);
    await expect(quantize(new Net(), { ...W4, rounding: 'sometimes' as 'nearest' }, { calibration: calib })).rejects.toThrow(/rounding must be/);
    await expect(quantize(new Net(), { ...W4, reconstruction: { iters: 5 } }, { calibration: calib })).rejects.toThrow(/applies with rounding/);
    await expect(quantize(new Net(), { ...W4, rounding: 'adaround' })).rejects.toThrow(/needs options.calibration/);
    await expect(reconstructWeights(new Net(), calib, { bogus: 1 } as never)).rejects.toThrow(/unknown field 'bogus'/);
  }, 120_000);
});
