// EulerAncestralDiscreteScheduler, as diffusers' scheduling_euler_ancestral_discrete.py: an
// Euler step down to sigma_down followed by fresh noise of scale sigma_up, where
// sigma_up^2 + sigma_down^2 = sigma_next^2 and sigma_up = sigma_next * sqrt(1 - sigma_next^2/sigma^2).
// The sigma table, timesteps and model-input scaling are Euler's (SigmaScheduler).
import { ArgumentError } from '../errors.js';
import type { Tensor } from '../tensor.js';
import { tidy } from '../memory.js';
import { SigmaScheduler } from './euler.js';
import {
  betaKeys, cfgEnum, cfgInt, PREDICTION_TYPES, SPACINGS,
  asFloat, lincomb, stepNoise, type ConfigSchema, type SchedulerConfig, type StepOptions, type StepOutput,
} from './base.js';

export const EULER_ANCESTRAL_SCHEMA: ConfigSchema = {
  ...betaKeys({ beta_start: 0.0001, beta_end: 0.02, beta_schedule: 'linear' }),
  prediction_type: cfgEnum('epsilon', PREDICTION_TYPES),
  timestep_spacing: cfgEnum('linspace', SPACINGS),
  steps_offset: cfgInt(0),
};

export class EulerAncestralDiscreteScheduler extends SigmaScheduler {
  constructor(json: SchedulerConfig = {}) {
    super('EulerAncestralDiscreteScheduler', EULER_ANCESTRAL_SCHEMA, json);
    if (this.predictionType === 'sample') throw new ArgumentError("EulerAncestralDiscreteScheduler config: prediction_type 'sample' is not implemented (as in diffusers)");
  }

  step(modelOutput: Tensor, t: number, sample: Tensor, opts: StepOptions = {}): StepOutput {
    const i = this.initStepIndex(t, 'EulerAncestralDiscreteScheduler.step');
    if (i + 1 >= this.sigmas.length) throw new ArgumentError('EulerAncestralDiscreteScheduler.step: no steps left (call setTimesteps() again)');
    const sigma = this.sigmas[i]!, sigmaTo = this.sigmas[i + 1]!;
    const sigmaUp = Math.sqrt((sigmaTo * sigmaTo * (sigma * sigma - sigmaTo * sigmaTo)) / (sigma * sigma));
    const sigmaDown = Math.sqrt(sigmaTo * sigmaTo - sigmaUp * sigmaUp);
    const out = tidy(() => {
      const x = asFloat(sample), m = asFloat(modelOutput);
      const x0 = this.predictionType === 'epsilon' ? lincomb([x, 1], [m, -sigma])
        : lincomb([m, -sigma / Math.sqrt(sigma * sigma + 1)], [x, 1 / (sigma * sigma + 1)]);
      const deriv = lincomb([x, 1 / sigma], [x0, -1 / sigma]);
      let prev = lincomb([x, 1], [deriv, sigmaDown - sigma]);
      prev = lincomb([prev, 1], [stepNoise(x, opts), sigmaUp]);
      return { prevSample: prev, predOriginalSample: x0 };
    });
    this.stepIndex = i + 1;
    return out;
  }
}
