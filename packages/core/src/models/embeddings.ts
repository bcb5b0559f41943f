// Timestep embeddings as diffusers builds them: the sinusoidal projection (`Timesteps`, no
// parameters) and the two-layer MLP (`TimestepEmbedding`, keys linear_1 / cond_proj / linear_2).
//
// The sinusoids are computed in JavaScript doubles from the timestep values, then stored as
// one tensor: sin(t * f) for t near 1000 loses ~1e-4 in fp32, which would dominate an
// otherwise fp32-accurate forward, and the values are few (batch x channels).
// A timestep given as a tensor on a device other than the CPU is embedded on that device
// instead (deviceSinusoidalEmbedding): no host read-back and no host-to-device copy inside the
// forward, so a whole U-Net step can be captured into a CUDA graph with the timestep as one of
// its inputs. That path computes in fp32 (about 1e-4 absolute at t near 1000; far inside
// half-precision tolerance).
import { ArgumentError, ShapeError } from '../errors.js';
import { Tensor, shapeStr } from '../tensor.js';
import { keep, type Device } from '../memory.js';
import type { DType } from '../dtype.js';
import { tensor } from '../ops/creation.js';
import { cast } from '../ops/shape.js';
import { add, silu, gelu, relu, mul, sin, cos } from '../ops/elementwise.js';
import { concat } from '../ops/indexing.js';
import { reshape, expand } from '../ops/shape.js';
import { dataOf } from '../tensor-data.js';
import { Module } from '../nn/module.js';
import { Linear } from '../nn/layers.js';
import type { ActivationName } from './config.js';

/** The timestep argument models accept: one value for the batch, one per sample, or a tensor. */
export type TimestepInput = number | number[] | Tensor;

/** Timestep values as doubles, broadcast to `batch` entries (as diffusers' `timesteps.expand`). */
export function timestepValues(timestep: TimestepInput, batch: number, op = 'timestep'): number[] {
  let vals: number[];
  if (typeof timestep === 'number') vals = [timestep];
  else if (Array.isArray(timestep)) vals = timestep.map(Number);
  else if (timestep instanceof Tensor) {
    if (timestep.ndim > 1) throw new ShapeError(`${op}: timestep tensor must be 0-d or 1-d, got ${shapeStr(timestep.shape)}`);
    vals = Array.from(dataOf(timestep) as ArrayLike<number | bigint>, (v) => Number(v));
  } else throw new ArgumentError(`${op}: timestep must be a number, number[] or Tensor`);
  if (!vals.every(Number.isFinite)) throw new ArgumentError(`${op}: timesteps must be finite, got ${JSON.stringify(vals)}`);
  if (vals.length === 1) return new Array<number>(batch).fill(vals[0]!);
  if (vals.length !== batch) throw new ShapeError(`${op}: ${vals.length} timesteps for a batch of ${batch}`);
  return vals;
}

/**
 * diffusers' get_timestep_embedding for the given values: [n, dim], first half sin, second half
 * cos (swapped with flipSinToCos), frequencies exp(-ln(maxPeriod) * i / (half - shift)).
 */
export function sinusoidalEmbedding(
  values: number[], dim: number,
  opts: { flipSinToCos: boolean; downscaleFreqShift: number; scale?: number; maxPeriod?: number; device?: Device; dtype?: DType },
): Tensor {
  const half = Math.floor(dim / 2);
  const maxPeriod = opts.maxPeriod ?? 10000, scale = opts.scale ?? 1;
  const freqs = new Float64Array(half);
  for (let i = 0; i < half; ++i) freqs[i] = Math.exp((-Math.log(maxPeriod) * i) / (half - opts.downscaleFreqShift));
  const out = new Float32Array(values.length * dim);
  for (let r = 0; r < values.length; ++r) {
    const row = r * dim;
    for (let i = 0; i < half; ++i) {
      const a = scale * values[r]! * freqs[i]!;
      const s = Math.sin(a), c = Math.cos(a);
      out[row + i] = opts.flipSinToCos ? c : s;
      out[row + half + i] = opts.flipSinToCos ? s : c;
    }
    // An odd dim leaves the last column zero (diffusers pads it).
  }
  const t = tensor(out, { shape: [values.length, dim], device: opts.device ?? 'cpu' });
  return opts.dtype && opts.dtype !== 'f32' ? cast(t, opts.dtype) : t;
}

// Frequency rows per (device, dim, shift, period, scale): created once, outside any graph capture
// (run a model eagerly once before capturing it, as captureGraph's rules say).
const freqCache = new Map<string, Tensor>();
function deviceFrequencies(device: Device, half: number, shift: number, maxPeriod: number, scale: number): Tensor {
  const key = `${device}:${half}:${shift}:${maxPeriod}:${scale}`;
  let f = freqCache.get(key);
  if (!f || f.isDisposed) {
    const v = new Float32Array(half);
    for (let i = 0; i < half; ++i) v[i] = scale * Math.exp((-Math.log(maxPeriod) * i) / (half - shift));
    f = tensor(v, { shape: [1, half], device });
    keep(f);
    freqCache.set(key, f);
  }
  return f;
}

/** sinusoidalEmbedding of a timestep tensor ([] or [1] broadcast to batch, or [batch]) on its own device. */
export function deviceSinusoidalEmbedding(
  timesteps: Tensor, batch: number, dim: number,
  opts: { flipSinToCos: boolean; downscaleFreqShift: number; scale?: number; maxPeriod?: number; dtype?: DType },
): Tensor {
  if (timesteps.ndim > 1) throw new ShapeError(`timestep tensor must be 0-d or 1-d, got ${shapeStr(timesteps.shape)}`);
  if (timesteps.numel !== 1 && timesteps.numel !== batch) throw new ShapeError(`${timesteps.numel} timesteps for a batch of ${batch}`);
  if (dim % 2 !== 0) throw new ArgumentError(`deviceSinusoidalEmbedding: odd embedding width ${dim} is only supported with CPU timesteps`);
  const half = dim / 2;
  const freqs = deviceFrequencies(timesteps.device, half, opts.downscaleFreqShift, opts.maxPeriod ?? 10000, opts.scale ?? 1);
  const t32 = timesteps.dtype === 'f32' ? timesteps : cast(timesteps, 'f32');
  const col = expand(reshape(t32, [timesteps.numel, 1]), [batch, 1]);
  const args = mul(col, freqs);
  const s = sin(args), c = cos(args);
  const out = opts.flipSinToCos ? concat([c, s], 1) : concat([s, c], 1);
  for (const x of [args, s, c]) x.dispose();
  if (t32 !== timesteps) t32.dispose();
  return opts.dtype && opts.dtype !== 'f32' ? cast(out, opts.dtype) : out;
}

/** diffusers' `Timesteps`: the parameter-free sinusoidal projection. */
export class Timesteps extends Module {
  constructor(readonly numChannels: number, readonly flipSinToCos: boolean, readonly downscaleFreqShift: number, readonly scale = 1) { super(); }
  forward(values: number[], like?: { device: Device; dtype: DType }): Tensor {
    return sinusoidalEmbedding(values, this.numChannels, {
      flipSinToCos: this.flipSinToCos, downscaleFreqShift: this.downscaleFreqShift, scale: this.scale,
      ...(like ? { device: like.device, dtype: like.dtype } : {}),
    });
  }
}

export function applyActivation(name: ActivationName, x: Tensor): Tensor {
  switch (name) {
    case 'silu': case 'swish': return silu(x);
    case 'gelu': return gelu(x, 'none');
    case 'relu': return relu(x);
  }
}

/** An activation as a parameter-free module (diffusers' get_activation). */
export class Activation extends Module {
  constructor(readonly name: ActivationName) { super(); }
  forward(x: Tensor): Tensor { return applyActivation(this.name, x); }
}

export interface TimestepEmbeddingOptions {
  actFn?: ActivationName;
  outDim?: number | null;
  postActFn?: ActivationName | null;
  /** LCM's guidance embedding: a bias-free Linear(condProjDim -> in) added to the input. */
  condProjDim?: number | null;
}

/** diffusers' `TimestepEmbedding`: linear_1, act, linear_2 (+ cond_proj, post act). */
export class TimestepEmbedding extends Module {
  linear_1: Linear;
  cond_proj: Linear | null;
  linear_2: Linear;
  readonly actFn: ActivationName;
  readonly postActFn: ActivationName | null;
  constructor(inChannels: number, timeEmbedDim: number, opts: TimestepEmbeddingOptions = {}) {
    super();
    this.actFn = opts.actFn ?? 'silu';
    this.postActFn = opts.postActFn ?? null;
    this.linear_1 = this.registerModule('linear_1', new Linear(inChannels, timeEmbedDim));
    this.cond_proj = opts.condProjDim ? this.registerModule('cond_proj', new Linear(opts.condProjDim, inChannels, { bias: false })) : null;
    this.linear_2 = this.registerModule('linear_2', new Linear(timeEmbedDim, opts.outDim ?? timeEmbedDim));
  }
  forward(sample: Tensor, condition?: Tensor | null): Tensor {
    let h = sample;
    if (condition) {
      if (!this.cond_proj) throw new ArgumentError('TimestepEmbedding: a condition was given but the model has no time_cond_proj_dim');
      h = add(h, this.cond_proj.call(condition));
    }
    h = this.linear_1.call(h);
    h = applyActivation(this.actFn, h);
    h = this.linear_2.call(h);
    return this.postActFn ? applyActivation(this.postActFn, h) : h;
  }
}
