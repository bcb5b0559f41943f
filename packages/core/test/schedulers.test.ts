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

/** A float tensor's values (data() returns a Float32Array for float dtypes). */
const arr = (t: Tensor): Float32Array => t.data() as Float32Array;

function relErr(ours: ArrayLike<number>, ref: ArrayLike<number>): number {
  let num = 0, den = 0;
  for (let i = 0; i < ref.length; ++i) { const d = ours[i]! - ref[i]!; num += d * d; den += ref[i]! * ref[i]!; }
  return Math.sqrt(num) / Math.max(Math.sqrt(den), 1e-30);
}

/** The fixtures' model: 0.5*tanh(x) + 0.001*t - 0.1*mean(x). */
function model(xin: Tensor, t: number): Tensor {
  const d = arr(xin);
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
        expect(relErr(arr(sch.addNoise(x0, noise, t)), fx.add_noise.out[k]!), `add_noise t=${t}`).toBeLessThan(1e-5);
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
        const eIn = relErr(arr(xin), s.x_in);
        const out = sch.step(model(xin, t), t, x, { noise: zeros(fx.shape) });
        const e = relErr(arr(out.prevSample), s.prev_sample);
        worst = Math.max(worst, e, eIn);
        expect(eIn, `${name} step ${i} x_in`).toBeLessThan(1e-5);
        expect(e, `${name} step ${i} prev_sample`).toBeLessThan(1e-5);
        if (s.pred_original_sample) expect(relErr(arr(out.predOriginalSample!), s.pred_original_sample), `${name} step ${i} pred_original_sample`).toBeLessThan(1e-5);
        if (s.denoised) expect(relErr(arr(out.denoised!), s.denoised), `${name} step ${i} denoised`).toBeLessThan(1e-5);
        x = out.prevSample;
      });
      if (process.env.QDM_VERBOSE) console.log(`${name}: worst relative error ${worst.toExponential(2)}`);
    });
  }
});

// ---- float64 references and defining equations ------------------------------------------------

type Vec = number[];
const comb = (...terms: Array<[Vec, number]>): Vec => terms[0]![0].map((_, k) => terms.reduce((s, [v, c]) => s + c * v[k]!, 0));
const vpOf = (sig: number) => { const a = 1 / Math.sqrt(sig * sig + 1); const s = sig * a; return { a, s, l: Math.log(a) - Math.log(s) }; };
const model64 = (x: Vec, t: number): Vec => { const mean = x.reduce((p, v) => p + v, 0) / x.length; return x.map((v) => 0.5 * Math.tanh(v) + 0.001 * t - 0.1 * mean); };
const X0: Vec = Array.from({ length: 32 }, (_, i) => Math.sin(i * 1.7) * 0.9);
const SHAPE = [1, 2, 4, 4];

/** Runs a scheduler through all its steps with the fixture model; returns every prev sample. */
function run(sch: Scheduler, steps: number, x0 = X0): Vec[] {
  sch.setTimesteps(steps);
  let x = tensor(x0.map((v) => v * sch.initNoiseSigma), { shape: SHAPE });
  const out: Vec[] = [];
  for (const t of sch.timesteps) {
    const r = sch.step(model(sch.scaleModelInput(x, t), t), t, x, { noise: zeros(SHAPE) });
    x = r.prevSample;
    out.push(Array.from(arr(x)));
  }
  return out;
}

/** diffusers' DPM-Solver multistep step formulas in float64 (orders 1-3, both algorithms and solver types). */
function refDpm(cfg: { order: number; pp: boolean; heun: boolean; lowerOrderFinal: boolean; finalZero: boolean }, sigmas: number[], ts: number[]): Vec[] {
  const L = ts.length, outs: Vec[] = [], res: Vec[] = [];
  let x = [...X0], lower = 0;
  for (let i = 0; i < L; ++i) {
    const m = model64(x, ts[i]!);
    const s0 = vpOf(sigmas[i]!), t = vpOf(sigmas[i + 1]!);
    outs.push(cfg.pp ? comb([x, 1 / s0.a], [m, -s0.s / s0.a]) : m);
    const lof = i === L - 1 && ((cfg.lowerOrderFinal && L < 15) || cfg.finalZero);
    const los = i === L - 2 && cfg.lowerOrderFinal && L < 15;
    const h = t.l - s0.l;
    const m0 = outs[outs.length - 1]!;
    const base = cfg.pp ? comb([x, t.s / s0.s], [m0, -t.a * (Math.exp(-h) - 1)]) : comb([x, t.a / s0.a], [m0, -t.s * (Math.exp(h) - 1)]);
    if (cfg.order === 1 || lower < 1 || lof) x = base;
    else if (cfg.order === 2 || lower < 2 || los) {
      const s1 = vpOf(sigmas[i - 1]!), m1 = outs[outs.length - 2]!;
      const r0 = (s0.l - s1.l) / h;
      const D1 = comb([m0, 1 / r0], [m1, -1 / r0]);
      const c = cfg.pp ? (cfg.heun ? t.a * ((Math.exp(-h) - 1) / h + 1) : -0.5 * t.a * (Math.exp(-h) - 1))
        : (cfg.heun ? -t.s * ((Math.exp(h) - 1) / h - 1) : -0.5 * t.s * (Math.exp(h) - 1));
      x = comb([base, 1], [D1, c]);
    } else {
      const s1 = vpOf(sigmas[i - 1]!), s2 = vpOf(sigmas[i - 2]!);
      const m1 = outs[outs.length - 2]!, m2 = outs[outs.length - 3]!;
      const r0 = (s0.l - s1.l) / h, r1 = (s1.l - s2.l) / h;
      const D10 = comb([m0, 1 / r0], [m1, -1 / r0]), D11 = comb([m1, 1 / r1], [m2, -1 / r1]);
      const D1 = comb([D10, 1], [D10, r0 / (r0 + r1)], [D11, -r0 / (r0 + r1)]);
      const D2 = comb([D10, 1 / (r0 + r1)], [D11, -1 / (r0 + r1)]);
      x = cfg.pp
        ? comb([base, 1], [D1, t.a * ((Math.exp(-h) - 1) / h + 1)], [D2, -t.a * ((Math.exp(-h) - 1 + h) / (h * h) - 0.5)])
        : comb([base, 1], [D1, -t.s * ((Math.exp(h) - 1) / h - 1)], [D2, -t.s * ((Math.exp(h) - 1 - h) / (h * h) - 0.5)]);
    }
    lower = Math.min(lower + 1, cfg.order);
    res.push(x);
  }
  return res;
}

function expectTrajectory(ours: Vec[], ref: Vec[], tol = 1e-5): void {
  expect(ours.length).toBe(ref.length);
  ours.forEach((o, i) => expect(relErr(o, ref[i]!), `step ${i}`).toBeLessThan(tol));
}

describe('timestep spacing (diffusers lists, 1000 train steps)', () => {
  it('DDIM 10 steps: leading, leading + offset, trailing, linspace', () => {
    const ts = (c: Record<string, unknown>) => { const s = DDIMScheduler.fromConfig(c); s.setTimesteps(10); return s.timesteps; };
    expect(ts({})).toEqual([900, 800, 700, 600, 500, 400, 300, 200, 100, 0]);
    expect(ts({ steps_offset: 1 })).toEqual([901, 801, 701, 601, 501, 401, 301, 201, 101, 1]);
    expect(ts({ timestep_spacing: 'trailing' })).toEqual([999, 899, 799, 699, 599, 499, 399, 299, 199, 99]);
    expect(ts({ timestep_spacing: 'linspace' })).toEqual([999, 888, 777, 666, 555, 444, 333, 222, 111, 0]);
  });
  it('DDIM trailing with a step ratio that is not an integer rounds half to even', () => {
    const s = DDIMScheduler.fromConfig({ timestep_spacing: 'trailing' });
    s.setTimesteps(8); // arange(1000, 0, -125) - 1
    expect(s.timesteps).toEqual([999, 874, 749, 624, 499, 374, 249, 124]);
    s.setTimesteps(3); // round(1000, 666.67, 333.33) - 1
    expect(s.timesteps).toEqual([999, 666, 332]);
  });
  it('DPM-Solver / UniPC 10 steps: linspace (n+1 points), leading, trailing', () => {
    const ts = (C: typeof DPMSolverMultistepScheduler | typeof UniPCMultistepScheduler, c: Record<string, unknown>) => { const s = schedulerFromConfig({ ...c, _class_name: C.name }); s.setTimesteps(10); return s.timesteps; };
    for (const C of [DPMSolverMultistepScheduler, UniPCMultistepScheduler]) {
      expect(ts(C, {})).toEqual([999, 899, 799, 699, 599, 500, 400, 300, 200, 100]);
      expect(ts(C, { timestep_spacing: 'leading', steps_offset: 1 })).toEqual([901, 811, 721, 631, 541, 451, 361, 271, 181, 91]);
      expect(ts(C, { timestep_spacing: 'trailing' })).toEqual([999, 899, 799, 699, 599, 499, 399, 299, 199, 99]);
    }
  });
  it('DPM-Solver lambda_min_clipped cuts the schedule where log-SNR/2 falls below the bound (cosine betas)', () => {
    const s = DPMSolverMultistepScheduler.fromConfig({ beta_schedule: 'squaredcos_cap_v2', lambda_min_clipped: -5.1 });
    s.setTimesteps(10);
    const lambda = (t: number) => 0.5 * Math.log(s.alphasCumprod[t]! / (1 - s.alphasCumprod[t]!));
    const first = s.timesteps[0]!;
    expect(first).toBeLessThan(999);
    expect(lambda(first)).toBeGreaterThanOrEqual(-5.1 - 1e-4);
    expect(lambda(first + 1)).toBeLessThan(-5.1 + 1e-4);
    const plain = DPMSolverMultistepScheduler.fromConfig({ beta_schedule: 'squaredcos_cap_v2' });
    plain.setTimesteps(10);
    expect(plain.timesteps[0]).toBe(999);
  });
  it('Euler: float32 linspace timesteps, leading/trailing, init_noise_sigma per spacing', () => {
    const lin = EulerDiscreteScheduler.fromConfig(SD);
    lin.setTimesteps(4);
    expect(lin.timesteps).toEqual([999, 666, 333, 0]);
    expect(lin.initNoiseSigma).toBeCloseTo(lin.sigmas[0]!, 6);
    const lead = EulerDiscreteScheduler.fromConfig({ ...SD, timestep_spacing: 'leading', steps_offset: 1 });
    lead.setTimesteps(4);
    expect(lead.timesteps).toEqual([751, 501, 251, 1]);
    expect(lead.initNoiseSigma).toBeCloseTo(Math.sqrt(lead.sigmas[0]! ** 2 + 1), 5);
    const tr = EulerAncestralDiscreteScheduler.fromConfig({ ...SD, timestep_spacing: 'trailing' });
    tr.setTimesteps(4);
    expect(tr.timesteps).toEqual([999, 749, 499, 249]);
  });
  it('PNDM with PRK warm-up: 12 PRK timesteps then PLMS', () => {
    const s = PNDMScheduler.fromConfig({});
    s.setTimesteps(50);
    expect(s.prkTimesteps).toEqual([980, 970, 970, 960, 960, 950, 950, 940, 940, 930, 930, 920]);
    expect(s.plmsTimesteps.slice(0, 3)).toEqual([920, 900, 880]);
    expect(s.plmsTimesteps[s.plmsTimesteps.length - 1]).toBe(0);
    expect(s.timesteps.length).toBe(12 + 47);
  });
  it('LCM picks from the original_inference_steps schedule', () => {
    const s = LCMScheduler.fromConfig({});
    s.setTimesteps(4);
    expect(s.timesteps).toEqual([999, 759, 499, 259]);
    s.setTimesteps(1);
    expect(s.timesteps).toEqual([999]);
    s.setTimesteps(8, { originalInferenceSteps: 100 });
    expect(s.timesteps).toEqual([999, 879, 749, 629, 499, 379, 249, 129]);
  });
});

describe('beta schedules', () => {
  it('squaredcos_cap_v2 follows the cosine alpha_bar and caps betas at 0.999', () => {
    const s = DDIMScheduler.fromConfig({ beta_schedule: 'squaredcos_cap_v2' });
    const ab = (t: number) => Math.cos(((t + 0.008) / 1.008) * Math.PI / 2) ** 2;
    expect(s.betas[0]).toBeCloseTo(1 - ab(1 / 1000) / ab(0), 9);
    expect(s.betas[500]).toBeCloseTo(1 - ab(501 / 1000) / ab(500 / 1000), 8);
    expect(s.betas[999]).toBe(Math.fround(0.999));
  });
  it('rescale_betas_zero_snr: terminal alpha_bar is 0 and the first is kept', () => {
    const plain = DDIMScheduler.fromConfig(SD);
    const z = DDIMScheduler.fromConfig({ ...SD, rescale_betas_zero_snr: true });
    expect(z.alphasCumprod[999]).toBe(0);
    expect(Math.abs(z.alphasCumprod[0]! - plain.alphasCumprod[0]!)).toBeLessThan(1e-6);
    // sqrt(alpha_bar) is an affine map of the original one: check the midpoint.
    const a0 = Math.sqrt(plain.alphasCumprod[0]!), aT = Math.sqrt(plain.alphasCumprod[999]!);
    const want = ((Math.sqrt(plain.alphasCumprod[500]!) - aT) * a0 / (a0 - aT)) ** 2;
    expect(Math.abs(z.alphasCumprod[500]! - want) / want).toBeLessThan(1e-5);
    // Euler keeps sigma finite: alpha_bar[-1] = 2^-24.
    const e = EulerDiscreteScheduler.fromConfig({ ...SD, rescale_betas_zero_snr: true });
    expect(e.alphasCumprod[999]).toBe(2 ** -24);
    expect(e.sigmas[0]).toBeCloseTo(Math.fround(Math.sqrt((1 - 2 ** -24) / 2 ** -24)), 0);
  });
  it('trained_betas replace the schedule', () => {
    const s = DDPMScheduler.fromConfig({ num_train_timesteps: 4, trained_betas: [0.1, 0.2, 0.3, 0.4] });
    expect(Array.from(s.alphasCumprod).map((v) => +v.toFixed(6))).toEqual([0.9, 0.72, 0.504, 0.3024]);
  });
});

describe('prediction types (recover x0 and epsilon from exact model outputs)', () => {
  const x0 = tensor(X0.map((v) => v * 0.5), { shape: SHAPE });
  const eps = tensor(X0.map((v, i) => Math.cos(i + v)), { shape: SHAPE });
  it('DDIM with v_prediction and sample prediction matches the closed-form DDIM step', () => {
    for (const pt of ['v_prediction', 'sample', 'epsilon'] as const) {
      const s = DDIMScheduler.fromConfig({ ...SD, prediction_type: pt, clip_sample: false });
      s.setTimesteps(10);
      const t = s.timesteps[2]!, tPrev = s.timesteps[3]!;
      const xt = s.addNoise(x0, eps, t);
      const out = pt === 'v_prediction' ? s.getVelocity(x0, eps, t) : pt === 'sample' ? x0 : eps;
      const r = s.step(out, t, xt);
      expect(relErr(arr(r.predOriginalSample!), arr(x0)), pt).toBeLessThan(1e-5);
      const aP = s.alphasCumprod[tPrev]!;
      const want = comb([Array.from(arr(x0)), Math.sqrt(aP)], [Array.from(arr(eps)), Math.sqrt(1 - aP)]);
      expect(relErr(arr(r.prevSample), want), pt).toBeLessThan(1e-5);
    }
  });
  it('Euler with v_prediction recovers x0 from a VP-scaled input', () => {
    const s = EulerDiscreteScheduler.fromConfig({ ...SD, prediction_type: 'v_prediction' });
    s.setTimesteps(10);
    const t = s.timesteps[3]!, sigma = s.sigmas[3]!;
    const a = 1 / Math.sqrt(sigma * sigma + 1);
    const xt = comb([Array.from(arr(x0)), 1], [Array.from(arr(eps)), sigma]);
    const v = comb([Array.from(arr(eps)), a], [Array.from(arr(x0)), -sigma * a]);
    const r = s.step(tensor(v, { shape: SHAPE }), t, tensor(xt, { shape: SHAPE }));
    expect(relErr(arr(r.predOriginalSample!), arr(x0))).toBeLessThan(1e-5);
    // prev = x0 + sigma_next * eps (an exact model moves along the noise direction)
    const want = comb([Array.from(arr(x0)), 1], [Array.from(arr(eps)), s.sigmas[4]!]);
    expect(relErr(arr(r.prevSample), want)).toBeLessThan(1e-5);
  });
  it('DDPM with sample prediction: the posterior mean', () => {
    const s = DDPMScheduler.fromConfig({ prediction_type: 'sample', clip_sample: false });
    s.setTimesteps(50);
    const t = s.timesteps[10]!, tp = s.timesteps[11]!;
    const xt = s.addNoise(x0, eps, t);
    const r = s.step(x0, t, xt, { noise: zeros(SHAPE) });
    const a = s.alphasCumprod[t]!, ap = s.alphasCumprod[tp]!, ca = a / ap, cb = 1 - ca;
    const want = comb([Array.from(arr(x0)), Math.sqrt(ap) * cb / (1 - a)], [Array.from(arr(xt)), Math.sqrt(ca) * (1 - ap) / (1 - a)]);
    expect(relErr(arr(r.prevSample), want)).toBeLessThan(1e-5);
  });
});

describe('stochastic parts', () => {
  const x = tensor(X0, { shape: SHAPE });
  const m = model(x, 500);
  const ones = tensor(new Array(32).fill(1), { shape: SHAPE });
  it('DDPM variance types scale the noise as diffusers', () => {
    const at = (vt: string) => {
      const s = DDPMScheduler.fromConfig({ variance_type: vt });
      s.setTimesteps(100);
      const t = s.timesteps[50]!;
      const d0 = arr(s.step(m, t, x, { noise: zeros(SHAPE) }).prevSample);
      const d1 = arr(s.step(m, t, x, { noise: ones }).prevSample);
      const a = s.alphasCumprod[t]!, ap = s.alphasCumprod[s.timesteps[51]!]!, cb = 1 - a / ap;
      return { diff: d1[0]! - d0[0]!, small: Math.sqrt(((1 - ap) / (1 - a)) * cb), large: Math.sqrt(cb) };
    };
    const small = at('fixed_small'), large = at('fixed_large'), slog = at('fixed_small_log');
    expect(small.diff).toBeCloseTo(small.small, 5);
    expect(slog.diff).toBeCloseTo(small.small, 5);
    expect(large.diff).toBeCloseTo(large.large, 5);
  });
  it('DDPM learned_range splits the channels and interpolates the log variance', () => {
    const s = DDPMScheduler.fromConfig({ variance_type: 'learned_range' });
    s.setTimesteps(100);
    const t = s.timesteps[50]!;
    const withVar = tensor([...Array.from(arr(m)), ...new Array(32).fill(0)], { shape: [1, 4, 4, 4] });
    const d0 = arr(s.step(withVar, t, x, { noise: zeros(SHAPE) }).prevSample);
    const d1 = arr(s.step(withVar, t, x, { noise: ones }).prevSample);
    const a = s.alphasCumprod[t]!, ap = s.alphasCumprod[s.timesteps[51]!]!, cb = 1 - a / ap;
    const small = ((1 - ap) / (1 - a)) * cb; // frac 0.5: geometric mean of small and large
    expect(d1[3]! - d0[3]!).toBeCloseTo(Math.exp(0.5 * (0.5 * Math.log(cb) + 0.5 * Math.log(small))), 5);
    expect(() => s.step(m, t, x)).toThrow(ArgumentError);
  });
  it('DDIM eta = 1 adds sigma_t * noise', () => {
    const s = DDIMScheduler.fromConfig({ clip_sample: false });
    s.setTimesteps(10);
    const t = 500;
    const d0 = arr(s.step(m, t, x, { eta: 1, noise: zeros(SHAPE) }).prevSample);
    const det = arr(s.step(m, t, x).prevSample);
    const d1 = arr(s.step(m, t, x, { eta: 1, noise: ones }).prevSample);
    const a = s.alphasCumprod[500]!, ap = s.alphasCumprod[400]!;
    const std = Math.sqrt(((1 - ap) / (1 - a)) * (1 - a / ap));
    expect(d1[0]! - d0[0]!).toBeCloseTo(std, 5);
    expect(relErr(d0, det)).toBeGreaterThan(1e-4); // eta also shrinks the direction term
  });
  it('Euler ancestral: with zero noise an Euler step to sigma_down; noise enters with sigma_up', () => {
    const s = EulerAncestralDiscreteScheduler.fromConfig(SD);
    s.setTimesteps(10);
    const xs = tensor(X0.map((v) => v * s.initNoiseSigma), { shape: SHAPE });
    const t = s.timesteps[0]!;
    const mo = model(s.scaleModelInput(xs, t), t);
    const d0 = arr(s.step(mo, t, xs, { noise: zeros(SHAPE) }).prevSample);
    const s2 = s.clone() as EulerAncestralDiscreteScheduler;
    s2.setTimesteps(10);
    const d1 = arr(s2.step(mo, t, xs, { noise: ones }).prevSample);
    const sg = s.sigmas[0]!, st = s.sigmas[1]!;
    const up = Math.sqrt(st * st * (sg * sg - st * st) / (sg * sg)), down = Math.sqrt(st * st - up * up);
    const want = comb([Array.from(arr(xs)), 1], [Array.from(arr(mo)), down - sg]); // x + eps*(sigma_down - sigma)
    expect(relErr(d0, want)).toBeLessThan(1e-5);
    expect(d1[0]! - d0[0]!).toBeCloseTo(up, 4);
    // a full zero-noise run ends at a finite sample
    expect(run(EulerAncestralDiscreteScheduler.fromConfig(SD), 10).at(-1)!.every(Number.isFinite)).toBe(true);
  });
  it('LCM: last step returns the denoised estimate; c_skip/c_out at t', () => {
    const s = LCMScheduler.fromConfig({});
    const { cSkip, cOut } = s.boundaryScalings(999);
    expect(cSkip).toBeCloseTo(0.25 / (9990 ** 2 + 0.25), 15);
    expect(cOut).toBeCloseTo(9990 / Math.sqrt(9990 ** 2 + 0.25), 12);
    s.setTimesteps(1);
    const r = s.step(m, 999, x, { noise: ones });
    expect(relErr(arr(r.prevSample), arr(r.denoised!))).toBe(0);
  });
});

describe('multistep solvers against float64 references', () => {
  it('DPM-Solver++ order 1 equals DDIM (trailing spacing, alpha_final = 1)', () => {
    const ddim = run(DDIMScheduler.fromConfig({ ...SD, timestep_spacing: 'trailing', clip_sample: false }), 10);
    const dpm = run(DPMSolverMultistepScheduler.fromConfig({ ...SD, timestep_spacing: 'trailing', solver_order: 1 }), 10);
    expectTrajectory(dpm, ddim);
  });
  it('DPM-Solver (noise prediction) order 1 equals DDIM before the sigma_min final step', () => {
    const ddim = run(DDIMScheduler.fromConfig({ ...SD, timestep_spacing: 'trailing', clip_sample: false }), 10);
    const dpm = run(DPMSolverMultistepScheduler.fromConfig({ ...SD, timestep_spacing: 'trailing', solver_order: 1, algorithm_type: 'dpmsolver', final_sigmas_type: 'sigma_min' }), 10);
    expectTrajectory(dpm.slice(0, -1), ddim.slice(0, -1));
  });
  for (const order of [1, 2, 3]) for (const algo of ['dpmsolver++', 'dpmsolver']) for (const st of ['midpoint', 'heun']) for (const steps of [8, 20]) {
    it(`DPM ${algo} order ${order} ${st}, ${steps} steps`, () => {
      const finalZero = algo === 'dpmsolver++';
      const s = DPMSolverMultistepScheduler.fromConfig({ ...SD, solver_order: order, algorithm_type: algo, solver_type: st, final_sigmas_type: finalZero ? 'zero' : 'sigma_min' });
      const ours = run(s, steps);
      const ref = refDpm({ order, pp: algo === 'dpmsolver++', heun: st === 'heun', lowerOrderFinal: true, finalZero }, s.sigmas, s.timesteps);
      expectTrajectory(ours, ref);
    });
  }
  it('UniPC first step (order-1 predictor, no corrector) is the DPM-Solver++ first-order step', () => {
    for (const solver_type of ['bh1', 'bh2']) {
      const u = UniPCMultistepScheduler.fromConfig({ ...SD, solver_type });
      const d = DPMSolverMultistepScheduler.fromConfig(SD);
      expect(relErr(run(u, 10)[0]!, run(d, 10)[0]!)).toBeLessThan(1e-6);
    }
  });
  for (const order of [1, 2, 3]) for (const st of ['bh1', 'bh2']) for (const px0 of [true, false]) {
    it(`UniPC ${st} order ${order} predict_x0=${px0}`, () => {
      const s = UniPCMultistepScheduler.fromConfig({ ...SD, solver_order: order, solver_type: st, predict_x0: px0, final_sigmas_type: px0 ? 'zero' : 'sigma_min' });
      const ours = run(s, 12);
      const ref = refUniPC({ order, bh2: st === 'bh2', px0 }, s.sigmas, s.timesteps);
      expectTrajectory(ours, ref);
    });
  }
  it('UniPC disable_corrector skips the corrector after the listed steps', () => {
    const on = run(UniPCMultistepScheduler.fromConfig(SD), 6);
    const off = run(UniPCMultistepScheduler.fromConfig({ ...SD, disable_corrector: [0] }), 6);
    expect(relErr(off[0]!, on[0]!)).toBe(0);
    expect(relErr(off[1]!, on[1]!)).toBeGreaterThan(1e-6);
  });
  it('PNDM PRK warm-up with a constant model output is one RK4 step per 4 calls', () => {
    const s = PNDMScheduler.fromConfig({});
    s.setTimesteps(50);
    const x = tensor(X0, { shape: SHAPE });
    const c = tensor(new Array(32).fill(0.3), { shape: SHAPE });
    const prev = (xv: Vec, t: number, tp: number) => {
      const a = s.alphasCumprod[t]!, ap = s.alphasCumprod[tp]!;
      const denom = a * Math.sqrt(1 - ap) + Math.sqrt(a * (1 - a) * ap);
      return xv.map((v) => Math.sqrt(ap / a) * v - ((ap - a) * 0.3) / denom);
    };
    let cur = x;
    const outs: Vec[] = [];
    for (let k = 0; k < 4; ++k) { cur = s.step(c, s.timesteps[k]!, cur).prevSample; outs.push(Array.from(arr(cur))); }
    expect(relErr(outs[0]!, prev(X0, 980, 970))).toBeLessThan(1e-6);
    expect(relErr(outs[3]!, prev(X0, 980, 960))).toBeLessThan(1e-6);
    // the full PRK + PLMS run stays finite
    const all = run(PNDMScheduler.fromConfig(SD), 20);
    expect(all.length).toBe(12 + 17);
    expect(all.at(-1)!.every(Number.isFinite)).toBe(true);
  });
});

/** diffusers' UniPC (multistep_uni_p/c_bh_update) in float64. */
function refUniPC(cfg: { order: number; bh2: boolean; px0: boolean }, sigmas: number[], ts: number[]): Vec[] {
  const L = ts.length, outs: Vec[] = [], res: Vec[] = [];
  let x = [...X0], last: Vec | null = null, lower = 0, thisOrder = 1;
  const sys = (rks: number[], hh: number, order: number) => {
    const hPhi1 = Math.expm1(hh); let hPhiK = hPhi1 / hh - 1; let f = 1;
    const B = cfg.bh2 ? Math.expm1(hh) : hh;
    const R: number[][] = [], b: number[] = [];
    for (let k = 1; k <= order; ++k) { R.push(rks.map((r) => r ** (k - 1))); b.push(hPhiK * f / B); f *= k + 1; hPhiK = hPhiK / hh - 1 / f; }
    return { R, b, hPhi1, B };
  };
  const solve = (A: number[][], b: number[]) => { // Cramer's rule, n <= 3
    const det = (M: number[][]): number => M.length === 1 ? M[0]![0]! : M.length === 2 ? M[0]![0]! * M[1]![1]! - M[0]![1]! * M[1]![0]!
      : M[0]!.reduce((s, v, j) => s + (j % 2 ? -1 : 1) * v * det(M.slice(1).map((r) => r.filter((_, c) => c !== j))), 0);
    const d = det(A);
    return b.map((_, j) => det(A.map((r, i) => r.map((v, c) => (c === j ? b[i]! : v)))) / d);
  };
  const update = (xs: Vec, iT: number, iS: number, order: number, siOf: (k: number) => number, mT: Vec | null): Vec => {
    const t = vpOf(sigmas[iT]!), s0 = vpOf(sigmas[iS]!);
    const h = t.l - s0.l, m0 = outs[outs.length - (mT ? 2 : 1)]!;
    const rks: number[] = [], D1s: Vec[] = [];
    for (let k = 1; k < order; ++k) {
      const mi = outs[outs.length - (mT ? 2 : 1) - k]!;
      const rk = (vpOf(sigmas[siOf(k)]!).l - s0.l) / h;
      rks.push(rk); D1s.push(comb([mi, 1 / rk], [m0, -1 / rk]));
    }
    rks.push(1);
    const hh = cfg.px0 ? -h : h;
    const { R, b, hPhi1, B } = sys(rks, hh, order);
    const [cx, cm, cr] = cfg.px0 ? [t.s / s0.s, -t.a * hPhi1, -t.a * B] : [t.a / s0.a, -t.s * hPhi1, -t.s * B];
    let out = comb([xs, cx], [m0, cm]);
    if (mT) {
      const rhos = order === 1 ? [0.5] : solve(R, b);
      D1s.forEach((d, k) => { out = comb([out, 1], [d, cr * rhos[k]!]); });
      out = comb([out, 1], [mT, cr * rhos[rhos.length - 1]!], [m0, -cr * rhos[rhos.length - 1]!]);
    } else if (D1s.length) {
      const rhos = order === 2 ? [0.5] : solve(R.slice(0, -1).map((r) => r.slice(0, -1)), b.slice(0, -1));
      D1s.forEach((d, k) => { out = comb([out, 1], [d, cr * rhos[k]!]); });
    }
    return out;
  };
  for (let i = 0; i < L; ++i) {
    const m = model64(x, ts[i]!);
    const s = vpOf(sigmas[i]!);
    const conv = cfg.px0 ? comb([x, 1 / s.a], [m, -s.s / s.a]) : m;
    outs.push(conv);
    if (i > 0 && last) x = update(last, i, i - 1, thisOrder, (k) => i - (k + 1), conv);
    thisOrder = Math.min(Math.min(cfg.order, L - i), lower + 1);
    last = x;
    x = update(x, i + 1, i, thisOrder, (k) => i - k, null);
    lower = Math.min(lower + 1, cfg.order);
    res.push(x);
  }
  return res;
}

describe('config, loading, state', () => {
  it('config holds every key with diffusers defaults plus _class_name; unknown keys are ignored', () => {
    const s = DDIMScheduler.fromConfig({ ...SD, some_future_key: 3, _diffusers_version: '0.30.0' });
    expect(s.config._class_name).toBe('DDIMScheduler');
    expect(s.config._diffusers_version).toBe('0.30.0');
    expect(s.config.beta_schedule).toBe('scaled_linear');
    expect(s.config.clip_sample).toBe(true);
    expect(s.config.timestep_spacing).toBe('leading');
    expect('some_future_key' in s.config).toBe(false);
    const d = new DPMSolverMultistepScheduler();
    expect(d.config.solver_order).toBe(2);
    expect(d.config.algorithm_type).toBe('dpmsolver++');
    expect(d.config.lambda_min_clipped).toBe(-Infinity);
  });
  it('bad values throw ArgumentError naming the key', () => {
    const bad: Array<[typeof DDIMScheduler | typeof DDPMScheduler | typeof DPMSolverMultistepScheduler, Record<string, unknown>, string]> = [
      [DDIMScheduler, { beta_schedule: 'quadratic' }, 'beta_schedule'],
      [DDIMScheduler, { prediction_type: 'flow' }, 'prediction_type'],
      [DDIMScheduler, { timestep_spacing: 'even' }, 'timestep_spacing'],
      [DDIMScheduler, { num_train_timesteps: 0 }, 'num_train_timesteps'],
      [DDIMScheduler, { clip_sample: 'yes' }, 'clip_sample'],
      [DDIMScheduler, { thresholding: 1 }, 'thresholding'],
      [DDPMScheduler, { variance_type: 'huge' }, 'variance_type'],
      [DDPMScheduler, { trained_betas: [0.1, 'x'] }, 'trained_betas'],
      [DPMSolverMultistepScheduler, { solver_order: 0 }, 'solver_order'],
      [DPMSolverMultistepScheduler, { algorithm_type: 'dpmsolver' }, 'final_sigmas_type'],
    ];
    for (const [C, cfg, key] of bad) {
      expect(() => new C(cfg), key).toThrow(ArgumentError);
      expect(() => new C(cfg), key).toThrow(key);
    }
    expect(() => DDPMScheduler.fromConfig({ num_train_timesteps: 3, trained_betas: [0.1] })).toThrow(/trained_betas/);
  });
  it('schedulerFromConfig dispatches on _class_name and lists the supported ones otherwise', () => {
    for (const name of ['DDPMScheduler', 'DDIMScheduler', 'PNDMScheduler', 'DPMSolverMultistepScheduler', 'EulerDiscreteScheduler', 'EulerAncestralDiscreteScheduler', 'UniPCMultistepScheduler', 'LCMScheduler']) {
      const s = schedulerFromConfig({ _class_name: name });
      expect(s.constructor.name).toBe(name);
      expect(s.config._class_name).toBe(name);
      s.setTimesteps(4);
      expect(s.timesteps.length).toBeGreaterThanOrEqual(4);
    }
    expect(() => schedulerFromConfig({ _class_name: 'HeunDiscreteScheduler' })).toThrow(/supported: DDPMScheduler, DDIMScheduler/);
    // the same noise schedule under another sampler, as the CLI does
    const base = DDIMScheduler.fromConfig(SD);
    expect(schedulerFromConfig({ ...base.config, _class_name: 'EulerDiscreteScheduler' }).config.beta_schedule).toBe('scaled_linear');
  });
  it('loadScheduler reads scheduler_config.json (dir or file, -Infinity allowed); QDM_IO for missing or bad files', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qdm-sched-'));
    try {
      fs.writeFileSync(path.join(dir, 'scheduler_config.json'), '{"_class_name": "DPMSolverMultistepScheduler", "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "lambda_min_clipped": -Infinity, "solver_order": 3}');
      const s = await loadScheduler(dir);
      expect(s).toBeInstanceOf(DPMSolverMultistepScheduler);
      expect(s.config.solver_order).toBe(3);
      expect(s.config.lambda_min_clipped).toBe(-Infinity);
      expect((await loadScheduler(path.join(dir, 'scheduler_config.json'))).config.solver_order).toBe(3);
      await expect(loadScheduler(path.join(dir, 'nope'))).rejects.toMatchObject({ code: 'QDM_IO' });
      fs.writeFileSync(path.join(dir, 'bad.json'), '{"_class_name": ');
      await expect(loadScheduler(path.join(dir, 'bad.json'))).rejects.toBeInstanceOf(QdmError);
      await expect(loadScheduler(path.join(dir, 'bad.json'))).rejects.toMatchObject({ code: 'QDM_IO' });
      fs.writeFileSync(path.join(dir, 'unknown.json'), '{"_class_name": "KarrasVeScheduler"}');
      await expect(loadScheduler(path.join(dir, 'unknown.json'))).rejects.toBeInstanceOf(ArgumentError);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
  it('setTimesteps validates its argument', () => {
    expect(() => DDIMScheduler.fromConfig({}).setTimesteps(0)).toThrow(ArgumentError);
    expect(() => DDIMScheduler.fromConfig({}).setTimesteps(1001)).toThrow(ArgumentError);
    expect(() => LCMScheduler.fromConfig({}).setTimesteps(51)).toThrow(ArgumentError);
    expect(() => DDIMScheduler.fromConfig({}).step(zeros(SHAPE), 1, zeros(SHAPE))).toThrow(/setTimesteps/);
  });
  it('addNoise / getVelocity with one timestep per batch item', () => {
    const s = DDPMScheduler.fromConfig({});
    const x0 = tensor([...X0, ...X0.map((v) => -v)], { shape: [2, 2, 4, 4] });
    const n = tensor([...X0.map((v) => v * 0.3), ...X0], { shape: [2, 2, 4, 4] });
    const both = arr(s.addNoise(x0, n, [10, 900]));
    const x0a = tensor(X0, { shape: SHAPE }), na = tensor(X0.map((v) => v * 0.3), { shape: SHAPE });
    expect(relErr(both.subarray(0, 32), arr(s.addNoise(x0a, na, 10)))).toBeLessThan(1e-7);
    const x0b = tensor(X0.map((v) => -v), { shape: SHAPE }), nb = tensor(X0, { shape: SHAPE });
    expect(relErr(both.subarray(32), arr(s.addNoise(x0b, nb, 900)))).toBeLessThan(1e-7);
    const v = arr(s.getVelocity(x0, n, [10, 900]));
    const a = s.alphasCumprod[900]!;
    expect(v[32]!).toBeCloseTo(Math.sqrt(a) * X0[0]! - Math.sqrt(1 - a) * -X0[0]!, 6);
    expect(() => s.addNoise(x0, n, [1, 2, 3])).toThrow(ArgumentError);
    expect(() => s.addNoise(x0, n, 1000)).toThrow(ArgumentError);
    const e = EulerDiscreteScheduler.fromConfig(SD);
    e.setTimesteps(10);
    expect(() => e.addNoise(x0, n, 123)).toThrow(ArgumentError);
  });
  it('multistep state survives the caller disposing samples inside tidy scopes; clone() starts fresh', async () => {
    const { tidy, keep } = await import('@qdm/core');
    for (const make of [() => DPMSolverMultistepScheduler.fromConfig({ ...SD, solver_order: 3 }), () => UniPCMultistepScheduler.fromConfig({ ...SD, solver_order: 3 }), () => PNDMScheduler.fromConfig(SD), () => PNDMScheduler.fromConfig({ ...SD, skip_prk_steps: true })]) {
      const ref = run(make(), 10);
      const s = make();
      s.setTimesteps(10);
      let x = tensor(X0, { shape: SHAPE });
      const ours: Vec[] = [];
      for (const t of s.timesteps) {
        const next = tidy(() => keep(s.step(model(s.scaleModelInput(x, t), t), t, x, { noise: zeros(SHAPE) }).prevSample));
        x.dispose();
        x = next;
        ours.push(Array.from(arr(x)));
      }
      expectTrajectory(ours, ref, 1e-7);
      const c = s.clone();
      expect(c).not.toBe(s);
      expect(c.config).toEqual(s.config);
      expect(run(c, 10)).toEqual(ref);
      s.dispose();
    }
  });
});

describe('dynamic thresholding', () => {
  /** Reference _threshold_sample on one batch item: s = clamp(quantile(|x|, ratio), 1, max). */
  const threshold = (v: Vec, ratio: number, max: number): Vec => {
    const a = v.map(Math.abs).sort((p, q) => p - q);
    const pos = ratio * (a.length - 1), lo = Math.floor(pos);
    const q = a[lo]! + (a[Math.min(lo + 1, a.length - 1)]! - a[lo]!) * (pos - lo);
    const sv = Math.min(Math.max(q, 1), max);
    return v.map((x) => Math.min(Math.max(x, -sv), sv) / sv);
  };
  const big = [...X0.map((v, i) => v * 4 + (i % 3)), ...X0.map((v) => v * 0.5)];
  it('DDIM thresholds x0 per batch item (and wins over clip_sample)', () => {
    const s = DDIMScheduler.fromConfig({ ...SD, prediction_type: 'sample', thresholding: true, dynamic_thresholding_ratio: 0.9, sample_max_value: 3 });
    s.setTimesteps(10);
    const x = tensor(big, { shape: [2, 2, 4, 4] });
    const r = s.step(x, s.timesteps[0]!, x);
    const got = arr(r.predOriginalSample!);
    expect(relErr(got.subarray(0, 32), threshold(big.slice(0, 32), 0.9, 3))).toBeLessThan(1e-6);
    expect(relErr(got.subarray(32), threshold(big.slice(32), 0.9, 3))).toBeLessThan(1e-6);
    expect(Math.max(...Array.from(got.subarray(0, 32)).map(Math.abs))).toBeLessThanOrEqual(1 + 1e-6);
  });
  it('DPM-Solver++ thresholds the denoised estimate; dpmsolver recomputes epsilon from it (same first-order step)', () => {
    const cfg = { ...SD, thresholding: true, dynamic_thresholding_ratio: 0.8, sample_max_value: 2, solver_order: 1, final_sigmas_type: 'sigma_min' };
    const pp = DPMSolverMultistepScheduler.fromConfig(cfg);
    const eps = DPMSolverMultistepScheduler.fromConfig({ ...cfg, algorithm_type: 'dpmsolver' });
    pp.setTimesteps(10); eps.setTimesteps(10);
    const x = tensor(X0.map((v) => v * 3), { shape: SHAPE });
    const t = pp.timesteps[6]!; // low noise: x0 = (x - sigma eps)/alpha exceeds 1
    const m = model(x, t);
    pp.step(m, pp.timesteps[5]!, x); eps.step(m, eps.timesteps[5]!, x); // advance both to step 6
    const a = pp.step(m, t, x), b = eps.step(m, t, x);
    const { a: al, s: sg } = vpOf(pp.sigmas[6]!);
    const x0 = comb([X0.map((v) => v * 3), 1 / al], [Array.from(arr(m)), -sg / al]);
    expect(relErr(threshold(x0, 0.8, 2), x0)).toBeGreaterThan(0.05); // the threshold is active here
    expect(relErr(arr(a.denoised!), threshold(x0, 0.8, 2))).toBeLessThan(1e-5);
    expect(relErr(arr(a.prevSample), arr(b.prevSample))).toBeLessThan(1e-5);
  });
});

describe('Karras sigmas and SDE DPM-Solver', () => {
  const karras = (lo: number, hi: number, n: number) => Array.from({ length: n }, (_, i) => (hi ** (1 / 7) + (i / (n - 1)) * (lo ** (1 / 7) - hi ** (1 / 7))) ** 7);
  it('DPM-Solver++ Karras: rho-7 sigmas over the training range, timesteps mapped back through log sigma', () => {
    const s = DPMSolverMultistepScheduler.fromConfig({ ...SD, use_karras_sigmas: true });
    s.setTimesteps(12);
    const train = Array.from(s.alphasCumprod, (a) => Math.sqrt((1 - a) / a));
    const want = karras(train[0]!, train[999]!, 12);
    expect(relErr(s.sigmas.slice(0, -1), want)).toBeLessThan(1e-6);
    expect(s.sigmas.at(-1)).toBe(0);
    expect(s.timesteps[0]).toBe(999);
    expect(s.timesteps.at(-1)).toBe(0);
    for (let i = 1; i < 12; ++i) expect(s.timesteps[i]!).toBeLessThanOrEqual(s.timesteps[i - 1]!);
    // each timestep is the training step whose sigma is nearest in log space (to rounding)
    s.timesteps.forEach((t, i) => {
      const ls = Math.log(s.sigmas[i]!);
      const lo = Math.log(train[Math.max(t - 1, 0)]!), hi = Math.log(train[Math.min(t + 1, 999)]!);
      expect(ls).toBeGreaterThanOrEqual(lo - 1e-6);
      expect(ls).toBeLessThanOrEqual(hi + 1e-6);
    });
    const ours = run(s, 12);
    expectTrajectory(ours, refDpm({ order: 2, pp: true, heun: false, lowerOrderFinal: true, finalZero: true }, s.sigmas, s.timesteps));
  });
  it('Euler Karras: sigmas between the schedule ends (or sigma_min/sigma_max), fractional timesteps', () => {
    const s = EulerDiscreteScheduler.fromConfig({ ...SD, use_karras_sigmas: true });
    s.setTimesteps(10);
    const train = Array.from(s.alphasCumprod, (a) => Math.sqrt((1 - a) / a));
    expect(relErr(s.sigmas.slice(0, -1), karras(train[0]!, train[999]!, 10))).toBeLessThan(1e-6);
    expect(s.timesteps[0]).toBeCloseTo(999, 3);
    expect(s.timesteps.at(-1)).toBeCloseTo(0, 3);
    expect(s.timesteps.some((t) => !Number.isInteger(t))).toBe(true);
    const c = EulerDiscreteScheduler.fromConfig({ ...SD, use_karras_sigmas: true, sigma_min: 0.1, sigma_max: 10 });
    c.setTimesteps(5);
    expect(relErr(c.sigmas.slice(0, -1), karras(0.1, 10, 5))).toBeLessThan(1e-6);
    expect(run(c, 5).at(-1)!.every(Number.isFinite)).toBe(true);
  });
  for (const algo of ['sde-dpmsolver++', 'sde-dpmsolver']) for (const st of ['midpoint', 'heun']) {
    it(`${algo} ${st}: zero-noise trajectory and the noise coefficient`, () => {
      const pp = algo === 'sde-dpmsolver++';
      const cfg = { ...SD, algorithm_type: algo, solver_type: st, final_sigmas_type: pp ? 'zero' : 'sigma_min' };
      const s = DPMSolverMultistepScheduler.fromConfig(cfg);
      const ours = run(s, 8);
      // float64 reference (diffusers' SDE updates, orders 1-2, noise = 0)
      const L = s.timesteps.length, outs: Vec[] = [], ref: Vec[] = [];
      let x = [...X0];
      for (let i = 0; i < L; ++i) {
        const m = model64(x, s.timesteps[i]!);
        const s0 = vpOf(s.sigmas[i]!), t = vpOf(s.sigmas[i + 1]!);
        outs.push(pp ? comb([x, 1 / s0.a], [m, -s0.s / s0.a]) : m);
        const h = t.l - s0.l, m0 = outs[i]!;
        const base = pp ? comb([x, (t.s / s0.s) * Math.exp(-h)], [m0, t.a * (1 - Math.exp(-2 * h))]) : comb([x, t.a / s0.a], [m0, -2 * t.s * (Math.exp(h) - 1)]);
        const first = i === 0 || (i === L - 1); // warm-up, and lower_order_final (L < 15)
        if (first) x = base;
        else {
          const r0 = (s0.l - vpOf(s.sigmas[i - 1]!).l) / h;
          const D1 = comb([m0, 1 / r0], [outs[i - 1]!, -1 / r0]);
          const c = pp ? (st === 'heun' ? t.a * ((1 - Math.exp(-2 * h)) / (-2 * h) + 1) : 0.5 * t.a * (1 - Math.exp(-2 * h)))
            : (st === 'heun' ? -2 * t.s * ((Math.exp(h) - 1) / h - 1) : -t.s * (Math.exp(h) - 1));
          x = comb([base, 1], [D1, c]);
        }
        ref.push(x);
      }
      expectTrajectory(ours, ref);
      // the noise enters with sigma_t * sqrt(1 - e^{-2h}) (++) or sigma_t * sqrt(e^{2h} - 1)
      const a = DPMSolverMultistepScheduler.fromConfig(cfg), b = DPMSolverMultistepScheduler.fromConfig(cfg);
      a.setTimesteps(8); b.setTimesteps(8);
      const xs = tensor(X0, { shape: SHAPE }), m = model(xs, a.timesteps[0]!);
      const d = arr(b.step(m, b.timesteps[0]!, xs, { noise: tensor(new Array(32).fill(1), { shape: SHAPE }) }).prevSample)[0]! - arr(a.step(m, a.timesteps[0]!, xs, { noise: zeros(SHAPE) }).prevSample)[0]!;
      const t = vpOf(a.sigmas[1]!), s0 = vpOf(a.sigmas[0]!), h = t.l - s0.l;
      expect(d).toBeCloseTo(pp ? t.s * Math.sqrt(1 - Math.exp(-2 * h)) : t.s * Math.sqrt(Math.exp(2 * h) - 1), 5);
    });
  }
  it('SDE variants reject solver_order 3 and sde-dpmsolver with a zero final sigma', () => {
    expect(() => DPMSolverMultistepScheduler.fromConfig({ algorithm_type: 'sde-dpmsolver++', solver_order: 3 })).toThrow(/solver_order/);
    expect(() => DPMSolverMultistepScheduler.fromConfig({ algorithm_type: 'sde-dpmsolver' })).toThrow(/final_sigmas_type/);
  });
});
