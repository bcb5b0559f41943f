// The diffusers U-Nets: parameter names/shapes of the full-size configs (built shape-only),
// forwards of the tiny reference models against diffusers' float64 outputs, the structured
// forward pieces, and config validation.
import { describe, it, expect } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  UNet2DModel, UNet2DConditionModel, withMetaTensors, noGrad, randn, tensor, ArgumentError, ShapeError, Tensor, type UNetBase,
  mean, square, gradcheck, ResnetBlock2D, Attention, Downsample2D, Upsample2D,
} from '@qdm/core';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const fixtures = process.env.QDM_FIXTURES ?? path.resolve(repoRoot, '../shared/fixtures');
const fixturesPresent = fs.existsSync(path.join(fixtures, 'unet-keys'));
const safetensorsModule = path.resolve(repoRoot, 'packages/core/src/io/safetensors.ts');
const loaderPresent = fs.existsSync(safetensorsModule);
if (!fixturesPresent) console.warn(`unet.test: reference fixtures not found at ${fixtures} (set QDM_FIXTURES); fixture tests are skipped`);
else if (!loaderPresent) console.warn('unet.test: packages/core/src/io/safetensors.ts is missing; reference forward tests are skipped');

type Json = Record<string, unknown>;
const readJson = (p: string) => JSON.parse(fs.readFileSync(p, 'utf8')) as Json;

function relErr(got: ArrayLike<number>, ref: ArrayLike<number>): number {
  let num = 0, den = 0;
  for (let i = 0; i < ref.length; ++i) { const d = Number(got[i]) - Number(ref[i]); num += d * d; den += Number(ref[i]) ** 2; }
  return Math.sqrt(num / Math.max(den, 1e-300));
}

function build(config: Json): UNetBase {
  return config._class_name === 'UNet2DModel' ? new UNet2DModel(config) : new UNet2DConditionModel(config);
}

describe('U-Net parameter names and shapes (full-size configs, shape-only)', () => {
  const names = fixturesPresent ? fs.readdirSync(path.join(fixtures, 'unet-keys')).filter((f) => f.endsWith('.json')) : [];
  it.skipIf(!fixturesPresent)('fixtures list the three reference models', () => {
    expect(names.sort()).toEqual(['ddpm-cifar10-32.json', 'lcm-sd15.json', 'sd15.json']);
  });
  for (const file of names) {
    it(`${file}: exactly diffusers' state dict`, () => {
      const ref = readJson(path.join(fixtures, 'unet-keys', file));
      const config = { ...(ref.config as Json), _class_name: ref.class as string };
      const model = withMetaTensors(() => build(config));
      const ours = new Map([...model.stateDict()].map(([k, t]) => [k, [...t.shape]]));
      const theirs = new Map(Object.entries(ref.state_dict_shapes as Record<string, number[]>));
      expect([...ours.keys()].filter((k) => !theirs.has(k))).toEqual([]);
      expect([...theirs.keys()].filter((k) => !ours.has(k))).toEqual([]);
      for (const [k, s] of theirs) expect(ours.get(k), k).toEqual(s);
      expect(model.numParameters()).toBe(ref.num_parameters);
    });
  }
});

// ---- reference forwards ----------------------------------------------------------------

type Loaded = Record<string, Tensor> | Map<string, Tensor>;
type LoadFn = (p: string) => Loaded | Promise<Loaded>;
async function loader(): Promise<LoadFn> {
  const mod = (await import(/* @vite-ignore */ safetensorsModule)) as { loadSafetensors: LoadFn };
  return mod.loadSafetensors;
}
const asRecord = (m: Loaded): Record<string, Tensor> => (m instanceof Map ? Object.fromEntries(m) : m);

async function loadReference(name: string) {
  const load = await loader();
  const dir = path.join(fixtures, 'unet', name);
  const config = readJson(path.join(dir, 'config.json'));
  const model = build(config);
  model.loadStateDict(asRecord(await load(path.join(dir, 'diffusion_pytorch_model.safetensors'))), { strict: true });
  model.eval();
  const io = asRecord(await load(path.join(dir, 'io.safetensors')));
  const timestep = Array.from(io['input.timestep']!.data() as ArrayLike<number | bigint>, Number);
  const cond = {
    ...(io['input.encoder_hidden_states'] ? { encoderHiddenStates: io['input.encoder_hidden_states'] } : {}),
    ...(io['input.class_labels'] ? { classLabels: io['input.class_labels'] } : {}),
    ...(io['input.timestep_cond'] ? { timestepCond: io['input.timestep_cond'] } : {}),
    ...(io['input.text_embeds'] ? { addedCondKwargs: { textEmbeds: io['input.text_embeds'], timeIds: io['input.time_ids']! } } : {}),
  };
  return { model, io, timestep, cond, sample: io['input.sample']! };
}

const REFERENCE_MODELS = ['ddpm-tiny', 'class-cond-tiny', 'sd-tiny', 'sd-tiny-3level', 'lcm-tiny', 'sdxl-tiny'];

describe('U-Net forwards match diffusers (float64 reference)', () => {
  for (const name of REFERENCE_MODELS) {
    it.skipIf(!fixturesPresent || !loaderPresent)(`${name}: relative error <= 1e-5`, async () => {
      const { model, io, timestep, cond, sample } = await loadReference(name);
      const out = noGrad(() => model.call(sample, timestep, cond) as Tensor);
      const ref = io['output.sample_f64']!;
      expect(out.shape).toEqual(ref.shape);
      const err = relErr(out.data(), ref.data());
      expect(err, `${name} relative error ${err}`).toBeLessThanOrEqual(1e-5);
    });
  }

  it.skipIf(!fixturesPresent || !loaderPresent)('structured pieces composed by hand equal forward() (sd-tiny, timestep tensor)', async () => {
    const { model, timestep, cond, sample } = await loadReference('sd-tiny');
    noGrad(() => {
      const whole = model.call(sample, tensor(timestep), cond) as Tensor;
      const state = model.prepare(sample, timestep, cond);
      expect(state.skips.length).toBe(1);
      for (let i = 0; i < model.down_blocks.length; ++i) model.runDownBlock(state, i);
      model.runMid(state);
      for (let i = 0; i < model.up_blocks.length; ++i) model.runUpBlock(state, i);
      expect(state.skips.length).toBe(0);
      const pieces = model.finish(state);
      expect(relErr(pieces.data(), whole.data())).toBe(0);
    });
  });
});

// ---- small random models: structure, odd sizes, errors ----------------------------------

const tinyCond = {
  block_out_channels: [8, 16], down_block_types: ['CrossAttnDownBlock2D', 'DownBlock2D'], up_block_types: ['UpBlock2D', 'CrossAttnUpBlock2D'],
  norm_num_groups: 4, cross_attention_dim: 8, attention_head_dim: 2, layers_per_block: 1, sample_size: 8,
};
const tinyUncond = {
  block_out_channels: [8, 16], down_block_types: ['DownBlock2D', 'AttnDownBlock2D'], up_block_types: ['AttnUpBlock2D', 'UpBlock2D'],
  norm_num_groups: 4, attention_head_dim: 4, layers_per_block: 1, in_channels: 1, out_channels: 1,
};

describe('U-Net structure on small random models', () => {
  it('config keeps _class_name and fills diffusers defaults', () => {
    const m = UNet2DConditionModel.fromConfig(JSON.stringify(tinyCond));
    expect(m.config._class_name).toBe('UNet2DConditionModel');
    expect(m.config.flip_sin_to_cos).toBe(true);
    expect(m.config.mid_block_type).toBe('UNetMidBlock2DCrossAttn');
    expect(m.config.block_out_channels).toEqual([8, 16]);
  });

  it('odd and non-square sizes round-trip through down- and upsampling', () => {
    const m = new UNet2DModel({ ...tinyUncond, block_out_channels: [8, 8, 16], down_block_types: ['DownBlock2D', 'DownBlock2D', 'AttnDownBlock2D'], up_block_types: ['AttnUpBlock2D', 'UpBlock2D', 'UpBlock2D'] });
    noGrad(() => {
      const x = randn([2, 1, 28, 13], { seed: 1 });
      const y = m.call(x, [10, 500]) as Tensor;
      expect(y.shape).toEqual([2, 1, 28, 13]);
      const state = m.prepare(x, 3);
      m.runDownBlock(state, 0);
      expect(state.hidden.shape).toEqual([2, 8, 14, 7]);
      m.runDownBlock(state, 1);
      expect(state.hidden.shape).toEqual([2, 8, 7, 4]);
    });
  });

  it('pieces equal forward() for a conditional model with a 1-element timestep tensor', () => {
    const m = new UNet2DConditionModel(tinyCond);
    noGrad(() => {
      const x = randn([2, 4, 9, 12], { seed: 2 });
      const ehs = randn([2, 5, 8], { seed: 3 });
      const a = m.call(x, tensor([321]), { encoderHiddenStates: ehs }) as Tensor;
      const s = m.prepare(x, 321, { encoderHiddenStates: ehs });
      for (let i = 0; i < 2; ++i) m.runDownBlock(s, i);
      m.runMid(s);
      for (let i = 0; i < 2; ++i) m.runUpBlock(s, i);
      expect(relErr(m.finish(s).data(), a.data())).toBe(0);
      expect(a.shape).toEqual([2, 4, 9, 12]);
    });
  });

  it('scale_shift time embedding norm and a per-block head list build and run', () => {
    const m = new UNet2DConditionModel({ ...tinyCond, resnet_time_scale_shift: 'scale_shift', attention_head_dim: [2, 4], transformer_layers_per_block: [1, 2], use_linear_projection: true });
    expect(m.stateDict().get('down_blocks.0.resnets.0.time_emb_proj.weight')!.shape).toEqual([16, 32]);
    expect(m.stateDict().has('up_blocks.1.attentions.1.transformer_blocks.0.attn2.to_k.weight')).toBe(true);
    const y = noGrad(() => m.call(randn([1, 4, 8, 8], { seed: 4 }), 5, { encoderHiddenStates: randn([1, 3, 8], { seed: 5 }) }) as Tensor);
    expect(y.shape).toEqual([1, 4, 8, 8]);
  });
});

describe('U-Net config variants', () => {
  const run = (m: UNetBase, cond: object, ch = 4) => noGrad(() => m.call(randn([2, ch, 8, 8], { seed: 8 }), [1, 2], cond) as Tensor);
  const ehs = () => ({ encoderHiddenStates: randn([2, 3, 8], { seed: 9 }) });
  it('timestep class embedding concatenated, time_embedding_act_fn, plain mid block', () => {
    const m = new UNet2DConditionModel({ ...tinyCond, class_embed_type: 'timestep', class_embeddings_concat: true, time_embedding_act_fn: 'silu', mid_block_type: 'UNetMidBlock2D' });
    expect(m.stateDict().get('down_blocks.0.resnets.0.time_emb_proj.weight')!.shape).toEqual([8, 64]);
    expect(m.stateDict().has('mid_block.resnets.0.conv1.weight')).toBe(true);
    expect(m.stateDict().has('mid_block.attentions.0.to_q.weight')).toBe(false);
    expect(run(m, { ...ehs(), classLabels: tensor([5, 7]) }).shape).toEqual([2, 4, 8, 8]);
  });
  it('no mid block, only_cross_attention, identity class embedding', () => {
    const m = new UNet2DConditionModel({ ...tinyCond, mid_block_type: null, only_cross_attention: true, class_embed_type: 'identity' });
    expect(m.mid_block).toBe(null);
    expect(m.stateDict().get('down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_k.weight')!.shape).toEqual([8, 8]);
    expect(run(m, { ...ehs(), classLabels: randn([2, 32]) }).shape).toEqual([2, 4, 8, 8]);
  });
  it('LCM timestep_cond changes the output; SDXL text_time needs both inputs', () => {
    const lcm = new UNet2DConditionModel({ ...tinyCond, time_cond_proj_dim: 6 });
    const a = run(lcm, { ...ehs(), timestepCond: randn([2, 6], { seed: 1 }) }), b = run(lcm, { ...ehs(), timestepCond: randn([2, 6], { seed: 2 }) });
    expect(relErr(a.data(), b.data())).toBeGreaterThan(0);
    const xl = new UNet2DConditionModel({ ...tinyCond, addition_embed_type: 'text_time', addition_time_embed_dim: 4, projection_class_embeddings_input_dim: 10 + 6 * 4 });
    expect(run(xl, { ...ehs(), addedCondKwargs: { textEmbeds: randn([2, 10]), timeIds: randn([2, 6]) } }).shape).toEqual([2, 4, 8, 8]);
    expect(() => run(xl, ehs())).toThrow(/addedCondKwargs/);
  });
});

describe('U-Net gradients', () => {
  it('every parameter of a class-conditional UNet2DModel receives a finite, non-zero gradient', () => {
    const m = new UNet2DModel({ ...tinyUncond, num_class_embeds: 3, resnet_time_scale_shift: 'scale_shift' });
    m.train();
    const y = m.call(randn([2, 1, 8, 8], { seed: 6 }), [3, 700], { classLabels: tensor([0, 2], { dtype: 'i64' }) }) as Tensor;
    const loss = mean(square(y));
    loss.backward();
    for (const [name, p] of m.namedParameters()) {
      expect(p.grad, name).toBeTruthy();
      const g = p.grad!.data();
      expect(g.every(Number.isFinite), name).toBe(true);
      // The unused class row (1) has a zero gradient; everything else must be touched.
      if (name !== 'class_embedding.weight') expect(g.some((v) => v !== 0), name).toBe(true);
    }
  });

  it('ResnetBlock2D (no time embedding, rescaled) and spatial Attention pass gradcheck', () => {
    const rb = new ResnetBlock2D(4, { outChannels: 6, tembChannels: null, groups: 2, outputScaleFactor: 2 });
    const x = randn([1, 4, 3, 3], { seed: 7 }); x.requiresGrad = true;
    expect(gradcheck((a: Tensor) => rb.call(a) as Tensor, [x], { eps: 1e-2, atol: 2e-2, rtol: 2e-2 }).ok).toBe(true);
    const at = new Attention(4, { heads: 2, dimHead: 2, normNumGroups: 2, residualConnection: true, bias: true, rescaleOutputFactor: 2 });
    expect(gradcheck((a: Tensor) => at.call(a) as Tensor, [x], { eps: 1e-2, atol: 2e-2, rtol: 2e-2 }).ok).toBe(true);
  });

  it('Downsample2D with padding 0 pads right/bottom only; Upsample2D honours an explicit size', () => {
    const d = new Downsample2D(2, { padding: 0 });
    expect(noGrad(() => d.call(randn([1, 2, 7, 6])) as Tensor).shape).toEqual([1, 2, 3, 3]);
    const u = new Upsample2D(2);
    expect(noGrad(() => u.call(randn([1, 2, 4, 3]), [7, 5]) as Tensor).shape).toEqual([1, 2, 7, 5]);
    expect(noGrad(() => u.call(randn([1, 2, 4, 3])) as Tensor).shape).toEqual([1, 2, 8, 6]);
  });
});

describe('U-Net errors', () => {
  it('unsupported config values are ArgumentErrors naming key and value', () => {
    const cases: [Json, RegExp][] = [
      [{ ...tinyCond, down_block_types: ['SimpleCrossAttnDownBlock2D', 'DownBlock2D'] }, /down_block_types.*SimpleCrossAttnDownBlock2D/],
      [{ ...tinyCond, resnet_time_scale_shift: 'spatial' }, /resnet_time_scale_shift="spatial"/],
      [{ ...tinyCond, addition_embed_type: 'text' }, /addition_embed_type="text"/],
      [{ ...tinyCond, act_fn: 'tanhshrink' }, /act_fn="tanhshrink"/],
      [{ ...tinyCond, block_out_channels: [8, 16, 32] }, /block_out_channels/],
      [{ ...tinyCond, attention_head_dim: [2, 4, 8] }, /attention_head_dim/],
      [{ ...tinyCond, _class_name: 'UNet2DModel' }, /_class_name/],
      [{ ...tinyCond, time_embedding_type: 'fourier' }, /time_embedding_type="fourier"/],
    ];
    for (const [cfg, re] of cases) {
      expect(() => new UNet2DConditionModel(cfg), JSON.stringify(cfg)).toThrow(ArgumentError);
      expect(() => new UNet2DConditionModel(cfg)).toThrow(re);
    }
    expect(() => new UNet2DModel({ ...tinyUncond, downsample_type: 'resnet' })).toThrow(/downsample_type="resnet"/);
    // Keys a class does not use are ignored (with a warning), as diffusers does.
    expect(new UNet2DConditionModel({ ...tinyCond, not_a_key: 1 }).config.not_a_key).toBeUndefined();
    expect(() => new UNet2DModel({ ...tinyUncond, down_block_types: ['CrossAttnDownBlock2D', 'DownBlock2D'] })).toThrow(ArgumentError);
  });

  it('missing or mismatched inputs fail with typed errors', () => {
    const m = new UNet2DConditionModel(tinyCond);
    noGrad(() => {
      expect(() => m.call(randn([1, 4, 8, 8]), 1)).toThrow(/encoderHiddenStates/);
      expect(() => m.call(randn([1, 3, 8, 8]), 1, { encoderHiddenStates: randn([1, 2, 8]) })).toThrow(ShapeError);
      expect(() => m.call(randn([2, 4, 8, 8]), [1, 2, 3], { encoderHiddenStates: randn([2, 2, 8]) })).toThrow(ShapeError);
      const u = new UNet2DModel({ ...tinyUncond, num_class_embeds: 3 });
      expect(() => u.call(randn([1, 1, 8, 8]), 1)).toThrow(/classLabels/);
      const y = u.call(randn([1, 1, 8, 8]), 1, { classLabels: tensor([2], { dtype: 'i64' }) }) as Tensor;
      expect(y.shape).toEqual([1, 1, 8, 8]);
    });
  });
});
