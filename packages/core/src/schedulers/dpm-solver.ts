// DPMSolverMultistepScheduler (DPM-Solver and DPM-Solver++, Lu et al. 2022), as diffusers'
// scheduling_dpmsolver_multistep.py: orders 1-3 with the midpoint or heun second-order
// formulas, lower-order warm-up, lower_order_final / euler_at_final, final sigma 0 or
// sigma_min. The model output is converted to x0 (dpmsolver++) or epsilon (dpmsolver) and the
// converted outputs are kept (owned copies) for the multistep formulas. The SDE variants
// (sde-dpmsolver++, sde-dpmsolver; orders 1-2 as diffusers) and Karras sigmas are supported;
// exponential / beta / Lu sigmas and flow sigmas are not (rejected by the config).
import { ArgumentError } from '../errors.js';
import type { Tensor } from '../tensor.js';
import { keep, tidy } from '../memory.js';
import { slice } from '../ops/shape.js';
import { interpIndex, karrasSigmas, npArange, npLinspace, roundHalfEven, sigmaToT, sigmasFromAlphas, f32 } from './betas.js';
import {
  Scheduler, betaKeys, cfgBool, cfgEnum, cfgInt, cfgNum, cfgOnly, thresholdKeys, PREDICTION_TYPES, SPACINGS,
  asFloat, batchLincomb, limitX0, lincomb, release, stepNoise, type ConfigSchema, type SchedulerConfig, type StepOptions, type StepOutput,
} from './base.js';

const off = (what: string) => `${what} are not implemented`;

export const DPM_SCHEMA: ConfigSchema = {
  ...betaKeys({ beta_start: 0.0001, beta_end: 0.02, beta_schedule: 'linear' }),
  solver_order: cfgInt(2, 1),
  prediction_type: cfgEnum('epsilon', PREDICTION_TYPES),
  ...thresholdKeys(),
  algorithm_type: cfgEnum('dpmsolver++', ['dpmsolver++', 'dpmsolver', 'sde-dpmsolver++', 'sde-dpmsolver', 'deis']),
  solver_type: cfgEnum('midpoint', ['midpoint', 'heun', 'logrho', 'bh1', 'bh2']),
  lower_order_final: cfgBool(true),
  euler_at_final: cfgBool(false),
  use_karras_sigmas: cfgBool(false),
  use_exponential_sigmas: cfgOnly(false, off('exponential sigmas')),
  use_beta_sigmas: cfgOnly(false, off('beta sigmas')),
  use_lu_lambdas: cfgOnly(false, off('Lu lambdas')),
  use_flow_sigmas: cfgOnly(false, off('flow sigmas')),
  flow_shift: cfgNum(1.0),
  final_sigmas_type: cfgEnum('zero', ['zero', 'sigma_min']),
  lambda_min_clipped: cfgNum(-Infinity),
  variance_type: cfgEnum(null, ['learned', 'learned_range']),
  timestep_spacing: cfgEnum('linspace', SPACINGS),
  steps_offset: cfgInt(0),
  use_dynamic_shifting: cfgOnly(false, 'dynamic shifting is not implemented'),
};

/** alpha_t = 1/sqrt(sigma^2+1), sigma_t = sigma*alpha_t, lambda = log(alpha_t) - log(sigma_t). */
export function alphaSigma(sigma: number): { alpha: number; sigma: number; lambda: number } {
  const alpha = 1 / Math.sqrt(sigma * sigma + 1);
  const s = sigma * alpha;
  return { alpha, sigma: s, lambda: Math.log(alpha) - Math.log(s) };
}

/**
 * The timesteps and sigmas shared by DPM-Solver and UniPC (n + 1 points, the last dropped,
 * then np.interp'ed sigmas and the final sigma).
 */
export function multistepSchedule(sch: Scheduler, trainSigmas: Float64Array, n: number, lastTimestep: number): { timesteps: number[]; sigmas: number[] } {
  const c = sch.config, N = sch.numTrainTimesteps;
  const spacing = c.timestep_spacing as string;
  let ts: number[];
  if (spacing === 'linspace') ts = npLinspace(0, lastTimestep - 1, n + 1).map(roundHalfEven).reverse().slice(0, -1);
  else if (spacing === 'leading') {
    const r = Math.floor(lastTimestep / (n + 1));
    ts = Array.from({ length: n + 1 }, (_, i) => i * r).reverse().slice(0, -1).map((v) => v + (c.steps_offset as number));
  } else ts = npArange(lastTimestep, 0, -N / n).map((v) => roundHalfEven(v) - 1);
  let sig: number[];
  if (c.use_karras_sigmas) {
    // Karras sigmas over the whole training range; timesteps mapped back and rounded.
    sig = karrasSigmas(trainSigmas[0]!, trainSigmas[N - 1]!, n);
    ts = sig.map((s) => roundHalfEven(sigmaToT(s, trainSigmas)));
  } else sig = ts.map((t) => interpIndex(t, trainSigmas));
  // UniPC's Karras branch ends at the last Karras sigma; everything else at the training minimum.
  const last = c.final_sigmas_type !== 'sigma_min' ? 0 : c.use_karras_sigmas && c._class_name === 'UniPCMultistepScheduler' ? sig[sig.length - 1]! : trainSigmas[0]!;
  return { timesteps: ts, sigmas: [...sig, last].map(f32) };
}

/**
 * The solvers' model-output conversion (DPM-Solver's and UniPC's convert_model_output): x0 for
 * the data-prediction forms, epsilon otherwise; with thresholding, x0 is thresholded (and, for
 * DPM-Solver's noise form, epsilon recomputed from it; UniPC's noise form is not thresholded).
 */
export function convertOutput(config: SchedulerConfig, dataPrediction: boolean, m: Tensor, x: Tensor, sigmaValue: number, thresholdNoiseForm = true): Tensor {
  const { alpha, sigma } = alphaSigma(sigmaValue);
  const pt = config.prediction_type as string;
  return tidy(() => {
    let x0: Tensor;
    if (pt === 'epsilon') x0 = lincomb([lincomb([x, 1], [m, -sigma]), 1 / alpha]);
    else if (pt === 'sample') x0 = lincomb([m, 1]);
    else x0 = lincomb([x, alpha], [m, -sigma]);
    if (dataPrediction) return limitX0(config, x0);
    if (!config.thresholding || !thresholdNoiseForm) {
      if (pt === 'epsilon') return lincomb([m, 1]);
      if (pt === 'sample') return lincomb([lincomb([x, 1], [m, -alpha]), 1 / sigma]);
      return lincomb([m, alpha], [x, sigma]);
    }
    return lincomb([lincomb([x, 1], [limitX0(config, x0), -alpha]), 1 / sigma]);
  });
}

/** Shared state of the multistep solvers (DPM-Solver, UniPC): sigma table, history, step index. */
export abstract class MultistepScheduler extends Scheduler {
  override sigmas: number[];
  protected readonly trainSigmas: Float64Array;
  protected modelOutputs: Array<Tensor | null>;
  protected lowerOrderNums = 0;

  protected constructor(cls: string, schema: ConfigSchema, json: SchedulerConfig) {
    super(cls, schema, json);
    if (this.config.rescale_betas_zero_snr) this.alphasCumprod[this.alphasCumprod.length - 1] = 2 ** -24;
    this.trainSigmas = sigmasFromAlphas(this.alphasCumprod);
    const N = this.numTrainTimesteps;
    // As diffusers before set_timesteps: descending timesteps beside the ascending sigma table.
    this.timesteps = npLinspace(0, N - 1, N).map(f32).reverse();
    this.sigmas = Array.from(this.trainSigmas);
    this.modelOutputs = new Array(this.order).fill(null);
  }

  get order(): number { return this.config.solver_order as number; }

  protected resetHistory(): void {
    for (const m of this.modelOutputs) release(m);
    this.modelOutputs = new Array(this.order).fill(null);
    this.lowerOrderNums = 0;
    this.stepIndex = null;
  }

  override dispose(): void { this.resetHistory(); }

  /** Shifts the history left and stores an owned converted output at the end. */
  protected pushOutput(m: Tensor): void {
    release(this.modelOutputs[0]);
    for (let i = 0; i < this.order - 1; ++i) this.modelOutputs[i] = this.modelOutputs[i + 1]!;
    this.modelOutputs[this.order - 1] = keep(m);
  }

  /** diffusers' _init_step_index: first match, second when repeated, the last step when absent. */
  protected override initStepIndex(t: number): number {
    if (this.stepIndex === null) this.stepIndex = this.multistepIndex(t);
    return this.stepIndex;
  }

  private multistepIndex(t: number): number {
    const hits: number[] = [];
    this.timesteps.forEach((v, i) => { if (v === t) hits.push(i); });
    return hits.length === 0 ? this.timesteps.length - 1 : hits.length > 1 ? hits[1]! : hits[0]!;
  }

  /** alpha_t x0 + sigma_t noise at the sigma of each timestep (the last step's when absent, as diffusers). */
  override addNoise(x0: Tensor, noise: Tensor, t: number | number[]): Tensor {
    const st = this.timestepList(t).map((ti) => alphaSigma(this.sigmas[this.multistepIndex(ti)]!));
    return batchLincomb(asFloat(x0), st.map((s) => s.alpha), asFloat(noise), st.map((s) => s.sigma), `${this.constructor.name}.addNoise`);
  }

  /** The model output with a learned variance's extra channels dropped. */
  protected stripVariance(m: Tensor): Tensor {
    const vt = this.config.variance_type;
    return (vt === 'learned' || vt === 'learned_range') && this.predictionType === 'epsilon' ? slice(m, 1, 0, 3) : m;
  }
}

export class DPMSolverMultistepScheduler extends MultistepScheduler {
  constructor(json: SchedulerConfig = {}) {
    super('DPMSolverMultistepScheduler', DPM_SCHEMA, json);
    // diffusers maps deis to dpmsolver++ and the UniPC/DEIS solver types to midpoint.
    if (this.config.algorithm_type === 'deis') this.config.algorithm_type = 'dpmsolver++';
    if (this.config.solver_type !== 'midpoint' && this.config.solver_type !== 'heun') this.config.solver_type = 'midpoint';
    const algo = this.config.algorithm_type as string;
    if ((algo === 'dpmsolver' || algo === 'sde-dpmsolver') && this.config.final_sigmas_type === 'zero') {
      throw new ArgumentError(`DPMSolverMultistepScheduler config: final_sigmas_type 'zero' is not supported for algorithm_type '${algo}'; choose 'sigma_min' (as diffusers)`);
    }
    if (algo.startsWith('sde-') && this.order > 2) {
      throw new ArgumentError(`DPMSolverMultistepScheduler config: solver_order ${this.order} is not supported for algorithm_type '${algo}' (diffusers has no third-order SDE update)`);
    }
  }

  get isDataPrediction(): boolean { return this.config.algorithm_type === 'dpmsolver++' || this.config.algorithm_type === 'sde-dpmsolver++'; }
  get isSde(): boolean { return (this.config.algorithm_type as string).startsWith('sde-'); }

  setTimesteps(n: number): void {
    this.checkSteps(n, 'DPMSolverMultistepScheduler');
    const N = this.numTrainTimesteps;
    // lambda clipping: searchsorted over the ascending (flipped) lambda table.
    const minL = this.config.lambda_min_clipped as number;
    let clipped = 0;
    if (minL > -Infinity) {
      const lambdas: number[] = [];
      for (let i = N - 1; i >= 0; --i) { const a = this.alphasCumprod[i]!; lambdas.push(f32(Math.log(f32(Math.sqrt(a))) - Math.log(f32(Math.sqrt(1 - a))))); }
      while (clipped < N && lambdas[clipped]! < minL) clipped++;
    }
    const { timesteps, sigmas } = multistepSchedule(this, this.trainSigmas, n, N - clipped);
    this.timesteps = timesteps;
    this.sigmas = sigmas;
    this.numInferenceSteps = timesteps.length;
    this.resetHistory();
  }

  /** x0 (dpmsolver++) or epsilon (dpmsolver) from the raw model output at the current sigma. */
  convertModelOutput(modelOutput: Tensor, sample: Tensor): Tensor {
    return convertOutput(this.config, this.isDataPrediction, this.stripVariance(modelOutput), sample, this.sigmas[this.stepIndex!]!);
  }

  /** opts.noise / opts.generator feed the SDE variants' noise term (diffusers' variance_noise / generator). */
  step(modelOutput: Tensor, t: number, sample: Tensor, opts: StepOptions = {}): StepOutput {
    if (this.numInferenceSteps === null) throw new ArgumentError('DPMSolverMultistepScheduler.step: call setTimesteps() first');
    const i = this.initStepIndex(t);
    if (i >= this.timesteps.length) throw new ArgumentError('DPMSolverMultistepScheduler.step: no steps left (call setTimesteps() again)');
    const c = this.config, L = this.timesteps.length;
    const lowerOrderFinal = i === L - 1 && ((c.euler_at_final as boolean) || ((c.lower_order_final as boolean) && L < 15) || c.final_sigmas_type === 'zero');
    const lowerOrderSecond = i === L - 2 && (c.lower_order_final as boolean) && L < 15;
    const x = asFloat(sample);
    const converted = this.convertModelOutput(asFloat(modelOutput), x);
    this.pushOutput(converted);
    const prev = tidy(() => {
      const noise = this.isSde ? stepNoise(x, opts) : null;
      if (this.order === 1 || this.lowerOrderNums < 1 || lowerOrderFinal) return this.firstOrder(converted, x, noise);
      if (this.order === 2 || this.lowerOrderNums < 2 || lowerOrderSecond) return this.secondOrder(x, noise);
      return this.thirdOrder(x);
    });
    if (this.lowerOrderNums < this.order) this.lowerOrderNums++;
    this.stepIndex = i + 1;
    const out: StepOutput = { prevSample: prev };
    if (this.isDataPrediction) out.denoised = lincomb([converted, 1]);
    return out;
  }

  private firstOrder(m: Tensor, x: Tensor, noise: Tensor | null): Tensor {
    const i = this.stepIndex!;
    const t = alphaSigma(this.sigmas[i + 1]!), s = alphaSigma(this.sigmas[i]!);
    const h = t.lambda - s.lambda;
    if (this.config.algorithm_type === 'sde-dpmsolver++') {
      return lincomb([x, (t.sigma / s.sigma) * Math.exp(-h)], [m, t.alpha * (1 - Math.exp(-2 * h))], [noise!, t.sigma * Math.sqrt(1 - Math.exp(-2 * h))]);
    }
    if (this.config.algorithm_type === 'sde-dpmsolver') {
      return lincomb([x, t.alpha / s.alpha], [m, -2 * (t.sigma * (Math.exp(h) - 1))], [noise!, t.sigma * Math.sqrt(Math.exp(2 * h) - 1)]);
    }
    if (this.isDataPrediction) return lincomb([x, t.sigma / s.sigma], [m, -t.alpha * (Math.exp(-h) - 1)]);
    return lincomb([x, t.alpha / s.alpha], [m, -t.sigma * (Math.exp(h) - 1)]);
  }

  private secondOrder(x: Tensor, noise: Tensor | null): Tensor {
    const i = this.stepIndex!, K = this.order;
    const t = alphaSigma(this.sigmas[i + 1]!), s0 = alphaSigma(this.sigmas[i]!), s1 = alphaSigma(this.sigmas[i - 1]!);
    const m0 = this.modelOutputs[K - 1]!, m1 = this.modelOutputs[K - 2]!;
    const h = t.lambda - s0.lambda, h0 = s0.lambda - s1.lambda;
    const r0 = h0 / h;
    const D1 = lincomb([m0, 1 / r0], [m1, -1 / r0]);
    const heun = this.config.solver_type === 'heun';
    if (this.config.algorithm_type === 'sde-dpmsolver++') {
      const e2 = 1 - Math.exp(-2 * h);
      const cD1 = heun ? t.alpha * (e2 / (-2 * h) + 1) : 0.5 * (t.alpha * e2);
      return lincomb([x, (t.sigma / s0.sigma) * Math.exp(-h)], [m0, t.alpha * e2], [D1, cD1], [noise!, t.sigma * Math.sqrt(e2)]);
    }
    if (this.config.algorithm_type === 'sde-dpmsolver') {
      const e = Math.exp(h) - 1;
      const cD1 = heun ? -2 * (t.sigma * (e / h - 1)) : -(t.sigma * e);
      return lincomb([x, t.alpha / s0.alpha], [m0, -2 * (t.sigma * e)], [D1, cD1], [noise!, t.sigma * Math.sqrt(Math.exp(2 * h) - 1)]);
    }
    if (this.isDataPrediction) {
      const e = Math.exp(-h) - 1;
      const cD1 = heun ? t.alpha * (e / h + 1) : -0.5 * (t.alpha * e);
      return lincomb([x, t.sigma / s0.sigma], [m0, -t.alpha * e], [D1, cD1]);
    }
    const e = Math.exp(h) - 1;
    const cD1 = heun ? -(t.sigma * (e / h - 1)) : -0.5 * (t.sigma * e);
    return lincomb([x, t.alpha / s0.alpha], [m0, -t.sigma * e], [D1, cD1]);
  }

  private thirdOrder(x: Tensor): Tensor {
    const i = this.stepIndex!, K = this.order;
    const t = alphaSigma(this.sigmas[i + 1]!), s0 = alphaSigma(this.sigmas[i]!), s1 = alphaSigma(this.sigmas[i - 1]!), s2 = alphaSigma(this.sigmas[i - 2]!);
    const m0 = this.modelOutputs[K - 1]!, m1 = this.modelOutputs[K - 2]!, m2 = this.modelOutputs[K - 3]!;
    const h = t.lambda - s0.lambda, h0 = s0.lambda - s1.lambda, h1 = s1.lambda - s2.lambda;
    const r0 = h0 / h, r1 = h1 / h;
    const D10 = lincomb([m0, 1 / r0], [m1, -1 / r0]);
    const D11 = lincomb([m1, 1 / r1], [m2, -1 / r1]);
    const D1 = lincomb([D10, 1 + r0 / (r0 + r1)], [D11, -r0 / (r0 + r1)]);
    const D2 = lincomb([D10, 1 / (r0 + r1)], [D11, -1 / (r0 + r1)]);
    if (this.isDataPrediction) {
      const e = Math.exp(-h) - 1;
      return lincomb([x, t.sigma / s0.sigma], [m0, -t.alpha * e], [D1, t.alpha * (e / h + 1)], [D2, -(t.alpha * ((e + h) / (h * h) - 0.5))]);
    }
    const e = Math.exp(h) - 1;
    return lincomb([x, t.alpha / s0.alpha], [m0, -t.sigma * e], [D1, -(t.sigma * (e / h - 1))], [D2, -(t.sigma * ((e - h) / (h * h) - 0.5))]);
  }
}
