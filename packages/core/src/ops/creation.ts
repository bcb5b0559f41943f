// Tensor creation: from data, constants, ranges and seeded random numbers.
import { ArgumentError, DeviceError } from '../errors.js';
import { checkDType, isFloating, type DType } from '../dtype.js';
import type { Device } from '../memory.js';
import { getBackend, resolveDevice, kernel } from '../backend/index.js';
import { RandomDist } from '../backend/opcodes.js';
import { Generator, getDefaultGenerator } from '../random.js';
import { Tensor, numelOf, type Shape } from '../tensor.js';
import { empty } from './util.js';

export interface CreateOptions { dtype?: DType; device?: Device | 'auto'; requiresGrad?: boolean }

type Nested = number | bigint | boolean | Nested[];

function inferShape(data: Nested): number[] {
  const shape: number[] = [];
  let cur: Nested = data;
  while (Array.isArray(cur)) { shape.push(cur.length); cur = cur[0] as Nested; if (cur === undefined) break; }
  return shape;
}

function flatten(data: Nested, out: Array<number | bigint>, shape: number[], depth: number): void {
  if (!Array.isArray(data)) { out.push(typeof data === 'boolean' ? (data ? 1 : 0) : data); return; }
  if (data.length !== shape[depth]) throw new ArgumentError(`tensor(): ragged nested array (expected length ${shape[depth]} at depth ${depth}, got ${data.length})`);
  for (const d of data) flatten(d, out, shape, depth + 1);
}

function finish(t: Tensor, opts?: CreateOptions): Tensor {
  if (opts?.requiresGrad) t.requiresGrad = true;
  return t;
}

/** Creates a tensor from nested arrays or a flat typed array (with opts.shape). */
export function tensor(data: Nested | ArrayLike<number> | BigInt64Array, opts: CreateOptions & { shape?: Shape } = {}): Tensor {
  const dtype = checkDType(opts.dtype ?? 'f32');
  let flat: ArrayLike<number | bigint>;
  let shape: number[];
  if (ArrayBuffer.isView(data) || (opts.shape && !Array.isArray((data as unknown[])[0]))) {
    flat = data as ArrayLike<number>;
    shape = opts.shape ? [...opts.shape] : [flat.length];
  } else {
    shape = opts.shape ? [...opts.shape] : inferShape(data as Nested);
    const out: Array<number | bigint> = [];
    flatten(data as Nested, out, inferShape(data as Nested), 0);
    flat = out;
  }
  if (numelOf(shape) !== flat.length) throw new ArgumentError(`tensor(): ${flat.length} values do not fill shape [${shape.join(', ')}]`);
  // Build in f32 / i64 / i32 on the CPU, then cast and move.
  let host: Tensor;
  if (dtype === 'i64') {
    host = empty(shape, 'i64');
    const d = host.cpuData() as BigInt64Array;
    for (let i = 0; i < flat.length; ++i) d[i] = BigInt(flat[i] as number);
  } else if (dtype === 'i32' || dtype === 'i8' || dtype === 'u8') {
    host = empty(shape, dtype);
    const d = host.cpuData() as Int32Array;
    for (let i = 0; i < flat.length; ++i) d[i] = Number(flat[i]);
  } else {
    host = empty(shape, 'f32');
    const d = host.cpuData() as Float32Array;
    for (let i = 0; i < flat.length; ++i) d[i] = Number(flat[i]);
    if (dtype !== 'f32') { const c = castRaw(host, dtype); host.dispose(); host = c; }
  }
  const device = resolveDevice(opts.device);
  if (device !== 'cpu') { const moved = moveRaw(host, device); host.dispose(); host = moved; }
  return finish(host, opts);
}

/** Copy with dtype conversion, no autograd (ops/shape.ts wraps it with gradients). */
export function castRaw(t: Tensor, dtype: DType): Tensor {
  const out = empty(t.shape, dtype, t.device);
  kernel('copyCast', t, out);
  return out;
}

/** Copy to another device, no autograd. */
export function moveRaw(t: Tensor, device: Device): Tensor {
  if (t.device === device) return t;
  const out = empty(t.shape, t.dtype, device);
  // The device side's backend moves the bytes (one host and one device tensor).
  const b = getBackend(t.device === 'cpu' ? device : t.device);
  if (!b.transfer) throw new DeviceError('QDM_BAD_DEVICE', `no transfer between ${t.device} and ${device}`);
  try {
    b.transfer(t, out);
  } catch (err) {
    out.dispose();
    throw err;
  }
  return out;
}

export function full(shape: Shape, value: number, opts: CreateOptions = {}): Tensor {
  const t = empty(shape, checkDType(opts.dtype ?? 'f32'), resolveDevice(opts.device));
  if (value !== 0 || t.device !== 'cpu') kernel('fill', t, value);
  return finish(t, opts);
}
export function zeros(shape: Shape, opts: CreateOptions = {}): Tensor { return full(shape, 0, opts); }
export function ones(shape: Shape, opts: CreateOptions = {}): Tensor { return full(shape, 1, opts); }
export function scalar(value: number, opts: CreateOptions = {}): Tensor { return full([], value, opts); }
export function zerosLike(t: Tensor, opts: CreateOptions = {}): Tensor { return full(t.shape, 0, { dtype: t.dtype, device: t.device, ...opts }); }
export function onesLike(t: Tensor, opts: CreateOptions = {}): Tensor { return full(t.shape, 1, { dtype: t.dtype, device: t.device, ...opts }); }
export function fullLike(t: Tensor, value: number, opts: CreateOptions = {}): Tensor { return full(t.shape, value, { dtype: t.dtype, device: t.device, ...opts }); }

/** Values start, start+step, ... below end (like Python's range). */
export function arange(start: number, end?: number, step = 1, opts: CreateOptions = {}): Tensor {
  if (end === undefined) { end = start; start = 0; }
  if (step === 0) throw new ArgumentError('arange(): step must be non-zero');
  const n = Math.max(0, Math.ceil((end - start) / step));
  const data = new Float64Array(n);
  for (let i = 0; i < n; ++i) data[i] = start + i * step;
  return tensor(Array.from(data), { ...opts, shape: [n] });
}

export function linspace(start: number, end: number, steps: number, opts: CreateOptions = {}): Tensor {
  const data: number[] = [];
  for (let i = 0; i < steps; ++i) data.push(steps === 1 ? start : start + ((end - start) * i) / (steps - 1));
  return tensor(data, { ...opts, shape: [steps] });
}

export interface RandomOptions extends CreateOptions { generator?: Generator; seed?: number }

function drawRandom(dist: number, shape: Shape, p0: number, p1: number, opts: RandomOptions): Tensor {
  const dtype = checkDType(opts.dtype ?? 'f32');
  if (!isFloating(dtype)) throw new ArgumentError(`random tensors must be floating point (got ${dtype})`);
  const gen = opts.generator ?? (opts.seed !== undefined ? new Generator(opts.seed) : getDefaultGenerator());
  const n = numelOf(shape);
  // Numbers are drawn on the CPU in f32, then cast and moved, so every device sees the same values.
  let t = empty(shape, 'f32');
  kernel('random', dist, t, gen.seedHi, gen.seedLo, gen.take(n), p0, p1);
  if (dtype !== 'f32') { const c = castRaw(t, dtype); t.dispose(); t = c; }
  const device = resolveDevice(opts.device);
  if (device !== 'cpu') { const m = moveRaw(t, device); t.dispose(); t = m; }
  return finish(t, opts);
}

/** Standard normal samples (mean 0, std 1). */
export function randn(shape: Shape, opts: RandomOptions = {}): Tensor { return drawRandom(RandomDist.normal, shape, 0, 1, opts); }
/** Uniform samples in [low, high) (default [0, 1)). */
export function rand(shape: Shape, opts: RandomOptions & { low?: number; high?: number } = {}): Tensor {
  return drawRandom(RandomDist.uniform, shape, opts.low ?? 0, opts.high ?? 1, opts);
}
export function randnLike(t: Tensor, opts: RandomOptions = {}): Tensor { return randn(t.shape, { dtype: t.dtype, device: t.device, ...opts }); }

/** Uniform integers in [low, high) as i64. */
export function randint(low: number, high: number, shape: Shape, opts: RandomOptions = {}): Tensor {
  const u = rand(shape, { generator: opts.generator, seed: opts.seed });
  const f = u.cpuData() as Float32Array;
  const out = empty(shape, 'i64');
  const d = out.cpuData() as BigInt64Array;
  for (let i = 0; i < f.length; ++i) d[i] = BigInt(Math.min(high - 1, low + Math.floor(f[i]! * (high - low))));
  u.dispose();
  const device = resolveDevice(opts.device);
  if (device !== 'cpu') { const m = moveRaw(out, device); out.dispose(); return m; }
  return out;
}
