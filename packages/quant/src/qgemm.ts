// Real low-bit execution on the CPU: int8 x int8 -> int32 GEMM with an f32 epilogue (W8A8, W4A8,
// W4A4) and a quantized conv2d, on the native kernels of native/src/cpu/qgemm*.cpp.
// Weights are packed once (packWeights) into the micro-kernel's panel order, with their per-row
// code sums for the zero-point terms; activations are quantized per call (a static per-tensor
// scale or dynamic per-token scales). Scales, zero points, bias and a low-rank branch are all
// applied in the epilogue; an input-channel factor (smoothing, separable scales) varies along the
// reduction, so it is divided into the activations before they are quantized instead, and the
// weights must have been quantized with it multiplied in.
// Inference only: these ops record no autograd graph, and refuse inputs that require grad while
// grad mode is on (wrap the call in noGrad).
// CUDA: the same kernel names run on the device of their first tensor (native/src/cuda/qgemm.cu,
// docs/cuda.md), so the ops only choose where buffers live: a packing is made on the codes' device
// with that device's packed size (the CUDA layout differs from the CPU's, so a packing is only
// valid where it was made), inputs stay in their own f32/f16/bf16 dtype and outputs take it. The
// CPU path is unchanged (f32 out). CUDA has no direct quantized conv2d kernel: there quantConv2d
// quantizes the input once into channels-last codes, pads them with the zero-point code, gathers
// the im2row matrix of codes (one strided copy, int8: a quarter of a float im2col) and runs the
// integer GEMM on it; the weights are packed with the reduction in the same (kh, kw, c) order.
import { ArgumentError, DTypeError, DeviceError, QdmError, ShapeError, Tensor, asF32, castRaw, contiguous, empty, emptyUninitialized, fromNative, getBackend, isGradEnabled, kernel, matmul, moveRaw, pad, permute, shapeStr, slice, tidy, type Device } from '@qdm/core';

/** Weights packed for the low-bit GEMM: n output channels (rows) by k reduction codes. */
export interface PackedWeights {
  /** Packed panels (i8 bytes; layout in native/include/qdm/qgemm.h). */
  packed: Tensor;
  /** i32 [n]: sum of each row's codes (after 8-bit codes are clamped to [-127, 127]). */
  rowSums: Tensor;
  n: number;
  k: number;
  bits: 8 | 4;
  /** f32 [n] per output channel. */
  scale: Tensor;
  /** f32 [n] integer-valued weight zero points, when the weights are asymmetric. */
  zeroPoint?: Tensor;
  /**
   * Set when packed from 4-d conv codes [O, C, kh, kw]: the reduction runs in (kh, kw, c) order.
   * im2row: packed as the 2-d matrix [O, kh*kw*C] for quantConv2d's im2row path (always off the
   * CPU; packConvWeightsIm2row on the CPU) instead of the CPU's direct conv kernel.
   */
  conv?: { c: number; kh: number; kw: number; im2row?: boolean };
}

/** Static per-tensor activation quantization: code = clamp(rne(x / scale) + zeroPoint, qmin, qmax). */
export interface ActQuant { scale: number; zeroPoint: number; qmin: number; qmax: number }
/** Dynamic symmetric per-token quantization with codes in [-qmax, qmax] ('dynamic' is qmax 127; 7 for A4). */
export interface DynamicActQuant { dynamic: true; qmax: number }
export type ActSpec = ActQuant | 'dynamic' | DynamicActQuant;

const f32 = (t: Tensor) => contiguous(asF32(t));
/** Scales and zero points must be f32 on every device (asF32 keeps halves on a native-half device). */
const realF32 = (t: Tensor) => contiguous(t.dtype === 'f32' ? t : castRaw(t, 'f32'));
/** The float input as the kernel takes it: widened to f32 on the CPU, its own dtype on CUDA. */
const floatIn = (x: Tensor) => (x.device === 'cpu' ? f32(x) : contiguous(x));

/** qgemmPackedBytes on `device`: it takes no tensor, so kernel() alone would always ask the CPU. */
function packedBytes(device: Device, n: number, k: number, bits: number): number {
  if (device === 'cpu') return kernel('qgemmPackedBytes', n, k, bits) as number;
  try {
    return getBackend(device).run('qgemmPackedBytes', [n, k, bits]) as number;
  } catch (err) {
    throw err instanceof QdmError ? err : fromNative(err, 'qgemmPackedBytes');
  }
}

function sameDevice(op: string, device: Device, t: Tensor | null | undefined, what: string): void {
  if (t && t.device !== device)
    throw new DeviceError('QDM_DEVICE_MISMATCH', `${op}: ${what} is on ${t.device} but the input is on ${device}; move all operands to one device${what.startsWith('packed') ? ' (a packing is only valid on the device that made it: pack the codes there)' : ''}`);
}

function checkFloat(x: Tensor, op: string): void {
  if (!['f32', 'f16', 'bf16'].includes(x.dtype)) throw new DTypeError(`${op}: expected a floating-point input, got ${x.dtype}`);
  if (x.device !== 'cpu' && x.device !== 'cuda') throw new ArgumentError(`${op}: the low-bit kernels run on the CPU or CUDA; got a ${x.device as string} tensor`);
  if (x.requiresGrad && isGradEnabled()) throw new ArgumentError(`${op}: inference only (no gradients through integer kernels); run it under noGrad`);
}

function vec(t: Tensor | undefined, n: number, what: string, op: string, device: Device = 'cpu'): Tensor | null {
  if (!t) return null;
  if (t.numel !== n) throw new ShapeError(`${op}: ${what} ${shapeStr(t.shape)} must have ${n} entries`);
  sameDevice(op, device, t, what);
  return device === 'cpu' ? f32(t) : realF32(t);
}

/**
 * Packs weight codes once: i8 [n, k] (8 bits, -128 is clamped to -127), i4 [n, k] (4 bits), or
 * 4-d conv codes [O, C, kh, kw] (i8 or i4). scale: f32 [n] per output channel.
 */
export function packWeights(codes: Tensor, scale: Tensor, zeroPoint?: Tensor): PackedWeights {
  const op = 'packWeights';
  if (codes.dtype !== 'i8' && codes.dtype !== 'i4') throw new DTypeError(`${op}: weight codes must be i8 or i4, got ${codes.dtype}`);
  if (codes.ndim !== 2 && codes.ndim !== 4) throw new ShapeError(`${op}: codes must be [n, k] or [O, C, kh, kw], got ${shapeStr(codes.shape)}`);
  const bits = codes.dtype === 'i8' ? 8 : 4;
  const n = codes.shape[0]!, k = codes.numel / Math.max(n, 1);
  if (n < 1 || k < 1) throw new ShapeError(`${op}: empty weight ${shapeStr(codes.shape)}`);
  const device = codes.device;
  if (device !== 'cpu' && codes.ndim === 4) return packConvWeightsIm2row(codes, scale, zeroPoint);
  const sc = vec(scale, n, 'scale', op, device)!.clone();
  const zp = zeroPoint ? vec(zeroPoint, n, 'zeroPoint', op, device)!.clone() : undefined;
  const bytes = packedBytes(device, n, k, bits);
  const packed = empty([bytes], 'i8', device), rowSums = empty([n], 'i32', device);
  kernel('qgemmPackWeights', contiguous(codes), packed, rowSums, bits);
  const conv = codes.ndim === 4 ? { c: codes.shape[1]!, kh: codes.shape[2]!, kw: codes.shape[3]! } : undefined;
  return { packed, rowSums, n, k, bits, scale: sc, ...(zp ? { zeroPoint: zp } : {}), ...(conv ? { conv } : {}) };
}

/**
 * Packs 4-d conv codes [O, C, kh, kw] for quantConv2d's im2row path: the codes are reordered to
 * [O, kh, kw, C] (on the CPU: i4 has no device copy kernel; this runs once per layer) and packed as
 * a 2-d weight on the codes' device. packWeights does this for conv codes off the CPU.
 */
export function packConvWeightsIm2row(codes: Tensor, scale: Tensor, zeroPoint?: Tensor): PackedWeights {
  const op = 'packConvWeightsIm2row';
  if (codes.ndim !== 4) throw new ShapeError(`${op}: expected conv codes [O, C, kh, kw], got ${shapeStr(codes.shape)}`);
  if (codes.dtype !== 'i8' && codes.dtype !== 'i4') throw new DTypeError(`${op}: weight codes must be i8 or i4, got ${codes.dtype}`);
  const [O, C, kh, kw] = codes.shape as [number, number, number, number];
  const device = codes.device;
  const host = moveRaw(contiguous(codes), 'cpu');
  const bytes8 = codes.dtype === 'i4' ? castRaw(host, 'i8') : host;
  let rows = contiguous(permute(bytes8, [0, 2, 3, 1])).reshape([O, kh * kw * C]);
  if (codes.dtype === 'i4') rows = castRaw(rows, 'i4');
  const w = packWeights(device === 'cpu' ? rows : moveRaw(rows, device), scale, zeroPoint);
  return { ...w, conv: { c: C, kh, kw, im2row: true } };
}

function checkAct(act: ActSpec, op: string): { dynamic: boolean; scale: number; zero: number; qmin: number; qmax: number } {
  if (act === 'dynamic') return { dynamic: true, scale: 1, zero: 0, qmin: -127, qmax: 127 };
  if ('dynamic' in act) {
    if (!Number.isInteger(act.qmax) || act.qmax < 1 || act.qmax > 127) throw new ArgumentError(`${op}: dynamic qmax must be an integer in [1, 127], got ${act.qmax}`);
    return { dynamic: true, scale: 1, zero: 0, qmin: -act.qmax, qmax: act.qmax };
  }
  const { scale, zeroPoint, qmin, qmax } = act;
  if (!(scale > 0) || !Number.isFinite(scale)) throw new ArgumentError(`${op}: activation scale must be positive, got ${scale}`);
  if (![zeroPoint, qmin, qmax].every(Number.isInteger) || qmin >= qmax) throw new ArgumentError(`${op}: bad activation range [${qmin}, ${qmax}] / zero point ${zeroPoint}`);
  const shift = qmax > 127 ? 128 : 0;
  if (qmin - shift < -128 || qmax - shift > 127) throw new ArgumentError(`${op}: activation range [${qmin}, ${qmax}] does not fit 8 bits`);
  return { dynamic: false, scale, zero: zeroPoint, qmin, qmax };
}

/**
 * Quantizes activations x [..., K] to i8 codes of x's shape with per-row scale and zero point
 * (f32 [rows]). An unsigned static range (qmax > 127) is stored shifted by -128, zero point too.
 * colFactor [K] is divided into x first: code = rne(x / fp32(scale * colFactor[k])), as fakeQuant's
 * separable granularity.
 */
export function quantizeActivations(x: Tensor, act: ActSpec, colFactor?: Tensor): { codes: Tensor; scale: Tensor; zeroPoint: Tensor } {
  const op = 'quantizeActivations';
  checkFloat(x, op);
  if (x.ndim < 1) throw new ShapeError(`${op}: expected at least 1-d input`);
  const a = checkAct(act, op);
  const K = x.shape[x.ndim - 1]!, T = x.numel / Math.max(K, 1);
  const col = vec(colFactor, K, 'colFactor', op, x.device);
  const codes = emptyUninitialized(x.shape, 'i8', x.device), scale = empty([T], 'f32', x.device), zeroPoint = empty([T], 'f32', x.device);
  if (x.numel > 0) kernel('qgemmQuantizeActs', floatIn(x).reshape([T, K]), codes.reshape([T, K]), scale, zeroPoint, a.dynamic, a.scale, a.zero, a.qmin, a.qmax, col);
  return { codes, scale, zeroPoint };
}

/**
 * y = dequant(quant(x)) @ dequant(W)^T (+ bias, + low-rank (x A) B), computed in integers.
 * [..., n]: f32 on the CPU, x's dtype on CUDA (w must have been packed on x's device).
 */
export function quantLinear(x: Tensor, w: PackedWeights, act: ActSpec, opts: { bias?: Tensor; colFactor?: Tensor; lowRank?: { xa?: Tensor; a?: Tensor; b: Tensor } } = {}): Tensor {
  const op = 'quantLinear';
  checkFloat(x, op);
  const K = x.shape[x.ndim - 1];
  if (K !== w.k) throw new ShapeError(`${op}: input ${shapeStr(x.shape)} has ${K} features, the weights take ${w.k}`);
  if (w.conv && w.conv.kh * w.conv.kw !== 1) throw new ArgumentError(`${op}: these weights were packed from ${w.conv.kh}x${w.conv.kw} conv codes (reduction reordered); use quantConv2d`);
  if (w.conv?.im2row && w.conv.kh * w.conv.kw === 1 && K !== w.conv.c) throw new ShapeError(`${op}: input ${shapeStr(x.shape)} has ${K} features, the weights take ${w.conv.c}`);
  const device = x.device;
  sameDevice(op, device, w.packed, 'packed weights');
  sameDevice(op, device, w.scale, 'the weight scale');
  const T = x.numel / K;
  // The codes and every temporary are freed here rather than at the caller's scope end: a U-Net
  // forward outside tidy() would otherwise hold one code tensor per layer until collected.
  return tidy(() => {
    const bias = vec(opts.bias, w.n, 'bias', op, device);
    let xa: Tensor | null = null, b: Tensor | null = null;
    if (opts.lowRank) {
      const lr = opts.lowRank;
      b = f32(lr.b);
      if (b.ndim !== 2 || b.shape[1] !== w.n) throw new ShapeError(`${op}: low-rank b ${shapeStr(lr.b.shape)} must be [r, ${w.n}]`);
      if (lr.xa) xa = f32(lr.xa).reshape([-1, lr.xa.shape[lr.xa.ndim - 1]!]);
      else if (lr.a) xa = f32(matmul(f32(x).reshape([T, K]), f32(lr.a)));
      else throw new ArgumentError(`${op}: lowRank needs xa [tokens, r] or a [k, r]`);
      if (xa.shape[0] !== T || xa.shape[1] !== b.shape[0]) throw new ShapeError(`${op}: low-rank xa ${shapeStr(xa.shape)} must be [${T}, ${b.shape[0]}]`);
    }
    const out = emptyUninitialized([T, w.n], device === 'cpu' ? 'f32' : x.dtype, device);
    if (T > 0 && device === 'cpu') {
      // One pass: the CPU GEMM quantizes each row as it packs it (no code matrix).
      const a = checkAct(act, op), col = vec(opts.colFactor, K, 'colFactor', op, device);
      const scale = empty([T], 'f32', device), zeroPoint = empty([T], 'f32', device);
      kernel('qgemmLinearQuantizing', floatIn(x).reshape([T, K]), scale, zeroPoint, a.dynamic, a.scale, a.zero, a.qmin, a.qmax, col,
        w.packed, w.rowSums, w.scale, w.zeroPoint ?? null, bias, out, w.bits, xa, b);
    } else if (T > 0) {
      const q = quantizeActivations(x, act, opts.colFactor);
      kernel('qgemmLinear', q.codes.reshape([T, K]), q.scale, q.zeroPoint, w.packed, w.rowSums, w.scale, w.zeroPoint ?? null, bias, out, w.bits, xa, b);
    }
    return out.reshape([...x.shape.slice(0, -1), w.n]);
  });
}

function pair(v: number | [number, number] | undefined, dflt: number, what: string): [number, number] {
  const p: [number, number] = v === undefined ? [dflt, dflt] : typeof v === 'number' ? [v, v] : v;
  if (!p.every(Number.isInteger)) throw new ArgumentError(`quantConv2d: ${what} must be integers, got ${String(v)}`);
  return p;
}

/**
 * 2-d convolution of x (NCHW) with packed [O, C, kh, kw] weights: the input is quantized once
 * (static per tensor; padding is the zero-point code, since a float 0 is the code z), im2row runs
 * on the codes, and the integer GEMM writes NCHW. colFactor: [C] per input channel. CPU: f32 out
 * from the direct conv kernel; CUDA (and CPU weights from packConvWeightsIm2row): im2rowConv2d,
 * output in x's dtype on CUDA.
 */
export function quantConv2d(x: Tensor, w: PackedWeights, kernelSize: [number, number], act: ActQuant,
  opts: { bias?: Tensor; colFactor?: Tensor; stride?: number | [number, number]; padding?: number | [number, number]; dilation?: number | [number, number]; groups?: number } = {}): Tensor {
  const op = 'quantConv2d';
  checkFloat(x, op);
  if (x.ndim !== 4) throw new ShapeError(`${op}: expected NCHW input, got ${shapeStr(x.shape)}`);
  if ((opts.groups ?? 1) !== 1) throw new QdmError('QDM_UNSUPPORTED', `${op}: groups = ${opts.groups} is not supported (groups = 1 only)`);
  if (act === ('dynamic' as unknown) || 'dynamic' in act) throw new ArgumentError(`${op}: needs a static per-tensor activation quantizer`);
  const a = checkAct(act, op);
  sameDevice(op, x.device, w.packed, 'packed weights');
  const [kh, kw] = kernelSize;
  const [N, C, H, W] = x.shape as [number, number, number, number];
  if (!Number.isInteger(kh) || !Number.isInteger(kw) || kh < 1 || kw < 1) throw new ArgumentError(`${op}: bad kernel size ${String(kernelSize)}`);
  if (C * kh * kw !== w.k) throw new ShapeError(`${op}: input channels ${C} x ${kh}x${kw} = ${C * kh * kw}, the weights take ${w.k}`);
  if (kh * kw > 1 && !(w.conv && w.conv.kh === kh && w.conv.kw === kw && w.conv.c === C))
    throw new ArgumentError(`${op}: pack the 4-d weight codes [O, ${C}, ${kh}, ${kw}] with packWeights (the reduction order differs from a 2-d [O, C*kh*kw] packing)`);
  if (x.device !== 'cpu' && kh * kw > 1 && !w.conv?.im2row)
    throw new ArgumentError(`${op}: these weights were packed for the CPU's direct conv kernel; pack the codes on ${x.device}`);
  const [sH, sW] = pair(opts.stride, 1, 'stride'), [pH, pW] = pair(opts.padding, 0, 'padding'), [dH, dW] = pair(opts.dilation, 1, 'dilation');
  if (sH < 1 || sW < 1 || dH < 1 || dW < 1 || pH < 0 || pW < 0) throw new ArgumentError(`${op}: invalid stride/padding/dilation`);
  const OH = Math.floor((H + 2 * pH - dH * (kh - 1) - 1) / sH) + 1, OW = Math.floor((W + 2 * pW - dW * (kw - 1) - 1) / sW) + 1;
  if (OH < 1 || OW < 1) throw new ShapeError(`${op}: input ${shapeStr(x.shape)} is smaller than the ${kh}x${kw} kernel`);
  if (x.device !== 'cpu' || w.conv?.im2row) return im2rowConv2d(x, w, a, { kh, kw, sH, sW, pH, pW, dH, dW, OH, OW }, opts);
  const out = emptyUninitialized([N, w.n, OH, OW], 'f32', 'cpu');
  const bias = vec(opts.bias, w.n, 'bias', op), col = vec(opts.colFactor, C, 'colFactor', op);
  if (N > 0) kernel('qgemmConv2d', f32(x), w.packed, w.rowSums, w.scale, w.zeroPoint ?? null, bias, out, w.bits, kh, kw, sH, sW, pH, pW, dH, dW, a.scale, a.zero, a.qmin, a.qmax, col);
  return out;
}

/**
 * quantConv2d as the integer GEMM over an im2row matrix of codes (the path off the CPU, and on the
 * CPU for weights from packConvWeightsIm2row): the NHWC input is quantized once (static per-tensor
 * codes, colFactor per channel), padded with the stored zero-point code (a float 0 is the code z),
 * and the [N*OH*OW, kh*kw*C] window matrix is one strided copy of those codes; a 1x1 convolution
 * with stride 1 and no padding uses the codes as they are.
 */
function im2rowConv2d(x: Tensor, w: PackedWeights, a: ReturnType<typeof checkAct>,
  g: { kh: number; kw: number; sH: number; sW: number; pH: number; pW: number; dH: number; dW: number; OH: number; OW: number },
  opts: { bias?: Tensor; colFactor?: Tensor }): Tensor {
  const op = 'quantConv2d';
  const [N, C] = x.shape as [number, number, number, number];
  const device = x.device;
  const bias = vec(opts.bias, w.n, 'bias', op, device);
  const out = emptyUninitialized([N, g.OH, g.OW, w.n], device === 'cpu' ? 'f32' : x.dtype, device);
  if (N === 0) return contiguous(permute(out, [0, 3, 1, 2]));
  // The codes, the padded codes and the window matrix die here (see quantLinear).
  return tidy(() => {
    const nhwc = contiguous(permute(floatIn(x), [0, 2, 3, 1]));
    const q = quantizeActivations(nhwc, { scale: a.scale, zeroPoint: a.zero, qmin: a.qmin, qmax: a.qmax }, opts.colFactor);
    // Codes of an unsigned range are stored shifted by -128, the zero point with them.
    const zStored = a.zero - (a.qmax > 127 ? 128 : 0);
    let cols = q.codes;
    if (g.kh * g.kw > 1 || g.pH > 0 || g.pW > 0 || g.sH > 1 || g.sW > 1) {
      const padded = g.pH > 0 || g.pW > 0 ? contiguous(pad(q.codes, [0, 0, g.pW, g.pW, g.pH, g.pH], { value: zStored })) : q.codes;
      const [, Hp, Wp] = padded.shape as [number, number, number, number];
      const window = new Tensor(padded.storage, [N, g.OH, g.OW, g.kh, g.kw, C],
        [Hp * Wp * C, g.sH * Wp * C, g.sW * C, g.dH * Wp * C, g.dW * C, 1], padded.offset);
      cols = contiguous(window);
    }
    const P = N * g.OH * g.OW;
    kernel('qgemmLinear', cols.reshape([P, g.kh * g.kw * C]), contiguous(slice(q.scale, 0, 0, 1)), contiguous(slice(q.zeroPoint, 0, 0, 1)),
      w.packed, w.rowSums, w.scale, w.zeroPoint ?? null, bias, out.reshape([P, w.n]), w.bits, null, null);
    return contiguous(permute(out, [0, 3, 1, 2]));
  });
}

/** The micro-kernel in use and the ones this CPU can run. */
export function qgemmKernelInfo(): { name: string; mr: number; nr: number; available: string[] } {
  return kernel('qgemmKernelInfo') as { name: string; mr: number; nr: number; available: string[] };
}

/**
 * CUDA W8 GEMM kernel: 'mma' (mma.sync, the default) or 'wgmma' (Hopper sm_90a, opt-in: it has not
 * yet been validated on a GPU). 'auto' takes wgmma only on an sm_90 device with QDM_QGEMM_WGMMA=1;
 * 'wgmma' elsewhere throws QDM_UNSUPPORTED. Without an argument only reports. Returns the kernel in
 * effect; process-wide. W4 weights always take mma.sync.
 */
export function qgemmCudaPath(path?: 'auto' | 'mma' | 'wgmma'): 'mma' | 'wgmma' {
  const cuda = getBackend('cuda');
  try {
    return cuda.run('qgemmCudaPath', path === undefined ? [] : [path]) as 'mma' | 'wgmma';
  } catch (err) {
    throw fromNative(err, 'qgemmCudaPath');
  }
}

/** Tests and benchmarks: pin 'avx512-vnni' | 'avx2' | 'scalar', or 'auto'. False when unavailable here. */
export function forceQgemmKernel(name: 'auto' | 'avx512-vnni' | 'avx2' | 'scalar'): boolean {
  return kernel('forceQgemmKernel', name) as boolean;
}
