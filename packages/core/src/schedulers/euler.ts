// EulerDiscreteScheduler (Karras et al. 2022, Algorithm 2), as diffusers'
// scheduling_euler_discrete.py: sigma-space Euler steps with the model input scaled by
// 1/sqrt(sigma^2 + 1), optional churn (s_churn/s_tmin/s_tmax/s_noise). Timesteps are float32
// values (np.linspace(..., dtype=float32)); sigmas are np.interp'ed from the training table at
// those timesteps. Karras/exponential/beta sigmas are not implemented (rejected by config).
import { ArgumentError } from '../errors.js';
import type { Tensor } from '../tensor.js';
import { tidy } from '../memory.js';
import { f32, interpIndex, karrasSigmas, npArange, npLinspace, roundHalfEven, sigmaToT, sigmasFromAlphas } from './betas.js';
import {
  Scheduler, betaKeys, cfgBool, cfgEnum, cfgInt, cfgNum, cfgOnly, PREDICTION_TYPES, SPACINGS,
  asFloat, batchLincomb, lincomb, stepNoise, type ConfigSchema, type SchedulerConfig, type StepOptions, type StepOutput,
} from './base.js';

export const EULER_SCHEMA: ConfigSchema = {
  ...betaKeys({ beta_start: 0.0001, beta_end: 0.02, beta_schedule: 'linear' }),
  prediction_type: cfgEnum('epsilon', PREDICTION_TYPES),
  interpolation_type: cfgEnum('linear', ['linear', 'log_linear']),
  use_karras_sigmas: cfgBool(false),
  use_exponential_sigmas: cfgOnly(false, 'exponential sigmas are not implemented'),
  use_beta_sigmas: cfgOnly(false, 'beta sigmas are not implemented'),
  sigma_min: cfgNum(null),
  sigma_max: cfgNum(null),
  timestep_spacing: cfgEnum('linspace', SPACINGS),
  timestep_type: cfgEnum('discrete', ['discrete', 'continuous']),
  steps_offset: cfgInt(0),
  final_sigmas_type: cfgEnum('zero', ['zero', 'sigma_min']),
};

/** diffusers' float timesteps for the sigma-based schedulers (Euler, Euler ancestral). */
export function floatTimesteps(spacing: string, numTrain: number, n: number, stepsOffset: number): number[] {
  if (spacing === 'linspace') return npLinspace(0, numTrain - 1, n).map(f32).reverse();
  if (spacing === 'leading') { const r = Math.floor(numTrain / n); return Array.from({ length: n }, (_, i) => f32((n - 1 - i) * r + stepsOffset)); }
  if (spacing === 'trailing') return npArange(numTrain, 0, -numTrain / n).map((v) => f32(roundHalfEven(v) - 1));
  throw new ArgumentError(`scheduler: timestep_spacing '${spacing}' is not one of leading, trailing, linspace`);
}

/** Shared sigma-schedule state of Euler and Euler ancestral. */
export abstract class SigmaScheduler extends Scheduler {
  override sigmas: number[];
  protected readonly trainSigmas: Float64Array;

  protected constructor(cls: string, schema: ConfigSchema, json: SchedulerConfig) {
    super(cls, schema, json);
    // Zero-terminal-SNR: diffusers nudges the final cumulative alpha off 0 so sigma stays finite.
    if (this.config.rescale_betas_zero_snr) this.alphasCumprod[this.alphasCumprod.length - 1] = 2 ** -24;
    this.trainSigmas = sigmasFromAlphas(this.alphasCumprod);
    const N = this.numTrainTimesteps;
    this.sigmas = [...Array.from(this.trainSigmas).reverse(), 0];
    this.timesteps = npLinspace(0, N - 1, N).reverse().map(f32);
    this.initNoiseSigma = this.noiseSigma();
  }

  private noiseSigma(): number {
    const max = Math.max(...this.sigmas);
    const sp = this.config.timestep_spacing as string;
    return sp === 'linspace' || sp === 'trailing' ? max : Math.sqrt(max * max + 1);
  }

  setTimesteps(n: number): void {
    this.checkSteps(n, this.constructor.name);
    this.numInferenceSteps = n;
    const N = this.numTrainTimesteps;
    const ts = floatTimesteps(this.config.timestep_spacing as string, N, n, this.config.steps_offset as number);
    let sig: number[];
    let timesteps = ts;
    if ((this.config.interpolation_type ?? 'linear') === 'linear') sig = ts.map((t) => interpIndex(t, this.trainSigmas));
    else {
      // log_linear: torch.linspace(log(sigmas[-1]), log(sigmas[0]), n + 1).exp()
      const lo = Math.log(this.trainSigmas[N - 1]!), hi = Math.log(this.trainSigmas[0]!);
      sig = npLinspace(lo, hi, n + 1).map((v) => Math.exp(f32(v)));
    }
    if (this.config.use_karras_sigmas) {
      // Karras sigmas between the schedule's ends (or the configured sigma_min / sigma_max);
      // timesteps are the fractional training timesteps of those sigmas.
      const sMin = (this.config.sigma_min as number | null) ?? sig[sig.length - 1]!;
      const sMax = (this.config.sigma_max as number | null) ?? sig[0]!;
      sig = karrasSigmas(sMin, sMax, n);
      timesteps = sig.map((s) => f32(sigmaToT(s, this.trainSigmas)));
    }
    const last = this.config.final_sigmas_type === 'sigma_min' ? this.trainSigmas[0]! : 0;
    this.sigmas = [...sig, last].map(f32);
    this.timesteps = this.config.timestep_type === 'continuous'
      ? this.sigmas.slice(0, -1).map((s) => f32(0.25 * Math.log(s))) : timesteps;
    this.initNoiseSigma = this.noiseSigma();
    this.stepIndex = null;
  }

  /** x / sqrt(sigma^2 + 1) for the current step's sigma. */
  override scaleModelInput(sample: Tensor, t: number): Tensor {
    const i = this.initStepIndex(t, `${this.constructor.name}.scaleModelInput`);
    const s = this.sigmas[i]!;
    return lincomb([asFloat(sample), 1 / Math.sqrt(s * s + 1)]);
  }

  /** x0 + sigma * noise at the sigma of each timestep (looked up in the current timesteps). */
  override addNoise(x0: Tensor, noise: Tensor, t: number | number[]): Tensor {
    const s = this.timestepList(t).map((ti) => this.sigmas[this.indexForTimestep(ti, `${this.constructor.name}.addNoise`)]!);
    return batchLincomb(asFloat(x0), s.map(() => 1), asFloat(noise), s, `${this.constructor.name}.addNoise`);
  }
}

export interface EulerStepOptions extends StepOptions { sChurn?: number; sTmin?: number; sTmax?: number; sNoise?: number }

export class EulerDiscreteScheduler extends SigmaScheduler {
  constructor(json: SchedulerConfig = {}) { super('EulerDiscreteScheduler', EULER_SCHEMA, json); }

  step(modelOutput: Tensor, t: number, sample: Tensor, opts: EulerStepOptions = {}): StepOutput {
    const i = this.initStepIndex(t, 'EulerDiscreteScheduler.step');
    if (i + 1 >= this.sigmas.length) throw new ArgumentError('EulerDiscreteScheduler.step: no steps left (call setTimesteps() again)');
    const sigma = this.sigmas[i]!;
    const { sChurn = 0, sTmin = 0, sTmax = Infinity, sNoise = 1 } = opts;
    const gamma = sTmin <= sigma && sigma <= sTmax ? Math.min(sChurn / (this.sigmas.length - 1), Math.SQRT2 - 1) : 0;
    const sigmaHat = sigma * (gamma + 1);
    const out = tidy(() => {
      let x = asFloat(sample);
      const m = asFloat(modelOutput);
      if (gamma > 0) x = lincomb([x, 1], [stepNoise(x, opts), sNoise * Math.sqrt(sigmaHat * sigmaHat - sigma * sigma)]);
      let x0: Tensor;
      const pt = this.predictionType;
      if (pt === 'sample') x0 = lincomb([m, 1]);
      else if (pt === 'epsilon') x0 = lincomb([x, 1], [m, -sigmaHat]);
      else x0 = lincomb([m, -sigma / Math.sqrt(sigma * sigma + 1)], [x, 1 / (sigma * sigma + 1)]);
      // derivative = (x - x0) / sigma_hat; prev = x + derivative * dt
      const dt = this.sigmas[i + 1]! - sigmaHat;
      const deriv = lincomb([x, 1 / sigmaHat], [x0, -1 / sigmaHat]);
      const prev = lincomb([x, 1], [deriv, dt]);
      return { prevSample: prev, predOriginalSample: x0 };
    });
    this.stepIndex = i + 1;
    return out;
  }
}
