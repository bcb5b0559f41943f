// The sampling loop on a small class-conditional U-Net: classifier-free guidance, seeded
// determinism, hooks, progress, trajectory, cancellation; and PNG grids.
import { describe, it, expect } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { UNet2DModel, DDIMScheduler, sample, tensor, manualSeed, saveImageGrid, imageGrid, encodePng, randn, ArgumentError, QdmError } from '@qdm/core';

const CONFIG = {
  sample_size: 8, in_channels: 1, out_channels: 1, block_out_channels: [8, 16], layers_per_block: 1, norm_num_groups: 4,
  down_block_types: ['DownBlock2D', 'AttnDownBlock2D'], up_block_types: ['AttnUpBlock2D', 'UpBlock2D'], attention_head_dim: 8, num_class_embeds: 4,
};
const SCHED = { num_train_timesteps: 1000, beta_schedule: 'linear', beta_start: 0.0001, beta_end: 0.02, clip_sample: true };

function setup() {
  manualSeed(1);
  return { unet: new UNet2DModel(CONFIG), scheduler: DDIMScheduler.fromConfig(SCHED) };
}
const labels = (v: number[]) => tensor(v, { dtype: 'i64' });

describe('sample()', () => {
  it('runs classifier-free guidance deterministically for a seed', async () => {
    const { unet, scheduler } = setup();
    const opts = { unet, scheduler, steps: 5, batch: 3, seed: 7, guidanceScale: 2.5, cond: { classLabels: labels([0, 1, 2]) }, uncond: { classLabels: labels([3, 3, 3]) } };
    const a = await sample(opts);
    const b = await sample(opts);
    expect(a.samples.shape).toEqual([3, 1, 8, 8]);
    expect(Buffer.from((a.samples.data() as Float32Array).buffer).equals(Buffer.from((b.samples.data() as Float32Array).buffer))).toBe(true);
    const c = await sample({ ...opts, seed: 8 });
    expect(Buffer.from((c.samples.data() as Float32Array).buffer).equals(Buffer.from((a.samples.data() as Float32Array).buffer))).toBe(false);
    // Guidance matters: scale 1 (no CFG) gives another result from the same noise.
    const plain = await sample({ ...opts, guidanceScale: 1 });
    expect(Buffer.from((plain.samples.data() as Float32Array).buffer).equals(Buffer.from((a.samples.data() as Float32Array).buffer))).toBe(false);
    expect(a.timesteps).toEqual(scheduler.timesteps);
  });
  it('calls hooks with the step index and timestep, reports progress, and returns the trajectory', async () => {
    const { unet, scheduler } = setup();
    const seen: Array<[number, number]> = [];
    const progress: number[] = [];
    const r = await sample({
      unet, scheduler, steps: 4, batch: 2, seed: 1, cond: { classLabels: labels([1, 2]) }, returnTrajectory: true,
      hooks: { beforeStep: (i) => seen.push([i.stepIndex, i.timestep]) }, onProgress: (d) => progress.push(d),
    });
    expect(seen.map((s) => s[0])).toEqual([0, 1, 2, 3]);
    expect(seen.map((s) => s[1])).toEqual(r.timesteps);
    expect(progress).toEqual([1, 2, 3, 4]);
    expect(r.trajectory!.length).toBe(4);
    expect(r.trajectory![0]!.shape).toEqual([2, 1, 8, 8]);
  });
  it('given latents replace the seeded noise; cancellation and bad options fail cleanly', async () => {
    const { unet, scheduler } = setup();
    const latents = randn([1, 1, 8, 8], { seed: 3 });
    const a = await sample({ unet, scheduler, steps: 2, latents, cond: { classLabels: labels([0]) } });
    const b = await sample({ unet, scheduler, steps: 2, latents, seed: 99, cond: { classLabels: labels([0]) } });
    expect(a.samples.data()).toEqual(b.samples.data());
    const ctrl = new AbortController();
    ctrl.abort();
    await expect(sample({ unet, scheduler, steps: 3, signal: ctrl.signal, cond: { classLabels: labels([0]) } })).rejects.toThrow(QdmError);
    await expect(sample({ unet, scheduler, steps: 3, guidanceScale: 3, cond: { classLabels: labels([0]) } })).rejects.toThrow(ArgumentError);
    await expect(sample({ unet, scheduler, steps: 0 })).rejects.toThrow(/steps must be a positive integer/);
  });
});

describe('images', () => {
  it('writes a valid PNG grid atomically', async () => {
    const x = randn([5, 1, 8, 8], { seed: 2 }).tanh();
    const g = imageGrid(x, { nrow: 3, padding: 1 });
    expect([g.width, g.height]).toEqual([3 * 9 + 1, 2 * 9 + 1]);
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'qdm-png-')), 'grid.png');
    await saveImageGrid(file, x, { nrow: 3 });
    const png = fs.readFileSync(file);
    expect([...png.subarray(0, 8)]).toEqual([137, 80, 78, 71, 13, 10, 26, 10]);
    expect(png.subarray(12, 16).toString('ascii')).toBe('IHDR');
    expect(fs.readdirSync(path.dirname(file))).toEqual(['grid.png']);
    expect(() => encodePng(2, 2, 1, new Uint8Array(3))).toThrow(ArgumentError);
  });
});
