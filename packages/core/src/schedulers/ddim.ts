// DDIMScheduler (Song et al. 2020), as diffusers' scheduling_ddim.py: deterministic when
// eta = 0; eta > 0 adds sigma_t-scaled noise. prev_t = t - num_train_timesteps // n for every
// spacing, and alpha_prod of a negative prev_t is final_alpha_cumprod (1 with set_alpha_to_one).
import { ArgumentError } from '../errors.js';
import type { Tensor } from '../tensor.js';
import { tidy } from '../memory.js';
import { integerTimesteps } from './betas.js';
import {
  Scheduler, betaKeys, cfgBool, cfgEnum, cfgInt, cfgNum, thresholdKeys, PREDICTION_TYPES, SPACINGS,
  asFloat, limitX0, lincomb, predictX0, stepNoise, type ConfigSchema, type SchedulerConfig, type StepOptions, type StepOutput,
} from './base.js';

export const DDIM_SCHEMA: ConfigSchema = {
  ...betaKeys({ beta_start: 0.0001, beta_end: 0.02, beta_schedule: 'linear' }),
  clip_sample: cfgBool(true),
  set_alpha_to_one: cfgBool(true),
  steps_offset: cfgInt(0),
  prediction_type: cfgEnum('epsilon', PREDICTION_TYPES),
  ...thresholdKeys(),
  clip_sample_range: cfgNum(1.0, { min: 0 }),
  timestep_spacing: cfgEnum('leading', SPACINGS),
};

export interface DDIMStepOptions extends StepOptions {
  /** DDIM's eta (0: deterministic DDIM, 1: DDPM-like variance). */
  eta?: number;
  /** Recompute epsilon from the clipped x0 (diffusers' use_clipped_model_output). */
  useClippedModelOutput?: boolean;
}

export class DDIMScheduler extends Scheduler {
  readonly finalAlphaCumprod: number;

  constructor(json: SchedulerConfig = {}) {
    super('DDIMScheduler', DDIM_SCHEMA, json);
    this.finalAlphaCumprod = this.config.set_alpha_to_one ? 1 : this.alphasCumprod[0]!;
    this.timesteps = Array.from({ length: this.numTrainTimesteps }, (_, i) => this.numTrainTimesteps - 1 - i);
  }

  setTimesteps(n: number): void {
    this.checkSteps(n, 'DDIMScheduler');
    this.numInferenceSteps = n;
    this.timesteps = integerTimesteps(this.config.timestep_spacing as string, this.numTrainTimesteps, n, this.config.steps_offset as number);
  }

  step(modelOutput: Tensor, t: number, sample: Tensor, opts: DDIMStepOptions = {}): StepOutput {
    if (this.numInferenceSteps === null) throw new ArgumentError('DDIMScheduler.step: call setTimesteps() first');
    const eta = opts.eta ?? 0;
    if (!(eta >= 0)) throw new ArgumentError(`DDIMScheduler.step: eta must be >= 0, got ${eta}`);
    const prevT = t - Math.floor(this.numTrainTimesteps / this.numInferenceSteps);
    const a = this.alphaAt(t, 'DDIMScheduler.step');
    const aPrev = prevT >= 0 ? this.alphasCumprod[prevT]! : this.finalAlphaCumprod;
    const b = 1 - a;
    return tidy(() => {
      const x = asFloat(sample), m = asFloat(modelOutput);
      let x0 = predictX0(this.predictionType, m, x, a);
      let eps = this.predictionType === 'epsilon' ? m
        : this.predictionType === 'sample' ? lincomb([x, 1 / Math.sqrt(b)], [x0, -Math.sqrt(a) / Math.sqrt(b)])
          : lincomb([m, Math.sqrt(a)], [x, Math.sqrt(b)]);
      x0 = limitX0(this.config, x0);
      const variance = ((1 - aPrev) / b) * (1 - a / aPrev);
      const std = eta * Math.sqrt(variance);
      if (opts.useClippedModelOutput) eps = lincomb([x, 1 / Math.sqrt(b)], [x0, -Math.sqrt(a) / Math.sqrt(b)]);
      let prev = lincomb([x0, Math.sqrt(aPrev)], [eps, Math.sqrt(1 - aPrev - std * std)]);
      if (eta > 0) prev = lincomb([prev, 1], [stepNoise(x, opts), std]);
      return { prevSample: prev, predOriginalSample: x0 };
    });
  }
}
