// LCMScheduler (Latent Consistency Models), as diffusers' scheduling_lcm.py: timesteps are
// picked from the original_inference_steps "skipping-step" schedule; each step maps the sample
// to the consistency-boundary denoised estimate c_skip*x + c_out*x0, then re-noises it to the
// next timestep (no noise after the last step).
import { ArgumentError } from '../errors.js';
import type { Tensor } from '../tensor.js';
import { tidy } from '../memory.js';
import { npLinspace } from './betas.js';
import {
  Scheduler, betaKeys, cfgBool, cfgEnum, cfgInt, cfgNum, thresholdKeys, PREDICTION_TYPES, SPACINGS,
  asFloat, limitX0, lincomb, predictX0, stepNoise, type ConfigSchema, type SchedulerConfig, type StepOptions, type StepOutput,
} from './base.js';

export const LCM_SCHEMA: ConfigSchema = {
  ...betaKeys({ beta_start: 0.00085, beta_end: 0.012, beta_schedule: 'scaled_linear' }),
  original_inference_steps: cfgInt(50, 1),
  clip_sample: cfgBool(false),
  clip_sample_range: cfgNum(1.0, { min: 0 }),
  set_alpha_to_one: cfgBool(true),
  steps_offset: cfgInt(0),
  prediction_type: cfgEnum('epsilon', PREDICTION_TYPES),
  ...thresholdKeys(),
  timestep_spacing: cfgEnum('leading', SPACINGS),
  timestep_scaling: cfgNum(10.0, { min: 0 }),
};

export class LCMScheduler extends Scheduler {
  readonly finalAlphaCumprod: number;
  readonly sigmaData = 0.5;

  constructor(json: SchedulerConfig = {}) {
    super('LCMScheduler', LCM_SCHEMA, json);
    this.finalAlphaCumprod = this.config.set_alpha_to_one ? 1 : this.alphasCumprod[0]!;
    this.timesteps = Array.from({ length: this.numTrainTimesteps }, (_, i) => this.numTrainTimesteps - 1 - i);
  }

  /** Timesteps for n steps; originalInferenceSteps and strength as diffusers' set_timesteps. */
  setTimesteps(n: number, opts: { originalInferenceSteps?: number; strength?: number } = {}): void {
    this.checkSteps(n, 'LCMScheduler');
    const N = this.numTrainTimesteps;
    const orig = opts.originalInferenceSteps ?? (this.config.original_inference_steps as number);
    const strength = opts.strength ?? 1;
    if (orig > N) throw new ArgumentError(`LCMScheduler.setTimesteps: original_inference_steps (${orig}) cannot exceed num_train_timesteps (${N})`);
    const k = Math.floor(N / orig);
    const origin: number[] = [];
    for (let i = 1; i <= Math.floor(orig * strength); ++i) origin.push(i * k - 1);
    if (Math.floor(origin.length / n) < 1) throw new ArgumentError(`LCMScheduler.setTimesteps: the combination of original_steps x strength (${orig} x ${strength}) gives ${origin.length} candidate timesteps, fewer than numInferenceSteps (${n})`);
    if (n > orig) throw new ArgumentError(`LCMScheduler.setTimesteps: numInferenceSteps (${n}) cannot exceed original_inference_steps (${orig})`);
    origin.reverse();
    const idx = npLinspace(0, origin.length, n, false).map(Math.floor);
    this.timesteps = idx.map((i) => origin[i]!);
    this.numInferenceSteps = n;
    this.stepIndex = null;
  }

  /** c_skip and c_out of the consistency boundary condition at timestep t. */
  boundaryScalings(t: number): { cSkip: number; cOut: number } {
    const s = t * (this.config.timestep_scaling as number);
    const d2 = this.sigmaData ** 2;
    return { cSkip: d2 / (s * s + d2), cOut: s / Math.sqrt(s * s + d2) };
  }

  step(modelOutput: Tensor, t: number, sample: Tensor, opts: StepOptions = {}): StepOutput {
    if (this.numInferenceSteps === null) throw new ArgumentError('LCMScheduler.step: call setTimesteps() first');
    const i = this.initStepIndex(t, 'LCMScheduler.step');
    const prevT = i + 1 < this.timesteps.length ? this.timesteps[i + 1]! : t;
    const a = this.alphaAt(t, 'LCMScheduler.step');
    const aPrev = prevT >= 0 ? this.alphasCumprod[prevT]! : this.finalAlphaCumprod;
    const { cSkip, cOut } = this.boundaryScalings(t);
    const out = tidy(() => {
      const x = asFloat(sample), m = asFloat(modelOutput);
      let x0 = predictX0(this.predictionType, m, x, a);
      x0 = limitX0(this.config, x0);
      const denoised = lincomb([x0, cOut], [x, cSkip]);
      const prev = i !== this.numInferenceSteps! - 1
        ? lincomb([denoised, Math.sqrt(aPrev)], [stepNoise(x, opts), Math.sqrt(1 - aPrev)])
        : lincomb([denoised, 1]);
      return { prevSample: prev, denoised, predOriginalSample: x0 };
    });
    this.stepIndex = i + 1;
    return out;
  }
}
