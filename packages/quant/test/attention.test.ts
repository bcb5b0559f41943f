// Quantized attention products (Q-Diffusion's QuantQKMatMul / QuantSMVMatMul): the operands that
// reach the products are the quantizers' outputs, calibration sets every table, LSQ gradients reach
// the step sizes through attention, quantized checkpoints reload bit for bit, bad recipes fail.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  ArgumentError, Attention, Tensor, UNet2DModel, manualSeed, matmul, mul, noGrad, randn, reshape, scaledDotProductAttention, softmax, sub, sum, transpose,
  withContext,
} from '@qdm/core';
import { AttentionQuantizer, attentionQuantizers, loadQuantized, quantize, quantizeAttention, saveQuantized, toIntegerExecution, type QuantRecipe } from '@qdm/quant';
import { vals } from './helpers.js';

const relErr = (a: Tensor, b: Tensor) => {
  const x = vals(a), y = vals(b);
  let num = 0, den = 0;
  for (let i = 0; i < x.length; i++) { num += (x[i]! - y[i]!) ** 2; den += y[i]! ** 2; }
  return Math.sqrt(num / den);
};
const bytesOf = (t: Tensor) => Buffer.from(vals(t).buffer);

const CONFIG = {
  block_out_channels: [8, 16], down_block_types: ['DownBlock2D', 'AttnDownBlock2D'], up_block_types: ['AttnUpBlock2D', 'UpBlock2D'],
  norm_num_groups: 4, attention_head_dim: 4, layers_per_block: 1, in_channels: 1, out_channels: 1,
};
const STEPS = [999, 500, 1];
const calibration = STEPS.flatMap((t, i) => [0, 1].map((j) => ({ args: [randn([4, 1, 8, 8], { seed: 40 + 2 * i + j }), t], context: { stepIndex: i, timestep: t } })));
const runAt = (model: UNet2DModel, x: Tensor, i: number) => noGrad(() => withContext({ stepIndex: i, timestep: STEPS[i]! }, () => model.call(x, STEPS[i]!) as Tensor));

async function quantizedUNet(recipe: QuantRecipe): Promise<{ fp: UNet2DModel; model: UNet2DModel }> {
  manualSeed(0);
  const fp = new UNet2DModel(CONFIG), model = new UNet2DModel(CONFIG);
  model.loadStateDict(fp.stateDict());
  await quantize(model, recipe, { calibration });
  return { fp, model };
}

const W8A8: QuantRecipe = { weights: { bits: 8, granularity: 'channel' }, activations: { bits: 8, granularity: 'tensor', timestepGroups: 3 } };
const WITH_ATTENTION: QuantRecipe = { ...W8A8, attention: { bits: 8, granularity: 'tensor', timestepGroups: 3 }, attentionProbs: { bits: 8, granularity: 'tensor', signed: false, timestepGroups: 3 } };

describe('quantizeAttention on a single Attention module', () => {
  const heads = 2, dimHead = 4, C = 8;
  const make = () => { manualSeed(3); return new Attention(C, { heads, dimHead, normNumGroups: 2, residualConnection: true, bias: true }); };
  const x = randn([2, C, 3, 3], { seed: 9 });
  /** 4-bit Q/K/V/P quantizers with fixed step sizes, enabled. */
  const enabled4Bit = () => {
    const m = make();
    quantizeAttention(m, { bits: 4, granularity: 'tensor' }, { probs: { bits: 4, granularity: 'tensor', signed: false } });
    const q = m.operandHook as AttentionQuantizer;
    (q.act_q.delta.cpuData() as Float32Array).set([0.05]); (q.act_k.delta.cpuData() as Float32Array).set([0.07]); (q.act_v.delta.cpuData() as Float32Array).set([0.03]); (q.act_probs!.delta.cpuData() as Float32Array).set([1 / 15]);
    for (const a of q.quantizers()) a.enabled = true;
    return { m, q };
  };

  it('uncalibrated quantizers pass the operands through: the output equals the plain module', () => {
    const plain = make(), hooked = make();
    quantizeAttention(hooked, { bits: 4, granularity: 'tensor' }, { probs: { bits: 4, granularity: 'tensor', signed: false } });
    const a = noGrad(() => plain.call(x) as Tensor), b = noGrad(() => hooked.call(x) as Tensor);
    // The probs hook runs the products explicitly (softmax materialised) instead of the fused kernel.
    expect(relErr(b, a)).toBeLessThan(1e-5);
  });

  it('enabled quantizers: the products see fake-quantized Q, K, V and P (checked by recomputing them)', () => {
    const { m, q } = enabled4Bit();
    const got = noGrad(() => m.call(x) as Tensor);
    const want = noGrad(() => {
      const tokens = transpose(reshape(x, [2, C, 9]), 1, 2);
      const h = transpose(m.group_norm!.call(transpose(tokens, 1, 2)) as Tensor, 1, 2);
      const split = (t: Tensor) => transpose(reshape(t, [2, 9, heads, dimHead]), 1, 2);
      const Q = split(q.act_q.call(m.to_q.call(h)) as Tensor), K = split(q.act_k.call(m.to_k.call(h)) as Tensor), V = split(q.act_v.call(m.to_v.call(h)) as Tensor);
      // Every operand is on its grid (integer multiples of the step, zero point 0) with at most 16 levels.
      for (const [t, d] of [[Q, 0.05], [K, 0.07], [V, 0.03]] as const) {
        const levels = new Set<number>();
        for (const v of vals(t)) { expect(Math.abs(v / d - Math.round(v / d))).toBeLessThan(1e-3); levels.add(Math.round(v / d)); }
        expect(levels.size).toBeGreaterThan(2);
        expect(levels.size).toBeLessThanOrEqual(16);
      }
      const P = q.act_probs!.call(softmax(mul(matmul(Q, transpose(K, -2, -1)), 1 / Math.sqrt(dimHead)), -1)) as Tensor;
      for (const v of vals(P)) expect(Math.abs(v * 15 - Math.round(v * 15))).toBeLessThan(1e-3);
      const o = reshape(transpose(matmul(P, V), 1, 2), [2, 9, heads * dimHead]);
      const out = m.to_out.at(0).call(o) as Tensor;
      return reshape(transpose(out, 1, 2), [2, C, 3, 3]);
    });
    const residualFree = noGrad(() => sub(got, x));
    expect(relErr(residualFree, want)).toBeLessThan(1e-5);
    // Without probs the fused kernel runs on the quantized Q, K, V.
    const m2 = make();
    quantizeAttention(m2, { bits: 4, granularity: 'tensor' });
    const q2 = m2.operandHook as AttentionQuantizer;
    expect(q2.act_probs).toBe(null);
    (q2.act_q.delta.cpuData() as Float32Array).set([0.05]); (q2.act_k.delta.cpuData() as Float32Array).set([0.07]); (q2.act_v.delta.cpuData() as Float32Array).set([0.03]);
    for (const a of q2.quantizers()) a.enabled = true;
    const fused = noGrad(() => sub(m2.call(x) as Tensor, x));
    const ref = noGrad(() => {
      const tokens = transpose(m2.group_norm!.call(reshape(x, [2, C, 9])) as Tensor, 1, 2);
      const split = (t: Tensor) => transpose(reshape(t, [2, 9, heads, dimHead]), 1, 2);
      const a = scaledDotProductAttention(split(q2.act_q.call(m2.to_q.call(tokens)) as Tensor), split(q2.act_k.call(m2.to_k.call(tokens)) as Tensor), split(q2.act_v.call(m2.to_v.call(tokens)) as Tensor), { scale: 1 / Math.sqrt(dimHead) });
      return reshape(transpose(m2.to_out.at(0).call(reshape(transpose(a, 1, 2), [2, 9, heads * dimHead])) as Tensor, 1, 2), [2, C, 3, 3]);
    });
    expect(relErr(fused, ref)).toBeLessThan(1e-5);
  });

  it('LSQ: gradients reach every step size through both products', () => {
    const { m, q } = enabled4Bit();
    const y = m.call(x) as Tensor;
    sum(mul(y, y)).backward();
    for (const a of q.quantizers()) {
      const g = a.delta.grad;
      expect(g).not.toBe(null);
      const v = vals(g!)[0]!;
      expect(Number.isFinite(v) && v !== 0).toBe(true);
    }
  });

  it('fails cleanly: twice on one module, calling the hook as a layer, no spec, per-channel spec', () => {
    const m = make();
    quantizeAttention(m, { bits: 8, granularity: 'tensor' });
    expect(() => quantizeAttention(m, { bits: 8, granularity: 'tensor' })).toThrow(/already has attention operand quantizers/);
    expect(() => (m.operandHook as AttentionQuantizer).call(x)).toThrow(ArgumentError);
    expect(() => quantizeAttention(make(), undefined as never)).toThrow(ArgumentError);
    expect(() => quantizeAttention(make(), { bits: 8, granularity: 'channel' })).toThrow(/per tensor/);
  });
});

describe('quantize() with recipe.attention on a U-Net', () => {
  it('calibrates every attention quantizer (temporal tables), error stays close to W8A8 alone', async () => {
    const a = await quantizedUNet(W8A8);
    const { fp, model } = await quantizedUNet(WITH_ATTENTION);
    const att = attentionQuantizers(model);
    expect(att.map(([n]) => n).sort()).toEqual(['down_blocks.1.attentions.0.matmul_quantizer', 'mid_block.attentions.0.matmul_quantizer', 'up_blocks.0.attentions.0.matmul_quantizer', 'up_blocks.0.attentions.1.matmul_quantizer']);
    for (const [, aq] of att) for (const q of aq.quantizers()) {
      expect(q.enabled).toBe(true);
      const d = vals(q.delta);
      expect(d.length).toBe(3);
      for (const v of d) expect(v > 0 && v < 1).toBe(true);  // set by calibration, not the initial 1
    }
    const x = randn([1, 1, 8, 8], { seed: 77 });
    for (let i = 0; i < STEPS.length; i++) {
      const ref = noGrad(() => fp.call(x, STEPS[i]!) as Tensor);
      const e8 = relErr(runAt(a.model, x, i), ref), eAtt = relErr(runAt(model, x, i), ref);
      expect(eAtt).toBeLessThan(0.1);
      expect(eAtt).toBeLessThan(e8 + 0.05);
      expect(relErr(runAt(model, x, i), runAt(a.model, x, i))).toBeGreaterThan(0);  // the quantizers act
    }
  });

  it('the checkpoint reloads bit for bit (fake quant and integer execution), enabled flags included', async () => {
    const { model } = await quantizedUNet(WITH_ATTENTION);
    const first = attentionQuantizers(model)[0]![1];
    first.act_probs!.enabled = false;  // a partially enabled set must survive the round trip
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'qdm-attq-')), 'unet.safetensors');
    saveQuantized(model, file, { recipe: WITH_ATTENTION });
    manualSeed(5);
    const loaded = loadQuantized(file, { model: new UNet2DModel(CONFIG) });
    expect(attentionQuantizers(loaded.model).map(([n, q]) => [n, q.quantizers().map((a) => a.enabled)])).toEqual(attentionQuantizers(model).map(([n, q]) => [n, q.quantizers().map((a) => a.enabled)]));
    const x = randn([1, 1, 8, 8], { seed: 78 });
    for (let i = 0; i < STEPS.length; i++) expect(bytesOf(runAt(loaded.model, x, i)).equals(bytesOf(runAt(model, x, i)))).toBe(true);
    toIntegerExecution(model); toIntegerExecution(loaded.model);
    for (let i = 0; i < STEPS.length; i++) expect(bytesOf(runAt(loaded.model, x, i)).equals(bytesOf(runAt(model, x, i)))).toBe(true);
  });

  it('bad recipes fail before any work', async () => {
    const model = new UNet2DModel(CONFIG);
    await expect(quantize(model, { ...W8A8, attention: { bits: 8, granularity: 'channel' } }, { calibration })).rejects.toThrow(/recipe.attention.granularity/);
    await expect(quantize(model, { ...W8A8, attentionProbs: { bits: 8, granularity: 'tensor' } }, { calibration })).rejects.toThrow(/attentionProbs applies with recipe.attention/);
    await expect(quantize(model, { weights: { bits: 8, granularity: 'channel' }, attention: { bits: 8, granularity: 'tensor' } })).rejects.toThrow(/calibration is required/);
    await expect(quantize(model, { ...W8A8, attention: { bits: 1, granularity: 'tensor' } }, { calibration })).rejects.toThrow(ArgumentError);
    expect(attentionQuantizers(model)).toEqual([]);
  });
});
