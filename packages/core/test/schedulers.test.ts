// Schedulers against diffusers: recorded trajectories (fixtures/schedulers/*.json, the model
// 0.5*tanh(x) + 0.001*t - 0.1*mean(x), zero noise inside steps) and, where no fixture exists,
// the defining equations computed in float64 here, plus known diffusers timestep lists.
import { describe, it, expect } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  Tensor, tensor, zeros, ArgumentError, QdmError,
  schedulerFromConfig, loadScheduler, Scheduler,
  DDPMScheduler, DDIMScheduler, PNDMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler,
  EulerAncestralDiscreteScheduler, UniPCMultistepScheduler, LCMScheduler,
} from '@qdm/core';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const fixtures = process.env.QDM_FIXTURES ?? path.resolve(repoRoot, '../shared/fixtures');
const schedDir = path.join(fixtures, 'schedulers');
const fixturesPresent = fs.existsSync(schedDir);
if (!fixturesPresent) console.warn(`schedulers.test: reference fixtures not found at ${schedDir} (set QDM_FIXTURES); fixture tests are skipped`);

const SD = { beta_start: 0.00085, beta_end: 0.012, beta_schedule: 'scaled_linear' };

function relErr(ours: ArrayLike<number>, ref: ArrayLike<number>): number {
  let num = 0, den = 0;
  for (let i = 0; i < ref.length; ++i) { const d = ours[i]! - ref[i]!; num += d * d; den += ref[i]! * ref[i]!; }
  return Math.sqrt(num) / Math.max(Math.sqrt(den), 1e-30);
}

/** The fixtures' model: 0.5*tanh(x) + 0.001*t - 0.1*mean(x). */
function model(xin: Tensor, t: number): Tensor {
  const d = xin.data();
  let mean = 0;
  for (const v of d) mean += v;
  mean /= d.length;
  return tensor(Float32Array.from(d, (v) => 0.5 * Math.tanh(v) + 0.001 * t - 0.1 * mean), { shape: xin.shape });
}

interface Fixture {
  class: string; config: Record<string, unknown>; num_inference_steps: number; timesteps: number[]; init_noise_sigma: number;
  sigmas?: number[]; x_init: number[]; shape: number[];
  steps: Array<{ t: number; x_in: number[]; prev_sample: number[]; pred_original_sample?: number[]; denoised?: number[] }>;
  add_noise: { timesteps: number[]; x0: number[]; noise: number[]; out: number[][] };
  alphas_cumprod_first_last: [number, number];
}

const FIXTURES = ['ddim-sd-50', 'ddim-linear-20', 'ddpm-linear-1000', 'pndm-sd-50', 'dpmpp2m-sd-20', 'euler-sd-30', 'lcm-sd-4'];

describe('schedulers vs diffusers fixtures', () => {
  for (const name of FIXTURES) {
    it.skipIf(!fixturesPresent)(`${name}: timesteps, sigmas, trajectory, add_noise`, () => {
      const fx = JSON.parse(fs.readFileSync(path.join(schedDir, `${name}.json`), 'utf8').replace(/-Infinity/g, '"-Infinity"')) as Fixture;
      if (fx.config.lambda_min_clipped === '-Infinity') fx.config.lambda_min_clipped = -Infinity;
      const sch = schedulerFromConfig({ ...fx.config, _class_name: fx.class });
      expect(sch.constructor.name).toBe(fx.class);
      // add_noise and the training schedule on a fresh scheduler (as recorded).
      const [a0, aN] = fx.alphas_cumprod_first_last;
      expect(Math.abs(sch.alphasCumprod[0]! - a0) / a0).toBeLessThan(1e-6);
      expect(Math.abs(sch.alphasCumprod[sch.alphasCumprod.length - 1]! - aN) / aN).toBeLessThan(1e-5);
      const x0 = tensor(fx.add_noise.x0), noise = tensor(fx.add_noise.noise);
      fx.add_noise.timesteps.forEach((t, k) => {
        expect(relErr(sch.addNoise(x0, noise, t).data(), fx.add_noise.out[k]!), `add_noise t=${t}`).toBeLessThan(1e-5);
      });

      sch.setTimesteps(fx.num_inference_steps);
      expect(sch.timesteps).toEqual(fx.timesteps);
      expect(Math.abs(sch.initNoiseSigma - fx.init_noise_sigma) / fx.init_noise_sigma).toBeLessThan(1e-6);
      if (fx.sigmas) expect(relErr(sch.sigmas!, fx.sigmas)).toBeLessThan(1e-6);

      let x = tensor(fx.x_init, { shape: fx.shape });
      let worst = 0;
      fx.steps.forEach((s, i) => {
        const t = sch.timesteps[i]!;
        expect(t).toBe(s.t);
        const xin = sch.scaleModelInput(x, t);
        const eIn = relErr(xin.data(), s.x_in);
        const out = sch.step(model(xin, t), t, x, { noise: zeros(fx.shape) });
        const e = relErr(out.prevSample.data(), s.prev_sample);
        worst = Math.max(worst, e, eIn);
        expect(eIn, `${name} step ${i} x_in`).toBeLessThan(1e-5);
        expect(e, `${name} step ${i} prev_sample`).toBeLessThan(1e-5);
        if (s.pred_original_sample) expect(relErr(out.predOriginalSample!.data(), s.pred_original_sample), `${name} step ${i} pred_original_sample`).toBeLessThan(1e-5);
        if (s.denoised) expect(relErr(out.denoised!.data(), s.denoised), `${name} step ${i} denoised`).toBeLessThan(1e-5);
        x = out.prevSample;
      });
      if (process.env.QDM_VERBOSE) console.log(`${name}: worst relative error ${worst.toExponential(2)}`);
    });
  }
});
