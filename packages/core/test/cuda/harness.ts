// Shared helpers for the CUDA tests: whether a GPU is usable (tests skip cleanly without one),
// a relative error that NaN never passes, NaN poisoning of outputs, and compareOp, which runs
// one op on the CPU and on the GPU on the same inputs and measures the difference.
import { Tensor, cast, empty, kernel } from '@qdm/core';
import type { DType } from '@qdm/core';
import { cudaUnavailableReason } from '../../src/backend/index.js';

/** Why CUDA tests skip here (null when a GPU is usable). */
export const cudaSkipReason: string | null = cudaUnavailableReason();
export const cudaAvailable = cudaSkipReason === null;
/** Title suffix for describe.skipIf blocks, so a skipped run says why. */
export const skipNote = cudaAvailable ? '' : ` (skipped: ${cudaSkipReason})`;

/** ||a - b|| / ||b||; Infinity as soon as `a` holds a NaN or infinity where b is finite, or b is not finite. */
export function relErr(a: ArrayLike<number | bigint>, b: ArrayLike<number | bigint>): number {
  if (a.length !== b.length) return Infinity;
  let num = 0, den = 0;
  for (let i = 0; i < b.length; ++i) {
    const x = Number(a[i]!), y = Number(b[i]!);
    if (!Number.isFinite(x) || !Number.isFinite(y)) {
      if (Number.isNaN(x) || Number.isNaN(y) || x !== y) return Infinity;  // NaN never passes; equal infinities do
      continue;
    }
    num += (x - y) ** 2;
    den += y ** 2;
  }
  if (den === 0) return num === 0 ? 0 : Math.sqrt(num);
  return Math.sqrt(num / den);
}

/** Fills t with NaN (floats) or an unlikely integer (-77 / 0xB3 / ...), so unwritten elements show. */
export function poison(t: Tensor): Tensor {
  const isFloat = t.dtype === 'f32' || t.dtype === 'f16' || t.dtype === 'bf16' || t.dtype === 'f8e4m3';
  kernel('fill', t, isFloat ? NaN : t.dtype === 'u8' ? 179 : t.dtype === 'i4' ? -7 : -77);
  return t;
}

/**
 * Leaves poisoned blocks of `shape`/`dtype` in the CUDA allocator's cache, so the next
 * allocation of that size (an op's output) starts as NaN instead of stale valid data.
 */
export function poisonCache(shape: readonly number[], dtype: DType, count = 4): void {
  const ts: Tensor[] = [];
  for (let i = 0; i < count; ++i) ts.push(poison(empty(shape, dtype, 'cuda')));
  for (const t of ts) t.dispose();
}

const floatDtypes: DType[] = ['f32', 'f16', 'bf16'];

export interface CompareOptions {
  /** Inputs that are floating point are cast to this dtype on both devices (default f32). */
  dtype?: DType;
  /** Largest relative error accepted (default 1e-5 for f32, 1e-2 for halves). */
  tol?: number;
}
export interface CompareResult { err: number; ok: boolean; cpu: Float32Array | ArrayLike<number | bigint>; gpu: Float32Array | ArrayLike<number | bigint> }

/**
 * Runs fn on CPU copies and GPU copies of `inputs` (floating inputs cast to opts.dtype first, so
 * both devices see the same rounded values) and returns the relative error of the GPU result
 * against the CPU one. Outputs of several tensors are concatenated.
 */
export function compareOp(fn: (...xs: Tensor[]) => Tensor | Tensor[], inputs: Tensor[], opts: CompareOptions = {}): CompareResult {
  const dtype = opts.dtype ?? 'f32';
  const tol = opts.tol ?? (dtype === 'f32' ? 1e-5 : 1e-2);
  const prep = inputs.map((t) => (floatDtypes.includes(t.dtype) && t.dtype !== dtype && floatDtypes.includes(dtype) ? cast(t, dtype) : t));
  const cpuOut = ([] as Tensor[]).concat(fn(...prep));
  const gpuIn = prep.map((t) => t.to('cuda'));
  for (const o of cpuOut) poisonCache(o.shape, o.dtype);
  const gpuOut = ([] as Tensor[]).concat(fn(...gpuIn));
  const flat = (ts: Tensor[]) => {
    const parts = ts.map((t) => Array.from(t.data() as ArrayLike<number | bigint>, Number));
    return Float32Array.from(parts.flat());
  };
  const cpu = flat(cpuOut), gpu = flat(gpuOut);
  for (const o of gpuOut) if (o.device !== 'cuda') throw new Error(`compareOp: an output of the GPU run is on ${o.device}`);
  const err = relErr(gpu, cpu);
  for (const t of [...cpuOut, ...gpuOut, ...gpuIn]) t.dispose();
  for (let i = 0; i < prep.length; ++i) if (prep[i] !== inputs[i]) prep[i]!.dispose();
  return { err, ok: err <= tol, cpu, gpu };
}
