// UniPCMultistepScheduler (Zhao et al. 2023), as diffusers' scheduling_unipc_multistep.py: a
// multistep predictor (UniP) and, from the second step on, a corrector (UniC) that reuses the
// new model evaluation, with the B(h) variants bh1 (B = h) and bh2 (B = e^h - 1) and the
// data-prediction (predict_x0) or noise-prediction forms. The small order x order systems are
// solved in float64 here (diffusers solves them in float32). Schedule and history handling are
// shared with DPM-Solver (MultistepScheduler).
import { ArgumentError } from '../errors.js';
import type { Tensor } from '../tensor.js';
import { tidy } from '../memory.js';
import { MultistepScheduler, alphaSigma, convertOutput, multistepSchedule } from './dpm-solver.js';
import {
  betaKeys, cfgBool, cfgEnum, cfgInt, cfgOnly, thresholdKeys, PREDICTION_TYPES, SPACINGS,
  asFloat, lincomb, own, release, type ConfigSchema, type KeySpec, type SchedulerConfig, type StepOptions, type StepOutput,
} from './base.js';

const intList: KeySpec = {
  default: [],
  check: (k, v, c) => { if (!Array.isArray(v) || v.some((x) => !Number.isInteger(x))) throw new ArgumentError(`${c} config: ${k} must be a list of step indices, got ${JSON.stringify(v)}`); },
};

export const UNIPC_SCHEMA: ConfigSchema = {
  ...betaKeys({ beta_start: 0.0001, beta_end: 0.02, beta_schedule: 'linear' }),
  solver_order: cfgInt(2, 1),
  prediction_type: cfgEnum('epsilon', PREDICTION_TYPES),
  ...thresholdKeys(),
  predict_x0: cfgBool(true),
  solver_type: cfgEnum('bh2', ['bh1', 'bh2', 'midpoint', 'heun', 'logrho']),
  lower_order_final: cfgBool(true),
  disable_corrector: intList,
  solver_p: cfgOnly(null, 'an external predictor scheduler is not supported'),
  use_karras_sigmas: cfgBool(false),
  use_exponential_sigmas: cfgOnly(false, 'exponential sigmas are not implemented'),
  use_beta_sigmas: cfgOnly(false, 'beta sigmas are not implemented'),
  use_flow_sigmas: cfgOnly(false, 'flow sigmas are not implemented'),
  timestep_spacing: cfgEnum('linspace', SPACINGS),
  steps_offset: cfgInt(0),
  final_sigmas_type: cfgEnum('zero', ['zero', 'sigma_min']),
};

/** Solves A x = b (small, dense) by Gaussian elimination with partial pivoting. */
export function solveSmall(A: number[][], b: number[]): number[] {
  const n = b.length;
  const M = A.map((row, i) => [...row.slice(0, n), b[i]!]);
  for (let c = 0; c < n; ++c) {
    let p = c;
    for (let r = c + 1; r < n; ++r) if (Math.abs(M[r]![c]!) > Math.abs(M[p]![c]!)) p = r;
    [M[c], M[p]] = [M[p]!, M[c]!];
    for (let r = c + 1; r < n; ++r) {
      const f = M[r]![c]! / M[c]![c]!;
      for (let k = c; k <= n; ++k) M[r]![k]! -= f * M[c]![k]!;
    }
  }
  const x = new Array<number>(n).fill(0);
  for (let r = n - 1; r >= 0; --r) {
    let s = M[r]![n]!;
    for (let k = r + 1; k < n; ++k) s -= M[r]![k]! * x[k]!;
    x[r] = s / M[r]![r]!;
  }
  return x;
}

export class UniPCMultistepScheduler extends MultistepScheduler {
  private lastSample: Tensor | null = null;
  private thisOrder = 1;

  constructor(json: SchedulerConfig = {}) {
    super('UniPCMultistepScheduler', UNIPC_SCHEMA, json);
    if (this.config.solver_type !== 'bh1' && this.config.solver_type !== 'bh2') this.config.solver_type = 'bh2';
  }

  setTimesteps(n: number): void {
    this.checkSteps(n, 'UniPCMultistepScheduler');
    const { timesteps, sigmas } = multistepSchedule(this, this.trainSigmas, n, this.numTrainTimesteps);
    this.timesteps = timesteps;
    this.sigmas = sigmas;
    this.numInferenceSteps = timesteps.length;
    this.resetHistory();
  }

  protected override resetHistory(): void {
    super.resetHistory();
    release(this.lastSample);
    this.lastSample = null;
  }

  get predictX0(): boolean { return this.config.predict_x0 as boolean; }

  convertModelOutput(modelOutput: Tensor, sample: Tensor): Tensor {
    return convertOutput(this.config, this.predictX0, modelOutput, sample, this.sigmas[this.stepIndex!]!, false);
  }

  step(modelOutput: Tensor, t: number, sample: Tensor, _opts: StepOptions = {}): StepOutput {
    if (this.numInferenceSteps === null) throw new ArgumentError('UniPCMultistepScheduler.step: call setTimesteps() first');
    const i = this.initStepIndex(t);
    if (i >= this.timesteps.length) throw new ArgumentError('UniPCMultistepScheduler.step: no steps left (call setTimesteps() again)');
    const disabled = this.config.disable_corrector as number[];
    const useCorrector = i > 0 && !disabled.includes(i - 1) && this.lastSample !== null;
    const converted = this.convertModelOutput(asFloat(modelOutput), asFloat(sample));
    let x = asFloat(sample);
    if (useCorrector) x = this.correct(converted, this.lastSample!, x, this.thisOrder);
    this.pushOutput(converted);
    const L = this.timesteps.length;
    const order = this.config.lower_order_final ? Math.min(this.order, L - i) : this.order;
    this.thisOrder = Math.min(order, this.lowerOrderNums + 1);
    release(this.lastSample);
    this.lastSample = own(x);
    const prev = this.predict(x, this.thisOrder);
    if (useCorrector) x.dispose();
    if (this.lowerOrderNums < this.order) this.lowerOrderNums++;
    this.stepIndex = i + 1;
    return { prevSample: prev, ...(this.predictX0 ? { denoised: lincomb([converted, 1]) } : {}) };
  }

  /** The B(h)-dependent coefficient system of UniPC: rks powers (R) and b. */
  private system(rks: number[], hh: number, order: number): { R: number[][]; b: number[]; hPhi1: number; Bh: number } {
    const hPhi1 = Math.expm1(hh);
    let hPhiK = hPhi1 / hh - 1;
    let fact = 1;
    const Bh = this.config.solver_type === 'bh1' ? hh : Math.expm1(hh);
    const R: number[][] = [], b: number[] = [];
    for (let k = 1; k <= order; ++k) {
      R.push(rks.map((r) => r ** (k - 1)));
      b.push((hPhiK * fact) / Bh);
      fact *= k + 1;
      hPhiK = hPhiK / hh - 1 / fact;
    }
    return { R, b, hPhi1, Bh };
  }

  /** The differences D1_k = (m_k - m0)/r_k against earlier stored outputs. */
  private differences(order: number, firstIndex: (k: number) => number, lambdaS0: number, h: number, m0: Tensor): { rks: number[]; D1s: Tensor[] } {
    const rks: number[] = [], D1s: Tensor[] = [];
    const K = this.order;
    for (let k = 1; k < order; ++k) {
      const si = firstIndex(k);
      const mi = this.modelOutputs[K - 1 - k]!;
      const rk = (alphaSigma(this.sigmas[si]!).lambda - lambdaS0) / h;
      rks.push(rk);
      D1s.push(lincomb([mi, 1 / rk], [m0, -1 / rk]));
    }
    rks.push(1);
    return { rks, D1s };
  }

  /** UniP: multistep_uni_p_bh_update. */
  private predict(x: Tensor, order: number): Tensor {
    const i = this.stepIndex!, K = this.order;
    const m0 = this.modelOutputs[K - 1]!;
    const t = alphaSigma(this.sigmas[i + 1]!), s0 = alphaSigma(this.sigmas[i]!);
    const h = t.lambda - s0.lambda;
    return tidy(() => {
      const { rks, D1s } = this.differences(order, (k) => i - k, s0.lambda, h, m0);
      const hh = this.predictX0 ? -h : h;
      const { R, b, hPhi1, Bh } = this.system(rks, hh, order);
      const rhos = D1s.length === 0 ? [] : order === 2 ? [0.5] : solveSmall(R.slice(0, -1).map((r) => r.slice(0, -1)), b.slice(0, -1));
      const [scaleX, scaleM, scaleRes] = this.predictX0
        ? [t.sigma / s0.sigma, -t.alpha * hPhi1, -t.alpha * Bh]
        : [t.alpha / s0.alpha, -t.sigma * hPhi1, -t.sigma * Bh];
      // With no earlier outputs the residual is 0; skipping the term avoids inf*0 at sigma = 0.
      return lincomb([x, scaleX], [m0, scaleM], ...D1s.map((d, k) => [d, scaleRes * rhos[k]!] as [Tensor, number]));
    });
  }

  /** UniC: multistep_uni_c_bh_update (this step's output corrects the last predicted sample). */
  private correct(modelT: Tensor, lastSample: Tensor, _thisSample: Tensor, order: number): Tensor {
    const i = this.stepIndex!, K = this.order;
    const m0 = this.modelOutputs[K - 1]!;
    const t = alphaSigma(this.sigmas[i]!), s0 = alphaSigma(this.sigmas[i - 1]!);
    const h = t.lambda - s0.lambda;
    return tidy(() => {
      const { rks, D1s } = this.differences(order, (k) => i - (k + 1), s0.lambda, h, m0);
      const hh = this.predictX0 ? -h : h;
      const { R, b, hPhi1, Bh } = this.system(rks, hh, order);
      const rhos = order === 1 ? [0.5] : solveSmall(R, b);
      const [scaleX, scaleM, scaleRes] = this.predictX0
        ? [t.sigma / s0.sigma, -t.alpha * hPhi1, -t.alpha * Bh]
        : [t.alpha / s0.alpha, -t.sigma * hPhi1, -t.sigma * Bh];
      const rLast = rhos[rhos.length - 1]!;
      // D1_t = model_t - m0
      return lincomb([lastSample, scaleX], [m0, scaleM - scaleRes * rLast], [modelT, scaleRes * rLast],
        ...D1s.map((d, k) => [d, scaleRes * rhos[k]!] as [Tensor, number]));
    });
  }
}

