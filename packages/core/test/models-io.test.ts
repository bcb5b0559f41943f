// AutoencoderKL against diffusers' float64 outputs, and model folders: loadModel (shape-only
// build + adopted tensors) on every fixture, saveModel round trips (fp16 variant, shards), and
// clear errors for missing files and mismatched keys.
import { describe, it, expect } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  AutoencoderKL, UNet2DModel, loadModel, saveModel, loadSafetensors, saveSafetensors, noGrad, randn, tensor, Tensor,
  StateDictError, QdmError, ArgumentError, type UNetBase,
} from '@qdm/core';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const fixtures = process.env.QDM_FIXTURES ?? path.resolve(repoRoot, '../shared/fixtures');
const present = fs.existsSync(path.join(fixtures, 'vae'));
if (!present) console.warn(`models-io.test: reference fixtures not found at ${fixtures} (set QDM_FIXTURES); fixture tests are skipped`);

function relErr(got: ArrayLike<number>, ref: ArrayLike<number>): number {
  let num = 0, den = 0;
  for (let i = 0; i < ref.length; ++i) { const d = Number(got[i]) - Number(ref[i]); num += d * d; den += Number(ref[i]) ** 2; }
  return Math.sqrt(num / Math.max(den, 1e-300));
}
const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), 'qdm-models-'));

describe('AutoencoderKL matches diffusers', () => {
  it.skipIf(!present)('vae-tiny: encoder mean/logvar and decoder within 1e-5 of the float64 reference', async () => {
    const dir = path.join(fixtures, 'vae', 'vae-tiny');
    const vae = (await loadModel(dir)) as AutoencoderKL;
    expect(vae).toBeInstanceOf(AutoencoderKL);
    const io = loadSafetensors(path.join(dir, 'io.safetensors'));
    noGrad(() => {
      const post = vae.encode(io['input.sample']!);
      expect(relErr(post.mean.contiguous().data() as Float32Array, io['output.latent_mean_f64']!.data() as Float32Array)).toBeLessThan(1e-5);
      expect(relErr(post.logvar.contiguous().data() as Float32Array, io['output.latent_logvar_f64']!.data() as Float32Array)).toBeLessThan(1e-5);
      const dec = vae.decode(io['input.latent']!);
      expect(relErr(dec.data() as Float32Array, io['output.decoded_f64']!.data() as Float32Array)).toBeLessThan(1e-5);
    });
  });
  it('rejects bad configs and inputs with typed errors', () => {
    expect(() => new AutoencoderKL({ block_out_channels: [16, 32], down_block_types: ['DownEncoderBlock2D'], norm_num_groups: 8 })).toThrow(ArgumentError);
    expect(new AutoencoderKL({ bogus: 1, block_out_channels: [8], norm_num_groups: 4 }).config.bogus).toBeUndefined();  // ignored, as diffusers does
    const vae = new AutoencoderKL({ block_out_channels: [8], norm_num_groups: 4, latent_channels: 2 });
    expect(() => vae.decode(randn([1, 3, 4, 4]))).toThrow(/expected \[B, 2, h, w\]/);
  });
});

describe('model folders', () => {
  const unets = present ? fs.readdirSync(path.join(fixtures, 'unet')) : [];
  it.skipIf(!present)('every fixture U-Net loads through loadModel and matches its float64 output', async () => {
    for (const name of unets) {
      const dir = path.join(fixtures, 'unet', name);
      const unet = (await loadModel(dir)) as UNetBase;
      const io = loadSafetensors(path.join(dir, 'io.safetensors'));
      const cond: Record<string, unknown> = {};
      if (io['input.encoder_hidden_states']) cond.encoderHiddenStates = io['input.encoder_hidden_states'];
      if (io['input.class_labels']) cond.classLabels = io['input.class_labels'];
      if (io['input.timestep_cond']) cond.timestepCond = io['input.timestep_cond'];
      if (io['input.text_embeds']) cond.addedCondKwargs = { textEmbeds: io['input.text_embeds'], timeIds: io['input.time_ids'] };
      const out = noGrad(() => unet.call(io['input.sample']!, io['input.timestep']!, cond) as Tensor);
      expect(relErr(out.data() as Float32Array, io['output.sample_f64']!.data() as Float32Array), name).toBeLessThan(1e-5);
    }
  });
  it('saveModel/loadModel round trip: fp32, the fp16 variant, and shards', async () => {
    const config = { sample_size: 8, in_channels: 1, out_channels: 1, block_out_channels: [8, 16], down_block_types: ['DownBlock2D', 'AttnDownBlock2D'], up_block_types: ['AttnUpBlock2D', 'UpBlock2D'], layers_per_block: 1, norm_num_groups: 4, attention_head_dim: 8 };
    const model = new UNet2DModel(config);
    const x = randn([2, 1, 8, 8], { seed: 3 });
    const ref = noGrad(() => model.call(x, [10, 500]) as Tensor).data() as Float32Array;
    const d1 = tmp();
    await saveModel(model, d1);
    const back = (await loadModel(d1)) as UNet2DModel;
    expect(Buffer.from((noGrad(() => back.call(x, [10, 500]) as Tensor).data() as Float32Array).buffer).equals(Buffer.from(ref.buffer))).toBe(true);
    const d2 = tmp();
    await saveModel(model, d2, { variant: 'fp16', maxShardBytes: 4000 });
    const files = fs.readdirSync(d2).sort();
    expect(files).toContain('diffusion_pytorch_model.fp16.safetensors.index.json');
    expect(files.filter((f) => f.endsWith('.safetensors')).length).toBeGreaterThan(2);
    await expect(loadModel(d2)).rejects.toThrow(/pass variant/);
    const half = (await loadModel(d2, { variant: 'fp16' })) as UNet2DModel;
    const out = noGrad(() => half.call(x, [10, 500]) as Tensor).data() as Float32Array;
    expect(relErr(out, ref)).toBeLessThan(5e-3);
    const kept = (await loadModel(d2, { variant: 'fp16', dtype: 'f16' })) as UNet2DModel;
    expect(kept.parameters()[0]!.dtype).toBe('f16');
  });
  it('missing files, bad JSON and mismatched keys give typed errors naming the problem', async () => {
    await expect(loadModel(path.join(tmp(), 'nope'))).rejects.toThrow(QdmError);
    const d = tmp();
    fs.writeFileSync(path.join(d, 'config.json'), '{ not json');
    await expect(loadModel(d)).rejects.toThrow(/not valid JSON/);
    const model = new UNet2DModel({ sample_size: 8, in_channels: 1, out_channels: 1, block_out_channels: [8, 8], down_block_types: ['DownBlock2D', 'DownBlock2D'], up_block_types: ['UpBlock2D', 'UpBlock2D'], layers_per_block: 1, norm_num_groups: 4 });
    const d3 = tmp();
    await saveModel(model, d3);
    const file = path.join(d3, 'diffusion_pytorch_model.safetensors');
    const sd = loadSafetensors(file);
    delete sd['conv_in.weight'];
    sd['extra.weight'] = tensor([1, 2]);
    saveSafetensors(file, sd);
    const err = await loadModel(d3).catch((e) => e);
    expect(err).toBeInstanceOf(StateDictError);
    expect(err.missing).toEqual(['conv_in.weight']);
    expect(err.unexpected).toEqual(['extra.weight']);
    expect(err.message).toMatch(/conv_in\.weight/);
    fs.writeFileSync(path.join(d3, 'config.json'), JSON.stringify({ _class_name: 'NoSuchModel' }));
    await expect(loadModel(d3)).rejects.toThrow(/unknown model class 'NoSuchModel'/);
  });
});
