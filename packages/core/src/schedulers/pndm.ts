// PNDMScheduler (Liu et al. 2022), as diffusers' scheduling_pndm.py: pseudo Runge-Kutta warm-up
// steps (PRK) followed by linear multistep (PLMS) steps; with skip_prk_steps the first PLMS step
// is a two-evaluation Heun-like warm-up instead. The step counter selects the formula, so
// step() must be called in timestep order. Stored model outputs (ets) and the warm-up sample
// are owned copies, released by setTimesteps()/dispose().
import { ArgumentError } from '../errors.js';
import type { Tensor } from '../tensor.js';
import { tidy, keep } from '../memory.js';
import { npArange, npLinspace, roundHalfEven } from './betas.js';
import {
  Scheduler, betaKeys, cfgBool, cfgEnum, cfgInt, PREDICTION_TYPES, SPACINGS,
  asFloat, lincomb, own, release, type ConfigSchema, type SchedulerConfig, type StepOptions, type StepOutput,
} from './base.js';

export const PNDM_SCHEMA: ConfigSchema = {
  ...betaKeys({ beta_start: 0.0001, beta_end: 0.02, beta_schedule: 'linear' }),
  skip_prk_steps: cfgBool(false),
  set_alpha_to_one: cfgBool(false),
  prediction_type: cfgEnum('epsilon', PREDICTION_TYPES),
  timestep_spacing: cfgEnum('leading', SPACINGS),
  steps_offset: cfgInt(0),
};

export class PNDMScheduler extends Scheduler {
  readonly finalAlphaCumprod: number;
  readonly pndmOrder = 4;
  prkTimesteps: number[] = [];
  plmsTimesteps: number[] = [];
  private counter = 0;
  private ets: Tensor[] = [];
  private curModelOutput: Tensor | null = null;
  private curSample: Tensor | null = null;

  constructor(json: SchedulerConfig = {}) {
    super('PNDMScheduler', PNDM_SCHEMA, json);
    if (this.predictionType === 'sample') throw new ArgumentError("PNDMScheduler config: prediction_type 'sample' is not supported (diffusers supports epsilon and v_prediction)");
    this.finalAlphaCumprod = this.config.set_alpha_to_one ? 1 : this.alphasCumprod[0]!;
    this.timesteps = Array.from({ length: this.numTrainTimesteps }, (_, i) => this.numTrainTimesteps - 1 - i);
  }

  setTimesteps(n: number): void {
    this.checkSteps(n, 'PNDMScheduler');
    this.numInferenceSteps = n;
    const N = this.numTrainTimesteps;
    const spacing = this.config.timestep_spacing as string;
    let base: number[]; // ascending, as diffusers' _timesteps
    if (spacing === 'linspace') base = npLinspace(0, N - 1, n).map(roundHalfEven);
    else if (spacing === 'leading') { const r = Math.floor(N / n); base = Array.from({ length: n }, (_, i) => i * r + (this.config.steps_offset as number)); }
    else base = npArange(N, 0, -N / n).map(roundHalfEven).reverse().map((v) => v - 1);
    if (this.config.skip_prk_steps) {
      this.prkTimesteps = [];
      // concatenate([t[:-1], t[-2:-1], t[-1:]])[::-1]: the second-to-last timestep repeats, for the
      // two-evaluation warm-up step.
      this.plmsTimesteps = [...base.slice(0, -1), ...base.slice(-2, -1), ...base.slice(-1)].reverse();
    } else {
      const half = Math.floor(Math.floor(N / n) / 2);
      const last = base.slice(-this.pndmOrder);
      const prk: number[] = [];
      for (const v of last) prk.push(v, v + half); // repeat(2) + tile([0, half])
      const rep: number[] = [];
      for (const v of prk.slice(0, -1)) rep.push(v, v);
      this.prkTimesteps = rep.slice(1, -1).reverse();
      this.plmsTimesteps = base.slice(0, -3).reverse();
    }
    this.timesteps = [...this.prkTimesteps, ...this.plmsTimesteps];
    this.resetState();
  }

  private resetState(): void {
    for (const e of this.ets) release(e);
    this.ets = [];
    release(this.curModelOutput); this.curModelOutput = null;
    release(this.curSample); this.curSample = null;
    this.counter = 0;
  }

  override dispose(): void { this.resetState(); }

  step(modelOutput: Tensor, t: number, sample: Tensor, _opts: StepOptions = {}): StepOutput {
    if (this.numInferenceSteps === null) throw new ArgumentError('PNDMScheduler.step: call setTimesteps() first');
    const m = asFloat(modelOutput), x = asFloat(sample);
    const prev = this.counter < this.prkTimesteps.length && !this.config.skip_prk_steps ? this.stepPrk(m, t, x) : this.stepPlms(m, t, x);
    return { prevSample: prev };
  }

  private stepPrk(m: Tensor, timestep: number, x: Tensor): Tensor {
    const n = this.numInferenceSteps!;
    const diffToPrev = this.counter % 2 ? 0 : Math.floor(Math.floor(this.numTrainTimesteps / n) / 2);
    const prevT = timestep - diffToPrev;
    const t = this.prkTimesteps[Math.floor(this.counter / 4) * 4]!;
    let eff = m;
    const k = this.counter % 4;
    return tidy(() => {
      if (k === 0) {
        this.setCurModelOutput(addScaled(m, 1 / 6, null));
        this.ets.push(own(m));
        release(this.curSample); this.curSample = own(x);
      } else if (k === 1 || k === 2) {
        this.setCurModelOutput(addScaled(m, 1 / 3, this.curModelOutput));
      } else {
        eff = lincomb([this.curModelOutput!, 1], [m, 1 / 6]);
        this.setCurModelOutput(null);
      }
      const cur = this.curSample ?? x;
      const prev = this.prevSample(cur, t, prevT, eff);
      this.counter++;
      return prev;
    });
  }

  private setCurModelOutput(v: Tensor | null): void {
    release(this.curModelOutput);
    this.curModelOutput = v ? keep(v) : null;
  }

  private stepPlms(m: Tensor, timestep: number, x: Tensor): Tensor {
    const n = this.numInferenceSteps!;
    const ratio = Math.floor(this.numTrainTimesteps / n);
    if (!this.config.skip_prk_steps && this.ets.length < 3) {
      throw new ArgumentError(`PNDMScheduler.step: ${this.constructor.name} can only be run AFTER scheduler has been run in 'prk' mode for at least 12 iterations`);
    }
    let t = timestep;
    let prevT = t - ratio;
    if (this.counter !== 1) {
      while (this.ets.length > 3) release(this.ets.shift());
      this.ets.push(own(m));
    } else {
      prevT = t;
      t = t + ratio;
    }
    return tidy(() => {
      let eff: Tensor;
      let cur = x;
      const e = this.ets, L = e.length;
      if (L === 1 && this.counter === 0) {
        eff = m;
        release(this.curSample); this.curSample = own(x);
      } else if (L === 1 && this.counter === 1) {
        eff = lincomb([m, 0.5], [e[L - 1]!, 0.5]);
        cur = this.curSample!;
      } else if (L === 2) eff = lincomb([e[L - 1]!, 1.5], [e[L - 2]!, -0.5]);
      else if (L === 3) eff = lincomb([e[L - 1]!, 23 / 12], [e[L - 2]!, -16 / 12], [e[L - 3]!, 5 / 12]);
      else eff = lincomb([e[L - 1]!, 55 / 24], [e[L - 2]!, -59 / 24], [e[L - 3]!, 37 / 24], [e[L - 4]!, -9 / 24]);
      const prev = this.prevSample(cur, t, prevT, eff);
      if (L === 1 && this.counter === 1) { const s = this.curSample; this.curSample = null; release(s); }
      this.counter++;
      return prev;
    });
  }

  /** diffusers' _get_prev_sample (formula (9) of the PNDM paper). */
  private prevSample(x: Tensor, t: number, prevT: number, m: Tensor): Tensor {
    const a = this.alphaAt(t, 'PNDMScheduler.step');
    const aPrev = prevT >= 0 ? this.alphasCumprod[prevT]! : this.finalAlphaCumprod;
    const b = 1 - a, bPrev = 1 - aPrev;
    return tidy(() => {
      const eps = this.predictionType === 'v_prediction' ? lincomb([m, Math.sqrt(a)], [x, Math.sqrt(b)]) : m;
      const sampleCoeff = Math.sqrt(aPrev / a);
      const denom = a * Math.sqrt(bPrev) + Math.sqrt(a * b * aPrev);
      return lincomb([x, sampleCoeff], [eps, -(aPrev - a) / denom]);
    });
  }
}

/** c*m (+ acc when given): the running Runge-Kutta sum. */
function addScaled(m: Tensor, c: number, acc: Tensor | null): Tensor {
  return acc ? lincomb([acc, 1], [m, c]) : lincomb([m, c]);
}
