// DDPMScheduler (Ho et al. 2020), as diffusers' scheduling_ddpm.py: the ancestral posterior
// step with the variance types fixed_small(_log), fixed_large(_log), learned(_range). For the
// learned types the model output carries the variance in its second half of channels (dim 1).
// fixed_large_log is reproduced as diffusers has it (sqrt of a log-variance, i.e. NaN noise
// scale) so trajectories stay comparable; see docs/schedulers.md.
import { ArgumentError } from '../errors.js';
import type { Tensor } from '../tensor.js';
import { tidy } from '../memory.js';
import { exp, mul, add, affine, sqrt } from '../ops/elementwise.js';
import { slice } from '../ops/shape.js';
import { f32, integerTimesteps } from './betas.js';
import {
  Scheduler, betaKeys, cfgBool, cfgEnum, cfgInt, cfgNum, thresholdKeys, PREDICTION_TYPES, SPACINGS,
  asFloat, limitX0, lincomb, predictX0, stepNoise, type ConfigSchema, type SchedulerConfig, type StepOptions, type StepOutput,
} from './base.js';

const VARIANCE_TYPES = ['fixed_small', 'fixed_small_log', 'fixed_large', 'fixed_large_log', 'learned', 'learned_range'] as const;

export const DDPM_SCHEMA: ConfigSchema = {
  ...betaKeys({ beta_start: 0.0001, beta_end: 0.02, beta_schedule: 'linear' }),
  variance_type: cfgEnum('fixed_small', VARIANCE_TYPES),
  clip_sample: cfgBool(true),
  prediction_type: cfgEnum('epsilon', PREDICTION_TYPES),
  ...thresholdKeys(),
  clip_sample_range: cfgNum(1.0, { min: 0 }),
  timestep_spacing: cfgEnum('leading', SPACINGS),
  steps_offset: cfgInt(0),
};

export class DDPMScheduler extends Scheduler {
  constructor(json: SchedulerConfig = {}) {
    super('DDPMScheduler', DDPM_SCHEMA, json);
    this.timesteps = Array.from({ length: this.numTrainTimesteps }, (_, i) => this.numTrainTimesteps - 1 - i);
  }

  setTimesteps(n: number): void {
    this.checkSteps(n, 'DDPMScheduler');
    this.numInferenceSteps = n;
    this.timesteps = integerTimesteps(this.config.timestep_spacing as string, this.numTrainTimesteps, n, this.config.steps_offset as number);
  }

  /** diffusers' previous_timestep: the next entry of the schedule, -1 after the last. */
  previousTimestep(t: number): number {
    if (this.numInferenceSteps === null) return t - 1;
    const i = this.timesteps.indexOf(t);
    if (i < 0) throw new ArgumentError(`DDPMScheduler.step: timestep ${t} is not in this scheduler's timesteps`);
    return i === this.timesteps.length - 1 ? -1 : this.timesteps[i + 1]!;
  }

  step(modelOutput: Tensor, t: number, sample: Tensor, opts: StepOptions = {}): StepOutput {
    const vt = this.config.variance_type as string;
    const prevT = this.previousTimestep(t);
    const a = this.alphaAt(t, 'DDPMScheduler.step');
    const aPrev = prevT >= 0 ? this.alphasCumprod[prevT]! : 1;
    // diffusers forms these scalars as float32 tensors; near t = 0, 1 - a_t/a_prev cancels, so
    // the float32 rounding of current_beta_t visibly shapes the trajectory: reproduce it.
    const b = f32(1 - a), bPrev = f32(1 - aPrev);
    const curAlpha = f32(a / aPrev), curBeta = f32(1 - curAlpha);
    return tidy(() => {
      const x = asFloat(sample);
      let m = asFloat(modelOutput);
      let predictedVariance: Tensor | null = null;
      const c = x.shape[1];
      if (c !== undefined && m.shape[1] === 2 * c && (vt === 'learned' || vt === 'learned_range')) {
        predictedVariance = slice(m, 1, c, 2 * c);
        m = slice(m, 1, 0, c);
      } else if (vt === 'learned' || vt === 'learned_range') {
        throw new ArgumentError(`DDPMScheduler.step: variance_type '${vt}' needs a model output with twice the sample's channels (sample [${x.shape.join(', ')}], model output [${m.shape.join(', ')}])`);
      }
      let x0 = predictX0(this.predictionType, m, x, a);
      x0 = limitX0(this.config, x0);
      let prev = lincomb([x0, f32(f32(f32(Math.sqrt(aPrev)) * curBeta) / b)], [x, f32(f32(f32(Math.sqrt(curAlpha)) * bPrev) / b)]);
      if (t > 0) {
        const noise = stepNoise(x, opts);
        const variance = Math.max(f32(f32(bPrev / b) * curBeta), 1e-20);
        let scaled: Tensor;
        if (vt === 'fixed_small') scaled = affine(noise, Math.sqrt(variance), 0);
        else if (vt === 'fixed_small_log') scaled = affine(noise, Math.exp(0.5 * Math.log(variance)), 0);
        else if (vt === 'fixed_large') scaled = affine(noise, Math.sqrt(curBeta), 0);
        else if (vt === 'fixed_large_log') scaled = affine(noise, Math.sqrt(Math.log(curBeta)), 0); // as diffusers
        else if (vt === 'learned') scaled = mul(sqrt(predictedVariance!), noise);
        else {
          // learned_range: interpolate the log-variance between the small and large bounds.
          const minLog = Math.log(variance), maxLog = Math.log(curBeta);
          const frac = affine(predictedVariance!, 0.5, 0.5);
          const logVar = affine(frac, maxLog - minLog, minLog);
          scaled = mul(exp(affine(logVar, 0.5, 0)), noise);
        }
        prev = add(prev, scaled);
      }
      return { prevSample: prev, predOriginalSample: x0 };
    });
  }
}
