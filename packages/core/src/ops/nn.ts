// Neural-network ops: convolution, normalisation, softmax, attention, resampling, pooling,
// dropout. The heavy ops call native kernels on contiguous fp32 operands (half inputs are
// widened and results narrowed, as everywhere in core); their backwards are native kernels
// too. Attention and pooling are compositions of other ops, so their gradients come free.
import { ArgumentError, ShapeError } from '../errors.js';
import { kernel } from '../backend/index.js';
import { record, isGradEnabled } from '../autograd.js';
import { Tensor, shapeStr, numelOf } from '../tensor.js';
import type { Generator } from '../random.js';
import { empty, emptyUninitialized, normDim, assertFloat, broadcastShapes, expandView } from './util.js';
import { promote, type DType } from '../dtype.js';
import { asF32, narrowTo, gradFor, mul, add, where, affine, ge } from './elementwise.js';
import { contiguous, reshape, transpose } from './shape.js';
import { sum } from './reduce.js';
import { matmul } from './matmul.js';
import { full, rand, tensor } from './creation.js';
import { concat } from './indexing.js';

export type Pair = number | [number, number];
export interface Conv2dOptions { stride?: Pair; padding?: Pair; dilation?: Pair; groups?: number }

const pair = (p: Pair | undefined, dflt: number, what: string, op: string): [number, number] => {
  const v: [number, number] = p === undefined ? [dflt, dflt] : typeof p === 'number' ? [p, p] : p;
  if (!v.every((x) => Number.isInteger(x))) throw new ArgumentError(`${op}: ${what} must be integers, got ${JSON.stringify(p)}`);
  return v;
};

/** Contiguous fp32 version of t (the native NN kernels take dense fp32). */
function dense(t: Tensor): Tensor { return contiguous(asF32(t)); }

// ---- convolution -------------------------------------------------------------------------

/** 2-d convolution over NCHW input with an [out, in/groups, kh, kw] weight, as torch's conv2d. */
export function conv2d(x: Tensor, weight: Tensor, bias?: Tensor | null, opts: Conv2dOptions = {}): Tensor {
  assertFloat(x, 'conv2d'); assertFloat(weight, 'conv2d');
  if (x.ndim !== 4 || weight.ndim !== 4) throw new ShapeError(`conv2d: expected 4-d input and weight, got ${shapeStr(x.shape)} and ${shapeStr(weight.shape)}`);
  const [sH, sW] = pair(opts.stride, 1, 'stride', 'conv2d');
  const [pH, pW] = pair(opts.padding, 0, 'padding', 'conv2d');
  const [dH, dW] = pair(opts.dilation, 1, 'dilation', 'conv2d');
  const groups = opts.groups ?? 1;
  if (sH < 1 || sW < 1 || dH < 1 || dW < 1 || pH < 0 || pW < 0 || !Number.isInteger(groups) || groups < 1) {
    throw new ArgumentError(`conv2d: invalid stride/padding/dilation/groups (${sH},${sW}/${pH},${pW}/${dH},${dW}/${groups})`);
  }
  const [N, C, H, W] = x.shape as [number, number, number, number];
  const [O, Cg, kh, kw] = weight.shape as [number, number, number, number];
  if (C !== Cg * groups || O % groups !== 0) {
    throw new ShapeError(`conv2d: input ${shapeStr(x.shape)} and weight ${shapeStr(weight.shape)} do not agree with groups=${groups}`);
  }
  if (bias && (bias.ndim !== 1 || bias.shape[0] !== O)) throw new ShapeError(`conv2d: bias ${shapeStr(bias.shape)} must be [${O}]`);
  const OH = Math.floor((H + 2 * pH - dH * (kh - 1) - 1) / sH) + 1;
  const OW = Math.floor((W + 2 * pW - dW * (kw - 1) - 1) / sW) + 1;
  if (OH < 1 || OW < 1) throw new ShapeError(`conv2d: kernel ${kh}x${kw} larger than padded input ${shapeStr(x.shape)}`);
  const params = [sH, sW, pH, pW, dH, dW, groups];
  const x32 = dense(x), w32 = dense(weight), b32 = bias ? dense(bias) : null;
  const out = emptyUninitialized([N, O, OH, OW], 'f32', x.device);
  if (out.numel > 0) kernel('conv2dForward', x32, w32, b32, out, ...params);
  const y = narrowTo(out, x.dtype);
  return record(y, 'conv2d', bias ? [x, weight, bias] : [x, weight], (g) => {
    const g32 = dense(g);
    let gx: Tensor | null = null, gw: Tensor | null = null, gb: Tensor | null = null;
    if (x.requiresGrad) {
      const t = empty(x.shape, 'f32', x.device);
      kernel('conv2dBackwardInput', g32, w32, t, ...params);
      gx = narrowTo(t, x.dtype);
    }
    if (weight.requiresGrad) {
      const t = empty(weight.shape, 'f32', x.device);
      kernel('conv2dBackwardWeight', x32, g32, t, ...params);
      gw = narrowTo(t, weight.dtype);
    }
    if (bias?.requiresGrad) gb = gradFor(bias, sum(g32, [0, 2, 3]));
    return bias ? [gx, gw, gb] : [gx, gw];
  });
}

// ---- normalisation -----------------------------------------------------------------------

function checkAffine(p: Tensor | null | undefined, n: number, what: string, op: string): Tensor | null {
  if (!p) return null;
  if (p.numel !== n) throw new ShapeError(`${op}: ${what} has ${p.numel} elements, expected ${n}`);
  return dense(p);
}

/** Group normalisation over [N, C, *] with per-channel affine parameters (torch semantics). */
export function groupNorm(x: Tensor, numGroups: number, weight?: Tensor | null, bias?: Tensor | null, eps = 1e-5): Tensor {
  assertFloat(x, 'groupNorm');
  if (x.ndim < 2) throw new ShapeError(`groupNorm: expected [N, C, ...], got ${shapeStr(x.shape)}`);
  const N = x.shape[0]!, C = x.shape[1]!, S = x.numel / Math.max(1, N * C);
  if (!Number.isInteger(numGroups) || numGroups < 1 || C % numGroups !== 0) {
    throw new ArgumentError(`groupNorm: ${C} channels cannot be split into ${numGroups} groups`);
  }
  const w32 = checkAffine(weight, C, 'weight', 'groupNorm'), b32 = checkAffine(bias, C, 'bias', 'groupNorm');
  const x32 = dense(x);
  const x3 = reshape(x32, [N, C, S]);
  const out = emptyUninitialized([N, C, S], 'f32', x.device);
  const mean = empty([N, numGroups], 'f32', x.device), rstd = empty([N, numGroups], 'f32', x.device);
  if (x.numel > 0) kernel('groupNormForward', x3, w32, b32, out, mean, rstd, numGroups, eps);
  const y = narrowTo(reshape(out, x.shape), x.dtype);
  const inputs = [x, ...(weight ? [weight] : []), ...(bias ? [bias] : [])];
  return record(y, 'groupNorm', inputs, (g) => {
    const gx = empty([N, C, S], 'f32', x.device);
    const gw = weight?.requiresGrad ? empty([C], 'f32', x.device) : null;
    const gb = bias?.requiresGrad ? empty([C], 'f32', x.device) : null;
    kernel('groupNormBackward', x3, reshape(dense(g), [N, C, S]), w32, mean, rstd, gx, gw, gb, numGroups);
    const grads: (Tensor | null)[] = [x.requiresGrad ? narrowTo(reshape(gx, x.shape), x.dtype) : null];
    if (weight) grads.push(gw ? narrowTo(reshape(gw, weight.shape), weight.dtype) : null);
    if (bias) grads.push(gb ? narrowTo(reshape(gb, bias.shape), bias.dtype) : null);
    return grads;
  });
}

/** Layer normalisation over the trailing `normalizedShape` dims. */
export function layerNorm(x: Tensor, normalizedShape: number[], weight?: Tensor | null, bias?: Tensor | null, eps = 1e-5): Tensor {
  assertFloat(x, 'layerNorm');
  const k = normalizedShape.length;
  if (k === 0 || k > x.ndim || normalizedShape.some((d, i) => d !== x.shape[x.ndim - k + i])) {
    throw new ShapeError(`layerNorm: normalized shape ${shapeStr(normalizedShape)} does not end input ${shapeStr(x.shape)}`);
  }
  const D = numelOf(normalizedShape), M = x.numel / Math.max(1, D);
  const w32 = checkAffine(weight, D, 'weight', 'layerNorm'), b32 = checkAffine(bias, D, 'bias', 'layerNorm');
  const x2 = reshape(dense(x), [M, D]);
  const out = emptyUninitialized([M, D], 'f32', x.device);
  const mean = empty([M], 'f32', x.device), rstd = empty([M], 'f32', x.device);
  if (x.numel > 0) kernel('layerNormForward', x2, w32, b32, out, mean, rstd, eps);
  const y = narrowTo(reshape(out, x.shape), x.dtype);
  const inputs = [x, ...(weight ? [weight] : []), ...(bias ? [bias] : [])];
  return record(y, 'layerNorm', inputs, (g) => {
    const gx = empty([M, D], 'f32', x.device);
    const gw = weight?.requiresGrad ? empty([D], 'f32', x.device) : null;
    const gb = bias?.requiresGrad ? empty([D], 'f32', x.device) : null;
    kernel('layerNormBackward', x2, reshape(dense(g), [M, D]), w32, mean, rstd, gx, gw, gb);
    const grads: (Tensor | null)[] = [x.requiresGrad ? narrowTo(reshape(gx, x.shape), x.dtype) : null];
    if (weight) grads.push(gw ? narrowTo(reshape(gw, weight.shape), weight.dtype) : null);
    if (bias) grads.push(gb ? narrowTo(reshape(gb, bias.shape), bias.dtype) : null);
    return grads;
  });
}

// ---- softmax -----------------------------------------------------------------------------

function softmaxImpl(x: Tensor, dim: number, log: boolean): Tensor {
  const op = log ? 'logSoftmax' : 'softmax';
  assertFloat(x, op);
  if (x.ndim === 0) throw new ShapeError(`${op}: needs at least one dimension`);
  const d = normDim(dim, x.ndim, op);
  const last = x.ndim - 1;
  // The kernel works on rows: bring `dim` last, run, and hand back a view in the original order.
  const moved = d === last ? x : transpose(x, d, last);
  const xm = dense(moved);
  const D = xm.shape[last]!, M = xm.numel / Math.max(1, D);
  const out = emptyUninitialized(xm.shape, 'f32', x.device);
  if (xm.numel > 0) kernel('softmaxForward', reshape(xm, [M, D]), reshape(out, [M, D]), log);
  const yMoved = narrowTo(out, x.dtype);
  const y = d === last ? yMoved : transpose(yMoved, d, last);
  return record(y, op, [x], (g) => {
    const gm = dense(d === last ? g : transpose(g, d, last));
    const gx = empty(xm.shape, 'f32', x.device);
    kernel('softmaxBackward', reshape(asF32(yMoved), [M, D]), reshape(gm, [M, D]), reshape(gx, [M, D]), log);
    const r = narrowTo(gx, x.dtype);
    return [d === last ? r : transpose(r, d, last)];
  });
}

export function softmax(x: Tensor, dim: number): Tensor { return softmaxImpl(x, dim, false); }
export function logSoftmax(x: Tensor, dim: number): Tensor { return softmaxImpl(x, dim, true); }

// ---- attention ---------------------------------------------------------------------------

export interface AttentionOptions {
  /** Additive float mask, or a u8 mask where 0 means "masked out"; broadcast to [.., Lq, Lk]. */
  mask?: Tensor | null;
  /** Defaults to 1 / sqrt(head dim). */
  scale?: number;
  isCausal?: boolean;
}

/** Scores above this many bytes are computed in query blocks when no gradient is needed. */
const ATTENTION_BLOCK_BYTES = 64 * 1024 * 1024;

function attentionCore(q: Tensor, k: Tensor, v: Tensor, scale: number, mask: Tensor | null): Tensor {
  let s = matmul(q, transpose(k, -2, -1));
  s = affine(s, scale, 0);
  if (mask) s = mask.dtype === 'u8' ? where(mask, s, full([], -Infinity, { device: s.device })) : add(s, mask);
  return matmul(softmax(s, -1), v);
}

const FUSED_DTYPES: readonly DType[] = ['f32', 'f16', 'bf16'];

/**
 * Inference path: the native flash-style kernel (native/src/cpu/attention.cpp; on CUDA
 * native/src/cuda/attention.cu), which never materialises the [Lq, Lk] scores. Takes f32/f16/bf16 operands of any strides (batch dims
 * broadcast through stride-0 views) and an absent, additive float or u8 mask (u8 becomes an
 * additive 0 / -inf mask first). Returns null when the case is not one it covers, and the
 * composite path runs instead. Rows with every key masked give 0 here (the composite gives NaN).
 */
function fusedAttention(q: Tensor, k: Tensor, v: Tensor, scale: number, mask: Tensor | null): Tensor | null {
  const device = q.device;
  if (k.device !== device || v.device !== device || (mask && mask.device !== device)) return null;
  // CUDA: the flash-attention kernel (native/src/cuda/attention.cu) reads f16/bf16/f32 operands as
  // they are and writes the output dtype itself; it pads head dims up to 160 and refuses larger.
  const native = device === 'cuda';
  if (device !== 'cpu' && !native) return null;
  if (![q, k, v].every((t) => FUSED_DTYPES.includes(t.dtype))) return null;
  if (mask && mask.dtype !== 'u8' && !FUSED_DTYPES.includes(mask.dtype)) return null;
  const nd = (t: Tensor, i: number) => t.shape[t.ndim - i]!;
  const Lq = nd(q, 2), D = nd(q, 1), Lk = nd(k, 2), Dv = nd(v, 1);
  if (Lq === 0 || D === 0 || Lk === 0 || Dv === 0) return null;
  if (native && (D > 160 || Dv > 160)) return null;
  let batch: number[];
  let maskFull: number[] | null = null;
  try {
    batch = broadcastShapes(broadcastShapes(q.shape.slice(0, -2), k.shape.slice(0, -2), 'attention'), v.shape.slice(0, -2), 'attention');
    if (mask) {
      maskFull = broadcastShapes(mask.shape, [Lq, Lk], 'attention');
      if (maskFull.length < 2 || maskFull[maskFull.length - 2] !== Lq || maskFull[maskFull.length - 1] !== Lk) return null;
      batch = broadcastShapes(batch, maskFull.slice(0, -2), 'attention');
    }
  } catch {
    return null;  // the composite path reports the shape error
  }
  // The dtype the composite would give: matmul, mask add and matmul again each promote.
  let outDtype = promote(q.dtype, k.dtype);
  if (mask && mask.dtype !== 'u8') outDtype = promote(outDtype, mask.dtype);
  outDtype = promote(outDtype, v.dtype);

  const temps: Tensor[] = [];
  const f32 = (t: Tensor) => { if (native) return t; const w = asF32(t); if (w !== t) temps.push(w); return w; };
  try {
    const q32 = expandView(f32(q), [...batch, Lq, D]);
    const k32 = expandView(f32(k), [...batch, Lk, D]);
    const v32 = expandView(f32(v), [...batch, Lk, Dv]);
    let m32: Tensor | null = null;
    if (mask) {
      let additive = mask;
      if (mask.dtype === 'u8') {
        const zero = full([], 0, { device }), negInf = full([], -Infinity, { device });
        additive = where(mask, zero, negInf);
        temps.push(zero, negInf, additive);
      }
      m32 = expandView(f32(additive), [...batch, Lq, Lk]);
    }
    const out = empty([...batch, Lq, Dv], native ? outDtype : 'f32', device);
    kernel('attentionForward', q32, k32, v32, m32, out, scale);
    return native ? out : narrowTo(out, outDtype);
  } finally {
    for (const t of temps) t.dispose();
  }
}

/** softmax(q k^T * scale + mask) v over [..., L, D] operands (torch's scaled_dot_product_attention). */
export function scaledDotProductAttention(q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions = {}): Tensor {
  if (q.ndim < 2 || k.ndim < 2 || v.ndim < 2) throw new ShapeError('scaledDotProductAttention: operands must be at least 2-d');
  const D = q.shape[q.ndim - 1]!, Lq = q.shape[q.ndim - 2]!, Lk = k.shape[k.ndim - 2]!;
  if (k.shape[k.ndim - 1] !== D || v.shape[v.ndim - 2] !== Lk) {
    throw new ShapeError(`scaledDotProductAttention: q ${shapeStr(q.shape)}, k ${shapeStr(k.shape)}, v ${shapeStr(v.shape)} do not agree`);
  }
  const scale = opts.scale ?? 1 / Math.sqrt(D);
  let mask = opts.mask ?? null;
  if (opts.isCausal) {
    if (mask) throw new ArgumentError('scaledDotProductAttention: give either mask or isCausal, not both');
    const m = new Uint8Array(Lq * Lk);
    for (let i = 0; i < Lq; ++i) for (let j = 0; j <= Math.min(Lk - 1, i + Lk - Lq); ++j) m[i * Lk + j] = 1;
    mask = tensor(m, { dtype: 'u8', shape: [Lq, Lk], device: q.device });
  }
  const batch = q.numel / Math.max(1, Lq * D);
  const needsGrad = isGradEnabled() && (q.requiresGrad || k.requiresGrad || v.requiresGrad || !!mask?.requiresGrad);
  if (!needsGrad) {
    const fused = fusedAttention(q, k, v, scale, mask);
    if (fused) {
      if (opts.isCausal) mask?.dispose();
      return fused;
    }
  }
  const scoreBytes = batch * Lq * Lk * 4;
  if (needsGrad || scoreBytes <= ATTENTION_BLOCK_BYTES || Lq < 2) return attentionCore(q, k, v, scale, mask);
  // Inference on long sequences: bound the score matrix by walking blocks of queries.
  const rows = Math.max(1, Math.floor(ATTENTION_BLOCK_BYTES / (batch * Lk * 4)));
  const parts: Tensor[] = [];
  const qd = q.ndim - 2;
  for (let r0 = 0; r0 < Lq; r0 += rows) {
    const r1 = Math.min(Lq, r0 + rows);
    const qb = q.slice(qd, r0, r1);
    let mb = mask;
    if (mask && mask.ndim >= 2 && mask.shape[mask.ndim - 2] === Lq) mb = mask.slice(mask.ndim - 2, r0, r1);
    parts.push(attentionCore(qb, k, v, scale, mb));
  }
  const out = concat(parts, qd);
  for (const p of parts) p.dispose();
  return out;
}

// ---- resampling and pooling --------------------------------------------------------------

export interface InterpolateOptions { scaleFactor?: number | [number, number]; size?: [number, number]; mode?: 'nearest' | 'bilinear'; alignCorners?: boolean }

/** Nearest or bilinear resampling of NCHW input, with torch's coordinate conventions. */
export function interpolate(x: Tensor, opts: InterpolateOptions): Tensor {
  assertFloat(x, 'interpolate');
  if (x.ndim !== 4) throw new ShapeError(`interpolate: expected NCHW input, got ${shapeStr(x.shape)}`);
  const mode = opts.mode ?? 'nearest';
  if (mode !== 'nearest' && mode !== 'bilinear') throw new ArgumentError(`interpolate: unknown mode '${String(mode)}'`);
  const [N, C, H, W] = x.shape as [number, number, number, number];
  let OH: number, OW: number, scaleH: number, scaleW: number;
  if (opts.size) {
    [OH, OW] = opts.size;
    scaleH = H / OH; scaleW = W / OW;
  } else if (opts.scaleFactor !== undefined) {
    const [fh, fw] = typeof opts.scaleFactor === 'number' ? [opts.scaleFactor, opts.scaleFactor] : opts.scaleFactor;
    if (!(fh > 0 && fw > 0)) throw new ArgumentError(`interpolate: scale factor must be positive, got ${JSON.stringify(opts.scaleFactor)}`);
    OH = Math.floor(H * fh); OW = Math.floor(W * fw);
    scaleH = 1 / fh; scaleW = 1 / fw;
  } else {
    throw new ArgumentError('interpolate: give size or scaleFactor');
  }
  if (!Number.isInteger(OH) || !Number.isInteger(OW) || OH < 1 || OW < 1) throw new ArgumentError(`interpolate: invalid output size ${OH}x${OW}`);
  const alignCorners = mode === 'bilinear' && (opts.alignCorners ?? false);
  // With aligned corners the end pixels map onto each other, whatever the scale factor says.
  if (alignCorners) { scaleH = OH > 1 ? (H - 1) / (OH - 1) : 0; scaleW = OW > 1 ? (W - 1) / (OW - 1) : 0; }
  const modeCode = mode === 'nearest' ? 0 : 1;
  const P = N * C;
  const x3 = reshape(dense(x), [P, H, W]);
  const out = empty([P, OH, OW], 'f32', x.device);
  if (P > 0) kernel('upsample', modeCode, x3, out, scaleH, scaleW, alignCorners, false);
  const y = narrowTo(reshape(out, [N, C, OH, OW]), x.dtype);
  return record(y, 'interpolate', [x], (g) => {
    const gx = full([P, H, W], 0, { device: x.device });
    kernel('upsample', modeCode, reshape(dense(g), [P, OH, OW]), gx, scaleH, scaleW, alignCorners, true);
    return [narrowTo(reshape(gx, x.shape), x.dtype)];
  });
}

/** Average pooling (no padding, floor mode): a depthwise convolution with a constant kernel. */
export function avgPool2d(x: Tensor, kernelSize: Pair, stride?: Pair): Tensor {
  if (x.ndim !== 4) throw new ShapeError(`avgPool2d: expected NCHW input, got ${shapeStr(x.shape)}`);
  const [kh, kw] = pair(kernelSize, 1, 'kernel size', 'avgPool2d');
  const s = pair(stride ?? [kh, kw], 1, 'stride', 'avgPool2d');
  if (kh < 1 || kw < 1) throw new ArgumentError(`avgPool2d: kernel size must be positive, got ${kh}x${kw}`);
  const C = x.shape[1]!;
  const w = full([C, 1, kh, kw], 1 / (kh * kw), { device: x.device, dtype: x.dtype });
  return conv2d(x, w, null, { stride: s, groups: C });
}

/** Inverted dropout: zeroes elements with probability p and scales the rest by 1/(1-p). */
export function dropout(x: Tensor, p: number, training: boolean, generator?: Generator): Tensor {
  if (!(p >= 0 && p <= 1)) throw new ArgumentError(`dropout: p must be in [0, 1], got ${p}`);
  if (!training || p === 0) return x;
  if (p === 1) return mul(x, 0);
  const u = rand(x.shape, { device: x.device, ...(generator ? { generator } : {}) });
  const keepMask = ge(u, p);
  u.dispose();
  const scaled = affine(x, 1 / (1 - p), 0);
  return where(keepMask, scaled, full([], 0, { device: x.device, dtype: x.dtype }));
}
