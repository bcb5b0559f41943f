// DeepCache on real U-Nets: exactness at interval 1, the layers a retrieval step runs, the
// schedules, the timestep guard, the adaptive policy, and the reference numberings.
import { describe, it, expect } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { UNet2DModel, UNet2DConditionModel, withContext, withMetaTensors, randn, noGrad, Tensor, manualSeed, ArgumentError } from '@qdm/core';
import { applyCache, branchFromHelperId, branchFromPipeline, unetLayers } from '@qdm/cache';

const fixtures = process.env.QDM_FIXTURES ?? path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../../shared/fixtures');
const sd15Path = path.join(fixtures, 'unet-keys', 'sd15.json');
if (!fs.existsSync(sd15Path)) console.warn(`deepcache.test: ${sd15Path} not found (set QDM_FIXTURES); the SD 1.5 numbering test is skipped`);

const SMALL = {
  sample_size: 8, in_channels: 1, out_channels: 1, block_out_channels: [8, 16], layers_per_block: 1, norm_num_groups: 4,
  down_block_types: ['DownBlock2D', 'DownBlock2D'], up_block_types: ['UpBlock2D', 'UpBlock2D'], attention_head_dim: 8,
};

function makeUnet(): UNet2DModel { manualSeed(5); return new UNet2DModel(SMALL); }

/** Runs `steps` calls as a sampler would (step index and timestep in the forward context). */
function run(unet: UNet2DModel, steps: number, x: Tensor): Float32Array[] {
  const outs: Float32Array[] = [];
  noGrad(() => {
    for (let i = 0; i < steps; ++i) {
      const t = 999 - Math.floor((i * 1000) / steps);
      // A slowly moving input, like a denoising trajectory.
      const xi = x.mul(1 - i / (4 * steps));
      outs.push(withContext({ stepIndex: i, numSteps: steps, timestep: t }, () => unet.call(xi, t) as Tensor).data() as Float32Array);
    }
  });
  return outs;
}
const same = (a: Float32Array, b: Float32Array) => Buffer.from(a.buffer).equals(Buffer.from(b.buffer));
function relErr(a: Float32Array, b: Float32Array): number {
  let n = 0, d = 0; for (let i = 0; i < a.length; ++i) { n += (a[i]! - b[i]!) ** 2; d += b[i]! ** 2; } return Math.sqrt(n / d);
}

describe('DeepCache', () => {
  const x = randn([2, 1, 8, 8], { seed: 1 });
  it('interval 1 gives exactly the uncached outputs', () => {
    const unet = makeUnet();
    const plain = run(unet, 6, x);
    const h = applyCache(unet, { interval: 1 });
    const cached = run(unet, 6, x);
    plain.forEach((p, i) => expect(same(cached[i]!, p), `step ${i}`).toBe(true));
    expect(h.report().retrievedSteps).toEqual([]);
  });
  it('a retrieval step runs only the shallow branch (counted layers) and reuses deep features', () => {
    const unet = makeUnet();
    const plain = run(unet, 6, x);
    const h = applyCache(unet, { interval: 3, branch: 0 });
    const cached = run(unet, 6, x);
    const r = h.report();
    expect(r.fullSteps).toEqual([0, 3]);
    expect(r.retrievedSteps).toEqual([1, 2, 4, 5]);
    // Full: 2 time-embedding linears, conv_in, down (3 + 1 + 4), mid (3 + 4 + 3), up (4 + 4 + 1 + 4 + 4), conv_out = 39.
    // Branch 0: time embedding, conv_in, the up layer consuming conv_in's output (4), conv_out = 8.
    expect(r.steps.map((s) => s.layers)).toEqual([39, 8, 8, 39, 8, 8]);
    expect(same(cached[0]!, plain[0]!) && same(cached[3]!, plain[3]!)).toBe(true);
    for (const i of [1, 2, 4, 5]) {
      const e = relErr(cached[i]!, plain[i]!);
      expect(e).toBeGreaterThan(0);
      expect(e).toBeLessThan(0.5);
    }
    h.remove();
    const again = run(unet, 6, x);
    plain.forEach((p, i) => expect(same(again[i]!, p)).toBe(true));
  });
  it('a deeper branch recomputes more layers and stays closer to the uncached result', () => {
    const unet = makeUnet();
    const plain = run(unet, 4, x);
    const h0 = applyCache(unet, { interval: 2, branch: 0 });
    const c0 = run(unet, 4, x);
    h0.remove();
    const h1 = applyCache(unet, { interval: 2, branch: 1 });
    const c1 = run(unet, 4, x);
    expect(h1.report().steps.map((s) => s.layers)).toEqual([39, 15, 39, 15]);
    expect(relErr(c1[1]!, plain[1]!)).toBeLessThan(relErr(c0[1]!, plain[1]!));
    h1.remove();
  });
  it('the non-uniform schedule picks the reference full steps; a new sampling run resets the cache', () => {
    const unet = makeUnet();
    const h = applyCache(unet, { interval: 5, schedule: 'non-uniform', center: 15, power: 1.4 });
    run(unet, 50, randn([1, 1, 8, 8], { seed: 2 }));
    expect(h.report().fullSteps).toEqual([0, 5, 9, 13, 17, 21, 26, 31, 37, 43]);
    run(unet, 3, randn([1, 1, 8, 8], { seed: 2 }));
    expect(h.report().steps.length).toBe(3);
  });
  it('the timestep guard computes fully after a large jump', () => {
    const unet = makeUnet();
    const h = applyCache(unet, { interval: 10, maxTimestepGap: 250 });
    run(unet, 8, x);  // timesteps 999, 874, 749, 624, ...: a gap over 250 every third step
    expect(h.report().fullSteps).toEqual([0, 3, 6]);
  });
  it('the adaptive policy decides from the branch feature change', () => {
    const unet = makeUnet();
    const always = applyCache(unet, { policy: 'adaptive', threshold: 0 });
    run(unet, 5, x);
    expect(always.report().retrievedSteps).toEqual([]);
    always.remove();
    const lazy = applyCache(unet, { policy: 'adaptive', threshold: 1e9, maxConsecutive: 2 });
    run(unet, 7, x);
    expect(lazy.report().fullSteps).toEqual([0, 3, 6]);
    expect(lazy.report().steps[1]!.change).toBeGreaterThan(0);
  });
  it.skipIf(!fs.existsSync(sd15Path))('maps both reference numberings on SD 1.5', () => {
    const sd15 = JSON.parse(fs.readFileSync(sd15Path, 'utf8'));
    const unet = withMetaTensors(() => new UNet2DConditionModel(sd15.config));
    expect(unetLayers(unet).numSkips).toBe(12);
    expect(branchFromHelperId(unet, 0)).toBe(0);       // conv_in only, then up_blocks[3].resnets[2]
    expect(branchFromPipeline(unet, 0, 0)).toBe(1);    // down_blocks[0] layer 0 fresh: one deeper
    expect(branchFromHelperId(unet, 1)).toBe(1);
    expect(branchFromHelperId(unet, 3)).toBe(3);
  });
  it('rejects bad options', () => {
    const small = makeUnet();
    expect(() => applyCache(small, { branch: 4 })).toThrow(ArgumentError);
    expect(() => applyCache(small, { interval: 0 })).toThrow(ArgumentError);
  });
});
