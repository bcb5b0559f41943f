// The reference U-Nets (fixtures/unet: diffusers folders with inputs and diffusers' outputs) run
// on the GPU and match the float64 reference: fp32 (matmuls and convolutions through TF32, about
// 1e-3) and fp16 weights and activations (within 1e-2, the fixtures README's half-precision bound).
// Also: the timestep given as a device tensor (the CUDA-graph path) gives the same output, and a
// captured graph replays the forward. Skips without a GPU or without the fixtures.
import { describe, expect, it } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Tensor, cast, captureGraph, cudaSynchronize, loadModel, noGrad, tensor } from '@qdm/core';
import { loadSafetensors } from '../../src/io/safetensors.js';
import { cudaAvailable, relErr, skipNote } from './harness.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../..');
const fixtures = process.env.QDM_FIXTURES ?? path.resolve(repoRoot, '../shared/fixtures');
const present = fs.existsSync(path.join(fixtures, 'unet'));
const MODELS = ['ddpm-tiny', 'class-cond-tiny', 'sd-tiny', 'sd-tiny-3level', 'lcm-tiny', 'sdxl-tiny'];

function inputs(name: string, dtype: 'f32' | 'f16') {
  const io = loadSafetensors(path.join(fixtures, 'unet', name, 'io.safetensors'));
  const dev = (t: Tensor | undefined, float = true) => (t ? (float && dtype !== 'f32' ? cast(t, dtype) : t).to('cuda') : undefined);
  const timestep = Array.from(io['input.timestep']!.data() as ArrayLike<number | bigint>, Number);
  const cond = {
    ...(io['input.encoder_hidden_states'] ? { encoderHiddenStates: dev(io['input.encoder_hidden_states']) } : {}),
    ...(io['input.class_labels'] ? { classLabels: dev(io['input.class_labels'], false) } : {}),
    ...(io['input.timestep_cond'] ? { timestepCond: dev(io['input.timestep_cond']) } : {}),
    ...(io['input.text_embeds'] ? { addedCondKwargs: { textEmbeds: dev(io['input.text_embeds'])!, timeIds: dev(io['input.time_ids'])! } } : {}),
  };
  return { sample: dev(io['input.sample'])!, timestep, cond, ref: io['output.sample_f64']! };
}

describe.skipIf(!cudaAvailable || !present)(`fixture U-Nets on the GPU${skipNote}${present ? '' : ' (fixtures not found; set QDM_FIXTURES)'}`, () => {
  for (const name of MODELS) {
    for (const [dtype, tol] of [['f32', 2e-3], ['f16', 1e-2]] as const) {
      it(`${name} ${dtype}: relative error <= ${tol}`, async () => {
        const model = await loadModel(path.join(fixtures, 'unet', name), { device: 'cuda', dtype });
        model.eval();
        const { sample, timestep, cond, ref } = inputs(name, dtype);
        const out = noGrad(() => model.call(sample, timestep, cond) as Tensor);
        expect(out.device).toBe('cuda');
        expect(out.shape).toEqual(ref.shape);
        const err = relErr(out.data(), ref.data());
        expect(err, `${name} ${dtype}: ${err}`).toBeLessThanOrEqual(tol);
      });
    }
  }
  it('sd-tiny: a device timestep tensor gives the same output, and a captured graph replays it', async () => {
    const model = await loadModel(path.join(fixtures, 'unet', 'sd-tiny'), { device: 'cuda', dtype: 'f16' });
    model.eval();
    const { sample, timestep, cond } = inputs('sd-tiny', 'f16');
    const host = noGrad(() => model.call(sample, timestep, cond) as Tensor).data();
    const t = tensor(timestep, { dtype: 'i64' }).to('cuda');
    const dev = noGrad(() => model.call(sample, t, cond) as Tensor).data();
    expect(relErr(dev, host)).toBeLessThanOrEqual(1e-2);
    const g = captureGraph(() => model.call(sample, t, cond) as Tensor);
    g.replay(); cudaSynchronize();
    expect(relErr(g.outputs.data(), dev)).toBeLessThanOrEqual(1e-6);
    g.dispose();
  });
});
