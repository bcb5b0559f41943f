import { describe, expect, it } from 'vitest';
import { ArgumentError, Generator, Tensor, UNet2DModel, concat, manualSeed, nn, noGrad, randn, slice, withContext } from '@qdm/core';
import { QuantConv2d, calibrateActivations, quantize, shortcutSplits } from '@qdm/quant';
import { vals } from './helpers.js';

const relErr = (a: Tensor, b: Tensor) => {
  const x = vals(a), y = vals(b);
  let num = 0, den = 0;
  for (let i = 0; i < x.length; i++) { num += (x[i]! - y[i]!) ** 2; den += y[i]! ** 2; }
  return Math.sqrt(num / den);
};

describe('split shortcut quantization (Q-Diffusion)', () => {
  // A bimodal concatenated input: the deep path h is ~50x larger than the skip feature.
  const input = (seed: number) => concat([randn([2, 4, 6, 6], { seed }).mul(50), randn([2, 4, 6, 6], { seed: seed + 1000 })], 1);
  const makeConv = () => new nn.Conv2d(8, 6, 1, { generator: new Generator(3) });

  async function quantized(split: number | undefined) {
    const conv = makeConv();
    const q = new QuantConv2d(conv, { weights: { bits: 8, granularity: 'channel' }, activations: { bits: 8, granularity: 'tensor' }, split });
    const holder = new nn.Sequential([q]);
    await calibrateActivations(holder, [0, 1, 2].map((s) => [input(s)]));
    return { q, ref: makeConv() };
  }

  it('uses two activation and two weight quantizers, and cuts the error of a bimodal input', async () => {
    const x = input(99);
    const plain = await quantized(undefined), split = await quantized(4);
    const ref = noGrad(() => plain.ref.call(x));
    const ePlain = relErr(noGrad(() => plain.q.call(x)), ref), eSplit = relErr(noGrad(() => split.q.call(x)), ref);
    // The skip half gets its own, 50x finer step: its error drops by far; the output (dominated
    // by the large half) is no worse.
    const skip = slice(x, 1, 4);
    const plainSkip = relErr(slice(noGrad(() => plain.q.act_quantizer!.call(x)), 1, 4), skip);
    const splitSkip = relErr(noGrad(() => split.q.act_quantizer_0!.call(skip)), skip);
    expect(splitSkip).toBeLessThan(plainSkip / 10);
    expect(eSplit).toBeLessThanOrEqual(ePlain);
    expect(split.q.act_quantizer!.delta.item()).toBeGreaterThan(10 * split.q.act_quantizer_0!.delta.item());
    expect(split.q.weight_quantizer_0).not.toBeNull();
    const keys = [...split.q.stateDict().keys()];
    for (const k of ['weight', 'bias', 'weight_quantizer.delta', 'weight_quantizer_0.delta', 'act_quantizer.delta', 'act_quantizer_0.delta']) expect(keys).toContain(k);
  });

  it('quantizes each weight half per output channel from its own range', () => {
    const conv = makeConv();
    (conv.weight.cpuData() as Float32Array).forEach((_, i, a) => { if (i % 8 >= 4) a[i]! *= 0.01; });
    const q = new QuantConv2d(conv, { weights: { bits: 8, granularity: 'channel' }, split: 4 });
    const wq = vals(noGrad(() => q.effectiveWeight())), w = vals(conv.weight);
    // |W| <= 1/sqrt(8): a per-row step of about 0.0028 (error <= 0.0014) on the first half, and 100x
    // finer on the second; a shared quantizer would give the small half errors up to 0.0014.
    for (let i = 0; i < w.length; i++) expect(Math.abs(wq[i]! - w[i]!)).toBeLessThanOrEqual((i % 8 >= 4 ? 0.01 : 1) * 0.0015);
  });

  it('rejects a bad split', () => {
    expect(() => new QuantConv2d(makeConv(), { weights: { bits: 8, granularity: 'channel' }, split: 8 })).toThrow(ArgumentError);
    expect(() => new QuantConv2d(makeConv(), { weights: { bits: 8, granularity: 'channel' }, split: 1.5 })).toThrow(/split must be an integer/);
  });

  it('finds C1 of every diffusers up-path shortcut conv, equal to the deep-path channels seen at run time', () => {
    manualSeed(0);
    const unet = new UNet2DModel({
      block_out_channels: [8, 16], down_block_types: ['DownBlock2D', 'AttnDownBlock2D'], up_block_types: ['AttnUpBlock2D', 'UpBlock2D'],
      norm_num_groups: 4, attention_head_dim: 4, layers_per_block: 1, in_channels: 1, out_channels: 1,
    });
    const splits = shortcutSplits(unet);
    expect(splits).toEqual({
      'up_blocks.0.resnets.0.conv_shortcut': 16, 'up_blocks.0.resnets.1.conv_shortcut': 16,
      'up_blocks.1.resnets.0.conv_shortcut': 16, 'up_blocks.1.resnets.1.conv_shortcut': 8,
    });
    // At run time: resnet j of an up block receives concat[h, skip]; record h's channels.
    const seen: Record<string, number> = {};
    for (const [name, m] of unet.namedModules()) {
      if (!/^up_blocks\.\d+$/.test(name)) continue;
      m.registerForwardPreHook((_m, args) => {
        const hidden = args[0] as Tensor, skips = args[1] as Tensor[];
        const n = skips.length;
        for (let j = 0; j < n; j++) {
          const resnet = m.getSubmodule(`resnets.${j}`) as unknown as { inChannels: number };
          seen[`${name}.resnets.${j}.conv_shortcut`] = j === 0 ? hidden.shape[1]! : resnet.inChannels - skips[n - 1 - j]!.shape[1]!;
        }
      });
    }
    noGrad(() => unet.call(randn([1, 1, 8, 8], { seed: 1 }), 10));
    expect(seen).toEqual(splits);
  });

  it('quantize({ splitShortcut: true }) splits those layers and reports them', async () => {
    manualSeed(0);
    const unet = new UNet2DModel({
      block_out_channels: [8, 16], down_block_types: ['DownBlock2D', 'AttnDownBlock2D'], up_block_types: ['AttnUpBlock2D', 'UpBlock2D'],
      norm_num_groups: 4, attention_head_dim: 4, layers_per_block: 1, in_channels: 1, out_channels: 1,
    });
    const calibration = [0, 1].map((i) => [randn([2, 1, 8, 8], { seed: i }), 500]);
    const { summary } = await quantize(unet, { weights: { bits: 8, granularity: 'channel' }, activations: { bits: 8, granularity: 'tensor' }, splitShortcut: true }, { calibration });
    expect(summary.layers.filter((l) => l.split).map((l) => [l.name, l.split])).toEqual(Object.entries(shortcutSplits(new UNet2DModel({
      block_out_channels: [8, 16], down_block_types: ['DownBlock2D', 'AttnDownBlock2D'], up_block_types: ['AttnUpBlock2D', 'UpBlock2D'],
      norm_num_groups: 4, attention_head_dim: 4, layers_per_block: 1, in_channels: 1, out_channels: 1,
    }))));
    expect((unet.getSubmodule('up_blocks.1.resnets.1.conv_shortcut') as QuantConv2d).split).toBe(8);
    expect(noGrad(() => withContext({}, () => unet.call(randn([1, 1, 8, 8], { seed: 5 }), 500))).shape).toEqual([1, 1, 8, 8]);
    await expect(quantize(new nn.Sequential([new nn.Linear(2, 2)]), { weights: { bits: 8, granularity: 'channel' }, splitShortcut: { '0': 1 } })).rejects.toThrow(/not a Conv2d/);
  });
});
