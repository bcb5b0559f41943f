// Learnable quantizers as nn.Modules, so their parameters live in state dicts next to the layer
// they serve (`<layer>.weight_quantizer.delta`, `<layer>.act_quantizer.zero_point`, ...).
//  - WeightQuantizer: LSQ step size `delta` (learnable) and `zero_point` (buffer), per tensor,
//    per channel (default) or per group; init 'minmax' or 'mse' (80 candidates shrinking the
//    range by 1 % each, Lp loss p = 2.4), as EfficientDM / Q-Diffusion.
//  - ActivationQuantizer: per tensor, calibrated from observed batches (min/max, percentile or
//    MSE). With timestepGroups = N > 1 it keeps one (delta, zero) per sampling step and picks the
//    entry from currentContext().stepIndex: explicit indexing, never counting forward calls
//    (the reference's call counter drifts with warm-up or extra CFG calls).
//  - SeparableScales: TuneQDM's s_ij = delta_out[o] · delta_in[i] with N timestep experts chosen
//    from currentContext().timestep as k = min(N-1, floor(t·N/T)).
import { ArgumentError, DTypeError, Module, Tensor, currentContext, expand, full, kernel, noGrad, reshape, select, tensor, unsqueeze } from '@qdm/core';
import { fakeQuant, type FakeQuantParams } from './kernels.js';
import { resolveSpec, type QuantSpec, type ResolvedQuantSpec } from './spec.js';

export type WeightInit = 'minmax' | 'mse';
/** 'running': Q-Diffusion's running_stat, an EMA (momentum 0.95) of the per-batch min and max. */
export type Calibrator = 'minmax' | 'running' | 'percentile' | 'mse';
export const CALIBRATORS: readonly Calibrator[] = ['minmax', 'running', 'percentile', 'mse'];
const RUNNING_MOMENTUM = 0.95;

// ---- scale / zero point from a range ----------------------------------------------------------

export function roundHalfEven(v: number): number {
  const f = Math.floor(v), d = v - f;
  if (d < 0.5) return f;
  if (d > 0.5) return f + 1;
  return f % 2 === 0 ? f : f + 1;
}

/**
 * (scale, zero) covering [min, max] widened to include 0. Asymmetric: s = (hi - lo)/(qmax - qmin)
 * (at least 1e-8), z = qmin - round(lo/s) (= round(-min/s) for the unsigned range, TuneQDM's
 * z = qmin - round(min/s) for the signed one). Symmetric: s = max(|lo|, |hi|)/qmax, z = 0.
 */
export function rangeToScaleZero(min: number, max: number, spec: ResolvedQuantSpec): { scale: number; zero: number } {
  const lo = Math.min(min, 0), hi = Math.max(max, 0);
  if (spec.symmetric) return { scale: Math.max(Math.max(-lo, hi) / spec.qmax, 1e-8), zero: 0 };
  const scale = Math.fround(Math.max((hi - lo) / (spec.qmax - spec.qmin), 1e-8));
  return { scale, zero: spec.qmin - roundHalfEven(lo / scale) };
}

/** Element -> parameter index map for a granularity (channel / group / separable row); exported for AdaRound. */
export function paramMap(shape: readonly number[], spec: ResolvedQuantSpec): { count: number; index: (i: number) => number; rowLength?: number } {
  const numel = shape.reduce((a, b) => a * b, 1);
  // rowLength: set when parameter p owns the contiguous run [p * rowLength, (p + 1) * rowLength).
  switch (spec.granularity) {
    case 'tensor': return { count: 1, index: () => 0, rowLength: numel };
    case 'channel': {
      const axis = spec.channelAxis < 0 ? spec.channelAxis + shape.length : spec.channelAxis;
      if (axis < 0 || axis >= shape.length) throw new ArgumentError(`QuantSpec.channelAxis: ${spec.channelAxis} is out of range for a tensor of shape [${shape.join(', ')}]`);
      const C = shape[axis]!, inner = shape.slice(axis + 1).reduce((a, b) => a * b, 1);
      return { count: C, index: (i) => Math.floor(i / inner) % C, ...(axis === 0 ? { rowLength: inner } : {}) };
    }
    case 'group': {
      const last = shape[shape.length - 1] ?? 1;
      if (last % spec.groupSize !== 0) throw new ArgumentError(`QuantSpec.groupSize: ${spec.groupSize} does not divide the last dim of [${shape.join(', ')}]`);
      return { count: numel / spec.groupSize, index: (i) => Math.floor(i / spec.groupSize), rowLength: spec.groupSize };
    }
    case 'separable': {
      const K = numel / shape[0]!;
      return { count: shape[0]!, index: (i) => Math.floor(i / K), rowLength: K };
    }
  }
}

function fakeQuantJs(x: number, s: number, z: number, qmin: number, qmax: number): number {
  const q = Math.min(Math.max(roundHalfEven(Math.fround(x / s)) + z, qmin), qmax);
  return (q - z) * s;
}

/**
 * Per-parameter (scale, zero) of `values` grouped by `index`: 'minmax' over each group, or 'mse':
 * the best of 80 ranges [min, max]·(1 - 0.01 i) by mean |x - x_hat|^2.4 (LAPQ's Lp loss).
 * opts.rowLength (parameter p owns the contiguous run [p * rowLength, (p + 1) * rowLength); always
 * so for count 1) lets the MSE sums run in the native kernel (quantMseErrors: the same arithmetic
 * and order as the JS loop, multithreaded; about 10x faster); opts.js forces the JS loop.
 */
export function fitScaleZero(values: ArrayLike<number>, count: number, index: (i: number) => number, spec: ResolvedQuantSpec, method: WeightInit | 'percentile',
  opts: { percentile?: number; rowLength?: number; js?: boolean } = {}): { scale: Float32Array; zero: Float32Array } {
  const mins = new Float64Array(count).fill(Infinity), maxs = new Float64Array(count).fill(-Infinity);
  for (let i = 0; i < values.length; i++) {
    const p = index(i), v = values[i]!;
    if (v < mins[p]!) mins[p] = v;
    if (v > maxs[p]!) maxs[p] = v;
  }
  for (let p = 0; p < count; p++) if (!Number.isFinite(mins[p]!)) { mins[p] = 0; maxs[p] = 0; }
  const scale = new Float32Array(count), zero = new Float32Array(count);
  if (method === 'percentile') {
    if (count !== 1) throw new ArgumentError('percentile calibration is per tensor');
    const sorted = Float64Array.from(values).sort();
    const q = opts.percentile ?? 0.9999;
    const at = (f: number) => sorted[Math.min(sorted.length - 1, Math.max(0, Math.round(f * (sorted.length - 1))))] ?? 0;
    const r = rangeToScaleZero(at(1 - q), at(q), spec);
    scale[0] = r.scale; zero[0] = r.zero;
    return { scale, zero };
  }
  if (method === 'minmax') {
    for (let p = 0; p < count; p++) { const r = rangeToScaleZero(mins[p]!, maxs[p]!, spec); scale[p] = r.scale; zero[p] = r.zero; }
    return { scale, zero };
  }
  // Candidate c scales the range by 1 - 0.01 c; err[c * count + p] sums |x - x_hat|^2.4 over group p.
  const CANDIDATES = 80;
  const cs = new Float32Array(CANDIDATES * count), cz = new Float32Array(CANDIDATES * count);
  for (let c = 0; c < CANDIDATES; c++) {
    const f = 1 - 0.01 * c;
    for (let p = 0; p < count; p++) { const r = rangeToScaleZero(mins[p]! * f, maxs[p]! * f, spec); cs[c * count + p] = r.scale; cz[c * count + p] = r.zero; }
  }
  let err: Float64Array;
  const rowLength = opts.rowLength ?? (count === 1 ? values.length : undefined);
  if (!opts.js && rowLength !== undefined && rowLength * count === values.length && values.length >= 4096) {
    const x = values instanceof Float32Array ? values : Float32Array.from(values);
    err = kernel('quantMseErrors', tensor(x), tensor(cs), tensor(cz), count, spec.qmin, spec.qmax) as Float64Array;
  } else {
    err = new Float64Array(CANDIDATES * count);
    for (let c = 0; c < CANDIDATES; c++)
      for (let i = 0; i < values.length; i++) {
        const k = c * count + index(i), v = values[i]!;
        err[k] += Math.abs(v - fakeQuantJs(v, cs[k]!, cz[k]!, spec.qmin, spec.qmax)) ** 2.4;
      }
  }
  const best = new Float64Array(count).fill(Infinity);
  for (let c = 0; c < CANDIDATES; c++)
    for (let p = 0; p < count; p++) {
      const k = c * count + p;
      if (err[k]! < best[p]!) { best[p] = err[k]!; scale[p] = cs[k]!; zero[p] = cz[k]!; }
    }
  return { scale, zero };
}

/** The elements of a float tensor as fp32 (a copy). */
function floats(t: Tensor, who: string): Float32Array {
  if (!['f32', 'f16', 'bf16'].includes(t.dtype)) throw new DTypeError(`${who}: expected a floating-point tensor, got ${t.dtype}`);
  return t.data() as Float32Array;
}

/** Writes values into a float tensor's storage in place (parameters keep their identity). */
function assign(t: Tensor, values: ArrayLike<number>): void {
  if (t.dtype !== 'f32' || t.device !== 'cpu' || !t.isContiguous()) throw new ArgumentError(`quantizer: expected a contiguous f32 CPU parameter, got ${t.dtype} on ${t.device}`);
  (t.cpuData() as Float32Array).set(values, t.offset);
}

// ---- weights ----------------------------------------------------------------------------------

export interface WeightQuantizerOptions { init?: WeightInit }

export class WeightQuantizer extends Module {
  readonly spec: ResolvedQuantSpec;
  readonly init: WeightInit;
  delta: Tensor;
  zero_point: Tensor;
  /** True once initialised from a weight (init() or a loaded state dict). */
  initialised = false;

  constructor(spec: QuantSpec, weightShape: readonly number[], opts: WeightQuantizerOptions = {}) {
    super();
    this.spec = resolveSpec(spec, 'WeightQuantizer spec');
    if (this.spec.granularity === 'separable') throw new ArgumentError("WeightQuantizer: granularity 'separable' is served by SeparableScales (use createWeightQuantizer)");
    this.init = opts.init ?? 'minmax';
    if (this.init !== 'minmax' && this.init !== 'mse') throw new ArgumentError(`WeightQuantizer: init must be 'minmax' or 'mse', got ${String(opts.init)}`);
    const { count } = paramMap(weightShape, this.spec);
    this.delta = this.registerParameter('delta', full([count], 1));
    this.zero_point = this.registerBuffer('zero_point', full([count], 0));
  }

  /** Sets delta and zero_point from the weight (no gradient recorded). */
  initFrom(weight: Tensor): this {
    const { count, index, rowLength } = paramMap(weight.shape, this.spec);
    const { scale, zero } = fitScaleZero(floats(weight, 'WeightQuantizer.initFrom'), count, index, this.spec, this.init, { rowLength });
    assign(this.delta, scale); assign(this.zero_point, zero);
    this.initialised = true;
    return this;
  }

  params(): FakeQuantParams {
    return { scale: this.delta, zeroPoint: this.zero_point, qmin: this.spec.qmin, qmax: this.spec.qmax, granularity: this.spec.granularity, channelAxis: this.spec.channelAxis, groupSize: this.spec.groupSize };
  }

  forward(weight: Tensor): Tensor { return fakeQuant(weight, this.params()); }
}

// ---- separable (TuneQDM) ----------------------------------------------------------------------

/**
 * TuneQDM scales for an [O, I, ...] weight: delta_out [N, O] (init: per-row min/max scale),
 * delta_in [N, I] (init 1, shared over the kernel window), zero_point [O]; N = timestepGroups.
 */
export class SeparableScales extends Module {
  readonly spec: ResolvedQuantSpec;
  readonly experts: number;
  readonly window: number;
  delta_out: Tensor;
  delta_in: Tensor;
  zero_point: Tensor;
  initialised = false;

  constructor(spec: QuantSpec, weightShape: readonly number[]) {
    super();
    this.spec = resolveSpec(spec, 'SeparableScales spec');
    if (this.spec.granularity !== 'separable') throw new ArgumentError(`SeparableScales: granularity must be 'separable', got '${this.spec.granularity}'`);
    if (weightShape.length < 2) throw new ArgumentError(`SeparableScales: a weight of rank >= 2 is needed, got [${weightShape.join(', ')}]`);
    this.experts = this.spec.timestepGroups;
    const [O, I] = weightShape as [number, number];
    this.window = weightShape.slice(2).reduce((a, b) => a * b, 1);
    this.delta_out = this.registerParameter('delta_out', full([this.experts, O], 1));
    this.delta_in = this.registerParameter('delta_in', full([this.experts, I], 1));
    this.zero_point = this.registerBuffer('zero_point', full([O], 0));
  }

  initFrom(weight: Tensor): this {
    const { count, index } = paramMap(weight.shape, this.spec);
    const { scale, zero } = fitScaleZero(floats(weight, 'SeparableScales.initFrom'), count, index, this.spec, 'minmax');
    const rows = new Float32Array(this.experts * count);
    for (let k = 0; k < this.experts; k++) rows.set(scale, k * count);
    assign(this.delta_out, rows);
    assign(this.delta_in, new Float32Array(this.delta_in.numel).fill(1));
    assign(this.zero_point, zero);
    this.initialised = true;
    return this;
  }

  /** The active expert: k = min(N-1, floor(t·N/T)), t and T from the forward context. */
  expertIndex(): number {
    if (this.experts === 1) return 0;
    const ctx = currentContext();
    if (ctx.timestep === undefined) throw new ArgumentError(`SeparableScales: ${this.experts} timestep experts need the timestep; run the model inside withContext({ timestep }) (sample() does this)`);
    const T = ctx.numTrainTimesteps ?? 1000;
    return Math.max(0, Math.min(this.experts - 1, Math.floor((ctx.timestep * this.experts) / T)));
  }

  params(): FakeQuantParams {
    const k = this.expertIndex();
    const rows = select(this.delta_out, 0, k);
    let cols = select(this.delta_in, 0, k);
    if (this.window > 1) cols = reshape(expand(unsqueeze(cols, 1), [cols.shape[0]!, this.window]), [cols.shape[0]! * this.window]);
    return { scale: rows, colScale: cols, zeroPoint: this.zero_point, qmin: this.spec.qmin, qmax: this.spec.qmax, granularity: 'separable' };
  }

  forward(weight: Tensor): Tensor { return fakeQuant(weight, this.params()); }
}

export type AnyWeightQuantizer = WeightQuantizer | SeparableScales;

/** The weight quantizer a spec asks for, initialised from the weight. */
export function createWeightQuantizer(spec: QuantSpec, weight: Tensor, opts: WeightQuantizerOptions = {}): AnyWeightQuantizer {
  const q = spec.granularity === 'separable' ? new SeparableScales(spec, weight.shape) : new WeightQuantizer(spec, weight.shape, opts);
  return noGrad(() => q.initFrom(weight));
}

// ---- activations ------------------------------------------------------------------------------

export interface ActivationQuantizerOptions {
  calibrator?: Calibrator;
  /** Percentile calibrator: the kept fraction (range = [quantile(1-p), quantile(p)]). Default 0.9999. */
  percentile?: number;
  /** Values kept per table entry for percentile / MSE calibration (a strided subsample). Default 2^20. */
  sampleLimit?: number;
  /** Temporal tables without a stepIndex in the context: 'error' (default) or 'first' (use entry 0). */
  missingStep?: 'error' | 'first';
}

interface Observed { min: number; max: number; emaMin: number; emaMax: number; batches: number; samples: number[][]; kept: number }

export class ActivationQuantizer extends Module {
  readonly spec: ResolvedQuantSpec;
  readonly numSteps: number;
  readonly calibrator: Calibrator;
  readonly percentile: number;
  readonly sampleLimit: number;
  readonly missingStep: 'error' | 'first';
  delta: Tensor;
  zero_point: Tensor;
  /** Off: pass activations through (calibration runs, or full-precision activations). */
  enabled = true;
  private readonly observed = new Map<number | 'all', Observed>();

  constructor(spec: QuantSpec, opts: ActivationQuantizerOptions = {}) {
    super();
    this.spec = resolveSpec(spec, 'ActivationQuantizer spec');
    if (this.spec.granularity !== 'tensor') throw new ArgumentError(`ActivationQuantizer: activations are quantized per tensor; granularity '${this.spec.granularity}' is not supported`);
    this.numSteps = this.spec.timestepGroups;
    this.calibrator = opts.calibrator ?? 'mse';
    if (!CALIBRATORS.includes(this.calibrator)) throw new ArgumentError(`ActivationQuantizer: calibrator must be one of ${CALIBRATORS.join(', ')}, got ${String(opts.calibrator)}`);
    this.percentile = opts.percentile ?? 0.9999;
    if (!(this.percentile > 0.5 && this.percentile <= 1)) throw new ArgumentError(`ActivationQuantizer: percentile must lie in (0.5, 1], got ${opts.percentile}`);
    this.sampleLimit = opts.sampleLimit ?? 1 << 20;
    this.missingStep = opts.missingStep ?? 'error';
    this.delta = this.registerParameter('delta', full([this.numSteps], 1));
    this.zero_point = this.registerBuffer('zero_point', full([this.numSteps], 0));
  }

  /** Table entry for the current call (0 unless temporal). */
  stepEntry(): number {
    if (this.numSteps === 1) return 0;
    const step = currentContext().stepIndex;
    if (step === undefined) {
      if (this.missingStep === 'first') return 0;
      throw new ArgumentError(`ActivationQuantizer: a temporal table of ${this.numSteps} steps needs the step index; run the model inside withContext({ stepIndex }) (sample() does this), or pass missingStep: 'first'`);
    }
    if (!Number.isInteger(step) || step < 0 || step >= this.numSteps) throw new ArgumentError(`ActivationQuantizer: stepIndex ${step} is outside the temporal table of ${this.numSteps} steps`);
    return step;
  }

  /** Records the range (and a subsample for percentile / MSE) of one calibration batch. */
  observe(x: Tensor): void {
    const v = floats(x, 'ActivationQuantizer.observe');
    const keys: Array<number | 'all'> = ['all'];
    if (this.numSteps > 1) { const s = currentContext().stepIndex; if (s !== undefined && s >= 0 && s < this.numSteps) keys.push(s); }
    let min = Infinity, max = -Infinity;
    for (let i = 0; i < v.length; i++) { const e = v[i]!; if (e < min) min = e; if (e > max) max = e; }
    const needSamples = this.calibrator === 'percentile' || this.calibrator === 'mse';
    const stride = Math.max(1, Math.ceil(v.length / 65536));
    const sub: number[] = [];
    if (needSamples) for (let i = 0; i < v.length; i += stride) sub.push(v[i]!);
    for (const k of keys) {
      const o = this.observed.get(k) ?? { min: Infinity, max: -Infinity, emaMin: 0, emaMax: 0, batches: 0, samples: [], kept: 0 };
      o.min = Math.min(o.min, min); o.max = Math.max(o.max, max);
      o.emaMin = o.batches === 0 ? min : o.emaMin * RUNNING_MOMENTUM + min * (1 - RUNNING_MOMENTUM);
      o.emaMax = o.batches === 0 ? max : o.emaMax * RUNNING_MOMENTUM + max * (1 - RUNNING_MOMENTUM);
      o.batches++;
      if (needSamples) {
        o.samples.push(sub); o.kept += sub.length;
        // Over the limit: halve every batch's subsample (deterministic, keeps all batches represented).
        while (o.kept > this.sampleLimit) {
          o.kept = 0;
          o.samples = o.samples.map((s) => { const h = s.filter((_, i) => i % 2 === 0); o.kept += h.length; return h; });
        }
      }
      this.observed.set(k, o);
    }
  }

  /** Forgets what observe() recorded. */
  discardObservations(): void { this.observed.clear(); }

  /** True when observe() has seen data since the last finishCalibration(). */
  get hasObservations(): boolean { return this.observed.has('all'); }

  /** Sets (delta, zero) of every entry from the observations: per step where seen, else the global range. */
  finishCalibration(): void {
    const all = this.observed.get('all');
    if (!all) throw new ArgumentError('ActivationQuantizer: finishCalibration() without any observed batch (was the layer called during calibration?)');
    const fit = (o: Observed) => {
      const values = this.calibrator === 'minmax' ? [o.min, o.max] : this.calibrator === 'running' ? [o.emaMin, o.emaMax] : [o.min, o.max, ...o.samples.flat()];
      const method = this.calibrator === 'running' ? 'minmax' : this.calibrator;
      const r = fitScaleZero(values, 1, () => 0, this.spec, method, { percentile: this.percentile });
      return [r.scale[0]!, r.zero[0]!] as const;
    };
    const global = fit(all);
    const scales = new Float32Array(this.numSteps), zeros = new Float32Array(this.numSteps);
    for (let s = 0; s < this.numSteps; s++) {
      const o = this.observed.get(s);
      const [sc, z] = o ? fit(o) : global;
      scales[s] = sc; zeros[s] = z;
    }
    assign(this.delta, scales); assign(this.zero_point, zeros);
    this.observed.clear();
  }

  params(): FakeQuantParams {
    const k = this.stepEntry();
    const pick = (t: Tensor) => (this.numSteps === 1 ? t : reshape(select(t, 0, k), [1]));
    return { scale: pick(this.delta), zeroPoint: pick(this.zero_point), qmin: this.spec.qmin, qmax: this.spec.qmax, granularity: 'tensor' };
  }

  forward(x: Tensor): Tensor {
    if (!this.enabled) return x;
    return fakeQuant(x, this.params());
  }
}
