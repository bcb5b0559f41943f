// The Scheduler base: config resolution (diffusers' snake_case keys and defaults, unknown keys
// ignored, bad values rejected with the key named), the training noise schedule, add_noise /
// get_velocity, step-index bookkeeping for the sigma-based schedulers, and small helpers that
// do tensor math with float64 coefficients. Multistep state (stored model outputs, samples)
// is owned by the scheduler: stored tensors are keep()'d so that the caller's tidy scopes do
// not free them, and disposed when they fall out of the history or on setTimesteps().
import { ArgumentError } from '../errors.js';
import { Tensor } from '../tensor.js';
import type { Generator } from '../random.js';
import { keep, tidy } from '../memory.js';
import { affine, add, mul, div, maximum, minimum } from '../ops/elementwise.js';
import { randn, tensor } from '../ops/creation.js';
import { cast, clone } from '../ops/shape.js';
import { clamp } from '../ops/elementwise.js';
import { cumprodAlphas, makeBetas, type BetaConfig } from './betas.js';

export interface StepOptions {
  generator?: Generator;
  /** Noise for the step's stochastic part; overrides the generator (tests pass zeros). */
  noise?: Tensor;
}
export interface StepOutput { prevSample: Tensor; predOriginalSample?: Tensor; denoised?: Tensor }
export type SchedulerConfig = Record<string, unknown>;

// ---- config schema -------------------------------------------------------------------------

/** One config key: its diffusers default and a check that throws on a bad value. */
export interface KeySpec { default: unknown; check: (key: string, value: unknown, cls: string) => void }
export type ConfigSchema = Record<string, KeySpec>;

const bad = (cls: string, key: string, value: unknown, want: string) =>
  new ArgumentError(`${cls} config: ${key} must be ${want}, got ${JSON.stringify(value)}`);

export const cfgInt = (d: number | null, min = 0): KeySpec => ({
  default: d,
  check: (k, v, c) => { if (v === null && d === null) return; if (typeof v !== 'number' || !Number.isInteger(v) || v < min) throw bad(c, k, v, `an integer >= ${min}`); },
});
export const cfgNum = (d: number | null, opts: { min?: number; max?: number; allowNull?: boolean } = {}): KeySpec => ({
  default: d,
  check: (k, v, c) => {
    if (v === null && (d === null || opts.allowNull)) return;
    if (typeof v !== 'number' || Number.isNaN(v) || v < (opts.min ?? -Infinity) || v > (opts.max ?? Infinity)) throw bad(c, k, v, `a number${opts.min !== undefined ? ` >= ${opts.min}` : ''}${opts.max !== undefined ? ` <= ${opts.max}` : ''}`);
  },
});
export const cfgBool = (d: boolean): KeySpec => ({ default: d, check: (k, v, c) => { if (typeof v !== 'boolean') throw bad(c, k, v, 'true or false'); } });
export const cfgEnum = (d: string | null, values: readonly string[]): KeySpec => ({
  default: d,
  check: (k, v, c) => { if (v === null && d === null) return; if (typeof v !== 'string' || !values.includes(v)) throw bad(c, k, v, `one of ${values.join(', ')}`); },
});
export const cfgNumList = (d: number[] | null): KeySpec => ({
  default: d,
  check: (k, v, c) => { if (v === null) return; if (!Array.isArray(v) || v.some((x) => typeof x !== 'number' || !Number.isFinite(x))) throw bad(c, k, v, 'a list of numbers or null'); },
});
/** A key this implementation accepts only at its default (a feature it does not implement). */
export const cfgOnly = (d: unknown, why: string): KeySpec => ({
  default: d,
  check: (k, v, c) => { if (v !== d && !(v === null && d === null)) throw new ArgumentError(`${c} config: ${k}=${JSON.stringify(v)} is not supported (${why})`); },
});

/** The noise-schedule keys every scheduler has, with per-class defaults. */
export function betaKeys(d: { beta_start: number; beta_end: number; beta_schedule: string }): ConfigSchema {
  return {
    num_train_timesteps: cfgInt(1000, 1),
    beta_start: cfgNum(d.beta_start, { min: 0, max: 1 }),
    beta_end: cfgNum(d.beta_end, { min: 0, max: 1 }),
    beta_schedule: cfgEnum(d.beta_schedule, ['linear', 'scaled_linear', 'squaredcos_cap_v2']),
    trained_betas: cfgNumList(null),
    rescale_betas_zero_snr: cfgBool(false),
  };
}
export const PREDICTION_TYPES = ['epsilon', 'v_prediction', 'sample'] as const;
export const SPACINGS = ['leading', 'trailing', 'linspace'] as const;
export const thresholdKeys = (): ConfigSchema => ({
  thresholding: cfgBool(false),
  dynamic_thresholding_ratio: cfgNum(0.995, { min: 0, max: 1 }),
  sample_max_value: cfgNum(1.0, { min: 0 }),
});

/** Merges defaults with a diffusers JSON config; unknown keys are ignored, nulls mean default. */
export function resolveConfig(cls: string, schema: ConfigSchema, json: SchedulerConfig): SchedulerConfig {
  if (json === null || typeof json !== 'object' || Array.isArray(json)) throw new ArgumentError(`${cls}.fromConfig: expected a config object, got ${JSON.stringify(json)}`);
  const out: SchedulerConfig = { _class_name: cls };
  if (typeof json._diffusers_version === 'string') out._diffusers_version = json._diffusers_version;
  for (const [key, spec] of Object.entries(schema)) {
    let v = Object.prototype.hasOwnProperty.call(json, key) ? json[key] : spec.default;
    if (v === null || v === undefined) v = spec.default;
    spec.check(key, v, cls);
    out[key] = Array.isArray(v) ? [...v] : v;
  }
  return out;
}

// ---- tensor helpers ------------------------------------------------------------------------

/** sum_i c_i * t_i in float32 tensor math (coefficients are float64 numbers). */
export function lincomb(...terms: Array<[Tensor, number]>): Tensor {
  return tidy(() => {
    let acc = affine(terms[0]![0], terms[0]![1], 0);
    for (let i = 1; i < terms.length; ++i) acc = add(acc, affine(terms[i]![0], terms[i]![1], 0));
    return acc;
  });
}

/** Float32 view of the math input (schedulers compute in float32, as diffusers upcasts). */
export function asFloat(t: Tensor): Tensor { return t.dtype === 'f32' ? t : cast(t, 'f32'); }

/** A copy owned by the scheduler (survives the caller's tidy scopes; dispose it yourself). */
export function own(t: Tensor): Tensor { return keep(clone(t)); }
export function release(t: Tensor | null | undefined): void { if (t && !t.isDisposed) t.dispose(); }

/** The step's noise: the explicit tensor, else a draw from the generator. */
export function stepNoise(like: Tensor, opts: StepOptions | undefined): Tensor {
  if (opts?.noise) {
    const n = opts.noise;
    if (n.shape.length !== like.shape.length || n.shape.some((d, i) => d !== like.shape[i])) throw new ArgumentError(`scheduler.step: noise has shape [${n.shape.join(', ')}] but the sample has [${like.shape.join(', ')}]`);
    return n;
  }
  return randn(like.shape, { generator: opts?.generator, device: like.device, dtype: 'f32' });
}

/** A per-batch coefficient tensor [B, 1, ...] (or a plain number when t is a scalar). */
function perBatch(x: Tensor, values: number[]): Tensor {
  const shape = [values.length, ...x.shape.slice(1).map(() => 1)];
  return tensor(values, { shape, device: x.device, dtype: 'f32' });
}

/** a*x + b*y where a, b are one number or one per batch item. */
export function batchLincomb(x: Tensor, a: number[], y: Tensor, b: number[], op: string): Tensor {
  if (a.length === 1) return lincomb([x, a[0]!], [y, b[0]!]);
  if (x.shape.length === 0 || x.shape[0] !== a.length) throw new ArgumentError(`${op}: ${a.length} timesteps for a batch of ${x.shape[0] ?? 'scalar'} (shape [${x.shape.join(', ')}])`);
  return tidy(() => add(mul(x, perBatch(x, a)), mul(y, perBatch(y, b))));
}

// ---- the scheduler -------------------------------------------------------------------------

export abstract class Scheduler {
  readonly config: SchedulerConfig;
  readonly betas: Float64Array;
  readonly alphasCumprod: Float64Array;
  timesteps: number[] = [];
  sigmas?: number[];
  numInferenceSteps: number | null = null;
  initNoiseSigma = 1;
  /** Index of the next step in timesteps (sigma-based and multistep schedulers). */
  protected stepIndex: number | null = null;

  protected constructor(cls: string, schema: ConfigSchema, json: SchedulerConfig) {
    this.config = resolveConfig(cls, schema, json ?? {});
    const c = this.config as unknown as BetaConfig;
    this.betas = makeBetas(c);
    this.alphasCumprod = cumprodAlphas(this.betas);
  }

  /** Builds this scheduler class from a diffusers config (scheduler_config.json contents). */
  static fromConfig<T extends Scheduler>(this: new (json?: SchedulerConfig) => T, json: SchedulerConfig = {}): T {
    return new this(json);
  }

  get numTrainTimesteps(): number { return this.config.num_train_timesteps as number; }
  get predictionType(): string { return this.config.prediction_type as string; }

  abstract setTimesteps(numInferenceSteps: number): void;
  abstract step(modelOutput: Tensor, t: number, sample: Tensor, opts?: StepOptions): StepOutput;

  /** A fresh scheduler with the same config (no timesteps set, no multistep state). */
  clone(): Scheduler {
    const ctor = this.constructor as new (json: SchedulerConfig) => Scheduler;
    return new ctor({ ...this.config });
  }

  scaleModelInput(sample: Tensor, _t: number): Tensor { return sample; }

  /** Frees the multistep state (stored model outputs and samples). */
  dispose(): void { /* stateless by default */ }

  protected checkSteps(n: number, who: string): void {
    if (!Number.isInteger(n) || n < 1) throw new ArgumentError(`${who}.setTimesteps: numInferenceSteps must be a positive integer, got ${n}`);
    if (n > this.numTrainTimesteps) throw new ArgumentError(`${who}.setTimesteps: numInferenceSteps (${n}) cannot exceed num_train_timesteps (${this.numTrainTimesteps})`);
  }

  protected alphaAt(t: number, op: string): number {
    const a = this.alphasCumprod[t];
    if (!Number.isInteger(t) || a === undefined) throw new ArgumentError(`${op}: timestep ${t} is not an integer in [0, ${this.numTrainTimesteps - 1}]`);
    return a;
  }

  protected timestepList(t: number | number[]): number[] { return Array.isArray(t) ? t : [t]; }

  /** x_t = sqrt(a_t) x0 + sqrt(1 - a_t) noise (per batch item when t is an array). */
  addNoise(x0: Tensor, noise: Tensor, t: number | number[]): Tensor {
    const a = this.timestepList(t).map((ti) => this.alphaAt(ti, 'addNoise'));
    return batchLincomb(asFloat(x0), a.map(Math.sqrt), asFloat(noise), a.map((v) => Math.sqrt(1 - v)), 'addNoise');
  }

  /** v = sqrt(a_t) noise - sqrt(1 - a_t) x0. */
  getVelocity(x0: Tensor, noise: Tensor, t: number | number[]): Tensor {
    const a = this.timestepList(t).map((ti) => this.alphaAt(ti, 'getVelocity'));
    return batchLincomb(asFloat(noise), a.map(Math.sqrt), asFloat(x0), a.map((v) => -Math.sqrt(1 - v)), 'getVelocity');
  }

  /** diffusers' index_for_timestep: the second match when t repeats, else the first. */
  protected indexForTimestep(t: number, op: string): number {
    const hits: number[] = [];
    this.timesteps.forEach((v, i) => { if (v === t) hits.push(i); });
    if (hits.length === 0) throw new ArgumentError(`${op}: timestep ${t} is not in this scheduler's timesteps`);
    return hits.length > 1 ? hits[1]! : hits[0]!;
  }

  protected initStepIndex(t: number, op: string): number {
    if (this.stepIndex === null) this.stepIndex = this.indexForTimestep(t, op);
    return this.stepIndex;
  }
}

/** x0 (and epsilon) from a model output for alpha_prod_t, per prediction type. */
export function predictX0(predictionType: string, modelOutput: Tensor, sample: Tensor, alphaProd: number): Tensor {
  const beta = 1 - alphaProd;
  if (predictionType === 'epsilon') return tidy(() => affine(lincomb([sample, 1], [modelOutput, -Math.sqrt(beta)]), 1 / Math.sqrt(alphaProd), 0));
  if (predictionType === 'sample') return clone(modelOutput);
  if (predictionType === 'v_prediction') return lincomb([sample, Math.sqrt(alphaProd)], [modelOutput, -Math.sqrt(beta)]);
  throw new ArgumentError(`scheduler: prediction_type '${predictionType}' is not one of epsilon, v_prediction, sample`);
}

const clampRange = (x: Tensor, r: number) => clamp(x, -r, r);

/** torch.quantile(values, q) with linear interpolation. */
function quantile(values: Float64Array, q: number): number {
  const sorted = values.sort();
  const pos = q * (sorted.length - 1);
  const lo = Math.floor(pos), hi = Math.min(lo + 1, sorted.length - 1);
  return sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (pos - lo);
}

/**
 * Dynamic thresholding (Imagen; diffusers' _threshold_sample): per batch item, s = the `ratio`
 * quantile of |x0| clamped to [1, maxValue]; x0 is clamped to [-s, s] and divided by s.
 */
export function dynamicThreshold(x0: Tensor, ratio: number, maxValue: number): Tensor {
  const batch = x0.shape[0] ?? 1;
  const data = Float64Array.from(x0.data() as ArrayLike<number>);
  const per = data.length / batch;
  const s: number[] = [];
  for (let b = 0; b < batch; ++b) {
    const abs = data.subarray(b * per, (b + 1) * per).map(Math.abs);
    s.push(Math.min(Math.max(quantile(abs, ratio), 1), maxValue));
  }
  return tidy(() => {
    const S = perBatch(x0, s);
    return div(minimum(maximum(x0, affine(S, -1, 0)), S), S);
  });
}

/** Thresholding or clipping of a predicted x0 per the config (thresholding wins, as diffusers). */
export function limitX0(config: SchedulerConfig, x0: Tensor): Tensor {
  if (config.thresholding) return dynamicThreshold(x0, config.dynamic_thresholding_ratio as number, config.sample_max_value as number);
  if (config.clip_sample) { const r = config.clip_sample_range as number; return clampRange(x0, r); }
  return x0;
}
