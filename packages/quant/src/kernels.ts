// TS wrappers of the native fake-quant kernels (native/src/cpu/quant.cpp). fakeQuant is an
// autograd op: x_hat = (clamp(round(x/s) + z, qmin, qmax) - z) · s with the LSQ/EfficientDM
// gradients for x, the scale(s) and the zero point, each only where that input requires grad.
// The kernels take dense fp32; half inputs are widened and the result narrowed back, as in core.
import { ArgumentError, DTypeError, ShapeError, Tensor, asF32, contiguous, empty, kernel, narrowTo, record, shapeStr } from '@qdm/core';
import type { Granularity } from './spec.js';

export interface FakeQuantParams {
  /** Scale: [1] (tensor), [C] (channel), [numel/groupSize] (group), row factor [R] (separable). */
  scale: Tensor;
  /** Zero point with the scale's shape (separable: [R]). Integer-valued for exact packing. */
  zeroPoint: Tensor;
  qmin: number;
  qmax: number;
  granularity: Granularity;
  /** 'channel': the channel axis (default 0). */
  channelAxis?: number;
  /** 'group': elements per group along the last dim. */
  groupSize?: number;
  /** 'separable': the column factor [K], K = numel / shape[0] (conv weights flattened to [O, I·kh·kw]). */
  colScale?: Tensor | null;
}

const MODE: Record<Granularity, number> = { tensor: 0, channel: 1, group: 2, separable: 3 };

/** Layout arguments (mode, channels, inner, groupSize, cols) for x's shape, checked against the parameters. */
export function layoutOf(shape: readonly number[], q: FakeQuantParams, op = 'fakeQuant'): number[] {
  const numel = shape.reduce((a, b) => a * b, 1);
  const need = (what: string, t: Tensor | null | undefined, n: number) => {
    if (!t) throw new ArgumentError(`${op}: ${what} is required for granularity '${q.granularity}'`);
    if (t.numel !== n) throw new ShapeError(`${op}: ${what} ${shapeStr(t.shape)} has ${t.numel} entries, expected ${n} for input ${shapeStr(shape)} (granularity '${q.granularity}')`);
  };
  if (!Number.isFinite(q.qmin) || !Number.isFinite(q.qmax) || q.qmin >= q.qmax) throw new ArgumentError(`${op}: bad integer range [${q.qmin}, ${q.qmax}]`);
  let channels = 1, inner = 1, groupSize = 1, cols = 1, P = 1;
  switch (q.granularity) {
    case 'tensor': break;
    case 'channel': {
      const axis0 = q.channelAxis ?? 0;
      const axis = axis0 < 0 ? axis0 + shape.length : axis0;
      if (!Number.isInteger(axis) || axis < 0 || axis >= shape.length) throw new ArgumentError(`${op}: channelAxis ${axis0} out of range for input ${shapeStr(shape)}`);
      channels = shape[axis]!;
      inner = shape.slice(axis + 1).reduce((a, b) => a * b, 1);
      P = channels;
      break;
    }
    case 'group': {
      groupSize = q.groupSize ?? 0;
      const last = shape[shape.length - 1] ?? 1;
      if (!Number.isInteger(groupSize) || groupSize < 1 || last % groupSize !== 0) throw new ShapeError(`${op}: group size ${q.groupSize} must divide the last dim of ${shapeStr(shape)}`);
      P = numel / groupSize;
      break;
    }
    case 'separable': {
      if (shape.length < 2) throw new ShapeError(`${op}: separable scales need a 2-d or higher input, got ${shapeStr(shape)}`);
      cols = numel / shape[0]!;
      P = shape[0]!;
      need('colScale', q.colScale, cols);
      break;
    }
    default: throw new ArgumentError(`${op}: unknown granularity '${String(q.granularity)}'`);
  }
  need('scale', q.scale, P);
  need('zeroPoint', q.zeroPoint, P);
  return [MODE[q.granularity], channels, inner, groupSize, cols];
}

const dense = (t: Tensor) => contiguous(asF32(t));

function checkFloat(x: Tensor, op: string): void {
  if (!['f32', 'f16', 'bf16'].includes(x.dtype)) throw new DTypeError(`${op}: expected a floating-point input, got ${x.dtype}`);
}

/** Fake quantization with LSQ gradients (see the file header). */
export function fakeQuant(x: Tensor, q: FakeQuantParams): Tensor {
  checkFloat(x, 'fakeQuant');
  const layout = layoutOf(x.shape, q);
  const x32 = dense(x), s32 = dense(q.scale), z32 = dense(q.zeroPoint);
  const c32 = q.granularity === 'separable' && q.colScale ? dense(q.colScale) : null;
  const out = empty(x.shape, 'f32', x.device);
  if (out.numel > 0) kernel('fakeQuantForward', x32, s32, z32, c32, out, q.qmin, q.qmax, ...layout);
  const y = narrowTo(out, x.dtype);
  const col = c32 ? q.colScale! : null;
  const inputs = col ? [x, q.scale, q.zeroPoint, col] : [x, q.scale, q.zeroPoint];
  return record(y, 'fakeQuant', inputs, (g) => {
    const g32 = dense(g);
    const gx = x.requiresGrad ? empty(x.shape, 'f32', x.device) : null;
    const gs = q.scale.requiresGrad ? empty(q.scale.shape, 'f32', x.device) : null;
    const gz = q.zeroPoint.requiresGrad ? empty(q.zeroPoint.shape, 'f32', x.device) : null;
    const gc = col?.requiresGrad ? empty(col.shape, 'f32', x.device) : null;
    if (x.numel > 0) kernel('fakeQuantBackward', x32, s32, z32, c32, g32, gx, gs, gc, gz, q.qmin, q.qmax, ...layout);
    const cast = (t: Tensor | null, like: Tensor) => (t ? narrowTo(t, like.dtype) : null);
    const grads = [cast(gx, x), cast(gs, q.scale), cast(gz, q.zeroPoint)];
    if (col) grads.push(cast(gc, col));
    return grads;
  });
}

export type CodeDType = 'i8' | 'u8' | 'i4';

/** Integer codes clamp(round(x/s) + z, qmin, qmax) stored as i8, u8 or packed i4 (two per byte, low nibble first). */
export function quantizeCodes(x: Tensor, q: FakeQuantParams, dtype: CodeDType): Tensor {
  checkFloat(x, 'quantizeCodes');
  const layout = layoutOf(x.shape, q, 'quantizeCodes');
  const codes = empty(x.shape, dtype, x.device);
  const c32 = q.granularity === 'separable' && q.colScale ? dense(q.colScale) : null;
  if (codes.numel > 0) kernel('quantizePack', dense(x), dense(q.scale), dense(q.zeroPoint), c32, codes, q.qmin, q.qmax, ...layout);
  return codes;
}

/** (code - z) · s as f32, from i8, u8 or i4 codes. */
export function dequantizeCodes(codes: Tensor, q: Omit<FakeQuantParams, 'qmin' | 'qmax'>): Tensor {
  if (!['i8', 'u8', 'i4'].includes(codes.dtype)) throw new DTypeError(`dequantizeCodes: codes must be i8, u8 or i4, got ${codes.dtype}`);
  const layout = layoutOf(codes.shape, { ...q, qmin: 0, qmax: 1 }, 'dequantizeCodes');
  const c32 = q.granularity === 'separable' && q.colScale ? dense(q.colScale) : null;
  const out = empty(codes.shape, 'f32', codes.device);
  if (out.numel > 0) kernel('dequantize', contiguous(codes), dense(q.scale), dense(q.zeroPoint), c32, out, ...layout);
  return out;
}

/** Packed codes plus the zero point they decode with (shifted by 2^(b-1) when unsigned 4-bit codes go to i4). */
export interface PackedTensor { codes: Tensor; zeroPoint: Tensor; shift: number }

/**
 * Packs x with the smallest code dtype that holds [qmin, qmax]: i4 for ranges of 16 levels or
 * fewer (an unsigned range is shifted down by 8 with the zero point, which leaves (q - z) and so
 * the decoded value unchanged), else i8 or u8.
 */
export function packTensor(x: Tensor, q: FakeQuantParams): PackedTensor {
  const levels = q.qmax - q.qmin + 1;
  if (levels <= 16) {
    const shift = q.qmax > 7 ? 8 : 0;
    const zeroPoint = shift ? narrowTo(dense(q.zeroPoint).sub(shift), 'f32') : dense(q.zeroPoint).clone();
    const codes = quantizeCodes(x, { ...q, zeroPoint, qmin: q.qmin - shift, qmax: q.qmax - shift }, 'i4');
    return { codes, zeroPoint, shift };
  }
  const dtype: CodeDType = q.qmin < 0 ? 'i8' : 'u8';
  return { codes: quantizeCodes(x, q, dtype), zeroPoint: dense(q.zeroPoint).clone(), shift: 0 };
}
