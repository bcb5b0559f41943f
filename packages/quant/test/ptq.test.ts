import { describe, expect, it } from 'vitest';
import { ArgumentError, Module, Tensor, nn, noGrad, randn, mean, silu, withContext, Generator } from '@qdm/core';
import { QuantConv2d, QuantLinear, WeightQuantizer, quantize, quantizeModules, type QuantRecipe } from '@qdm/quant';
import { vals } from './helpers.js';

class SmallNet extends Module {
  conv_in: nn.Conv2d; conv1: nn.Conv2d; conv2: nn.Conv2d; lin1: nn.Linear; lin2: nn.Linear; out: nn.Linear;
  constructor(seed = 1) {
    super();
    const generator = new Generator(seed);
    this.conv_in = this.registerModule('conv_in', new nn.Conv2d(3, 16, 3, { padding: 1, generator }));
    this.conv1 = this.registerModule('conv1', new nn.Conv2d(16, 16, 3, { padding: 1, generator }));
    this.conv2 = this.registerModule('conv2', new nn.Conv2d(16, 16, 1, { generator }));
    this.lin1 = this.registerModule('lin1', new nn.Linear(16, 32, { generator }));
    this.lin2 = this.registerModule('lin2', new nn.Linear(32, 32, { generator }));
    this.out = this.registerModule('out', new nn.Linear(32, 10, { generator }));
  }
  forward(x: Tensor): Tensor {
    let h = silu(this.conv_in.call(x));
    h = silu(this.conv1.call(h));
    h = this.conv2.call(h);
    const v = mean(h, [2, 3]);
    return this.out.call(silu(this.lin2.call(silu(this.lin1.call(v)))));
  }
}

const batches = (n: number, seed: number) => Array.from({ length: n }, (_, i) => [randn([2, 3, 8, 8], { seed: seed + i })]);
const relErr = (a: Tensor, b: Tensor) => {
  const x = vals(a), y = vals(b);
  let num = 0, den = 0;
  for (let i = 0; i < x.length; i++) { num += (x[i]! - y[i]!) ** 2; den += y[i]! ** 2; }
  return Math.sqrt(num / den);
};

async function errorOf(recipe: QuantRecipe): Promise<{ err: number; model: SmallNet; summary: Awaited<ReturnType<typeof quantize>>['summary'] }> {
  const fp = new SmallNet(), model = new SmallNet();
  const test = randn([4, 3, 8, 8], { seed: 99 });
  const ref = noGrad(() => fp.call(test));
  const { summary } = await quantize(model, recipe, { calibration: batches(4, 10) });
  const err = relErr(noGrad(() => model.call(test)), ref);
  return { err, model, summary };
}

describe('quantize() on a conv + linear model', () => {
  it('W8A8: relative error under 1e-2, first and last layers at 8 bits', async () => {
    const { err, model, summary } = await errorOf({ weights: { bits: 8, granularity: 'channel' }, activations: { bits: 8, granularity: 'tensor' } });
    expect(err).toBeLessThan(1e-2);
    expect(err).toBeGreaterThan(0);
    expect(model.conv_in).toBeInstanceOf(QuantConv2d);
    expect(model.out).toBeInstanceOf(QuantLinear);
    expect(summary.firstLast).toEqual(['conv_in', 'out']);
    expect(summary.byBits).toEqual({ W8A8: 6 });
    expect(summary.uncalibrated).toEqual([]);
  });

  it('W4A8: larger error but under 0.2; first/last stay at 8 bits', async () => {
    const w8 = await errorOf({ weights: { bits: 8, granularity: 'channel' }, activations: { bits: 8, granularity: 'tensor' } });
    const { err, model, summary } = await errorOf({ weights: { bits: 4, granularity: 'channel' }, activations: { bits: 8, granularity: 'tensor' } });
    expect(err).toBeLessThan(0.2);
    expect(err).toBeGreaterThan(w8.err);
    expect(summary.byBits).toEqual({ W8A8: 2, W4A8: 4 });
    expect((model.conv_in as unknown as QuantConv2d).weightBits).toBe(8);
    expect((model.conv1 as unknown as QuantConv2d).weightBits).toBe(4);
    expect(summary.layers.find((l) => l.name === 'out')).toMatchObject({ weightBits: 8, actBits: 8 });
  });

  it('keeps diffusers parameter names and adopts the original tensors', async () => {
    const model = new SmallNet();
    const w = model.conv1.weight;
    await quantize(model, { weights: { bits: 4, granularity: 'channel' } });
    expect((model.conv1 as unknown as QuantConv2d).weight).toBe(w);
    const keys = [...model.stateDict().keys()];
    expect(keys).toContain('conv1.weight');
    expect(keys).toContain('conv1.bias');
    expect(keys).toContain('conv1.weight_quantizer.delta');
    expect(keys).toContain('conv1.weight_quantizer.zero_point');
  });

  it('round-trips a quantized model through its state dict', async () => {
    const recipe: QuantRecipe = { weights: { bits: 4, granularity: 'channel' }, activations: { bits: 8, granularity: 'tensor' } };
    const a = new SmallNet(1);
    await quantize(a, recipe, { calibration: batches(2, 21) });
    const b = new SmallNet(2);
    quantizeModules(b, recipe);
    const res = b.loadStateDict(a.stateDict(), { strict: true });
    expect(res.missing).toEqual([]);
    expect(res.unexpected).toEqual([]);
    const x = randn([2, 3, 8, 8], { seed: 3 });
    expect(Array.from(vals(noGrad(() => b.call(x))))).toEqual(Array.from(vals(noGrad(() => a.call(x)))));
  });

  it('honours skip patterns, overrides and firstLastBits: null', async () => {
    const model = new SmallNet();
    const { summary } = await quantize(model, {
      weights: { bits: 4, granularity: 'channel' }, activations: { bits: 8, granularity: 'tensor' }, firstLastBits: null,
      skip: [/^lin2$/], overrides: [{ pattern: /^conv2$/, weights: { bits: 6 }, activations: null }],
    }, { calibration: batches(2, 3) });
    expect(model.lin2).toBeInstanceOf(nn.Linear);
    expect(model.lin2).not.toBeInstanceOf(QuantLinear);
    expect(summary.skipped).toEqual(['lin2']);
    expect(summary.firstLast).toEqual([]);
    expect(summary.layers.find((l) => l.name === 'conv2')).toMatchObject({ weightBits: 6, actBits: null });
    expect(summary.byBits).toEqual({ W4A8: 4, W6A16: 1 });
  });

  it('calibrates temporal activation tables from calibration entries carrying a step index', async () => {
    const model = new SmallNet();
    const calibration = [0, 1].map((step) => ({ args: [randn([2, 3, 8, 8], { seed: step }).mul(step === 0 ? 1 : 5)], context: { stepIndex: step } }));
    await quantize(model, { weights: { bits: 8, granularity: 'channel' }, activations: { bits: 8, granularity: 'tensor', timestepGroups: 2 }, calibrator: 'minmax' }, { calibration });
    const d = vals((model.conv_in as unknown as QuantConv2d).act_quantizer!.delta);
    expect(d[1]! / d[0]!).toBeGreaterThan(3);
    const x = randn([1, 3, 8, 8], { seed: 7 });
    expect(() => noGrad(() => model.call(x))).toThrow(/step index/);
    expect(noGrad(() => withContext({ stepIndex: 1 }, () => model.call(x))).shape).toEqual([1, 10]);
  });

  it('lets gradients reach the weights and the LSQ step sizes', async () => {
    const model = new SmallNet();
    await quantize(model, { weights: { bits: 4, granularity: 'channel' }, activations: { bits: 8, granularity: 'tensor' } }, { calibration: batches(2, 5) });
    model.call(randn([1, 3, 8, 8], { seed: 1 })).square().sum().backward();
    const l = model.lin1 as unknown as QuantLinear;
    expect(l.weight.grad).not.toBeNull();
    expect((l.weight_quantizer as WeightQuantizer).delta.grad!.shape).toEqual([32]);
    expect(l.act_quantizer!.delta.grad!.shape).toEqual([1]);
  });

  it('rejects bad recipes with ArgumentError and leaves the model untouched', async () => {
    const bad: Array<[unknown, RegExp]> = [
      [{ weights: { bits: 9, granularity: 'channel' } }, /recipe\.weights\.bits/],
      [{ weights: { bits: 4, granularity: 'channel' }, activations: { bits: 8, granularity: 'channel' } }, /recipe\.activations\.granularity/],
      [{ weights: { bits: 4, granularity: 'channel' }, firstLast: 8 }, /recipe\.firstLast is not a recipe field/],
      [{ weights: { bits: 4, granularity: 'channel' }, firstLastBits: 12 }, /recipe\.firstLastBits/],
      [{ weights: { bits: 4, granularity: 'channel' }, skip: ['lin2'] }, /recipe\.skip/],
      [{ weights: { bits: 4, granularity: 'channel' }, calibrator: 'kl' }, /recipe\.calibrator/],
      [{ weights: { bits: 4, granularity: 'channel' }, overrides: [{ pattern: /lin/, weights: { granularity: 'group', groupSize: 5 } }] }, /overrides\[0\] for 'lin1'.*groupSize/],
      [{ weights: { bits: 4, granularity: 'channel' }, activations: { bits: 8, granularity: 'tensor' } }, /options\.calibration is required/],
      [{}, /recipe\.weights/],
    ];
    for (const [recipe, msg] of bad) {
      const model = new SmallNet();
      const err = await quantize(model, recipe as QuantRecipe).catch((e: unknown) => e);
      expect(err, String(msg)).toBeInstanceOf(ArgumentError);
      expect((err as Error).message).toMatch(msg);
      expect(model.lin1).not.toBeInstanceOf(QuantLinear);
      expect(model.conv_in).not.toBeInstanceOf(QuantConv2d);
    }
  });
});

describe('quantize() on a diffusers-structured U-Net', () => {
  it('replaces every Linear/Conv2d, conv_in/conv_out are first/last, W8A8 with a temporal table stays within 10 % of full precision', async () => {
    const { UNet2DModel, manualSeed } = await import('@qdm/core');
    manualSeed(0);  // a fixed random model: the error of a tiny random U-Net varies a lot between inits
    const config = {
      block_out_channels: [8, 16], down_block_types: ['DownBlock2D', 'AttnDownBlock2D'], up_block_types: ['AttnUpBlock2D', 'UpBlock2D'],
      norm_num_groups: 4, attention_head_dim: 4, layers_per_block: 1, in_channels: 1, out_channels: 1,
    };
    const fp = new UNet2DModel(config), model = new UNet2DModel(config);
    model.loadStateDict(fp.stateDict());
    const steps = [999, 500, 1];
    const calibration = steps.flatMap((t, i) => [0, 1].map((j) => ({ args: [randn([4, 1, 8, 8], { seed: 40 + 2 * i + j }), t], context: { stepIndex: i, timestep: t } })));
    const { summary } = await quantize(model, { weights: { bits: 8, granularity: 'channel' }, activations: { bits: 8, granularity: 'tensor', timestepGroups: 3 } }, { calibration });
    expect(summary.firstLast).toEqual(['conv_in', 'conv_out']);
    expect(summary.uncalibrated).toEqual([]);
    const names = summary.layers.map((l) => l.name);
    expect(names).toContain('down_blocks.1.attentions.0.to_q');
    expect(names).toContain('time_embedding.linear_1');
    for (const [name, m] of model.namedModules()) if (m instanceof nn.Linear || m instanceof nn.Conv2d) throw new Error(`${name} was not replaced`);
    const x = randn([1, 1, 8, 8], { seed: 77 });
    const ref = noGrad(() => fp.call(x, 500));
    const out = noGrad(() => withContext({ stepIndex: 1, timestep: 500 }, () => model.call(x, 500)));
    // A tiny random U-Net is noisy under quantization: W8 alone costs about 1 % here and per-tensor
    // A8 another few per cent (about 50 layers, each adding its rounding noise, none trained).
    expect(relErr(out, ref)).toBeLessThan(0.1);
  });
});
