// Integer execution of fake-quant layers: toIntegerExecution(model) computes each eligible layer's
// weight codes once, packs them for the low-bit GEMM (qgemm.ts) and switches the layer's forward
// to quantLinear / quantConv2d. The fake-quant layer stays in place (weights, quantizers, state
// dict untouched), so fromIntegerExecution() simply switches back, e.g. for fine-tuning.
//
// Exactness: the GEMM computes with q - z (the weight code minus its zero point), which is
// exactly what fake quant multiplies by the scale, so the integer model uses the same codes and
// the same round-half-even activation codes as the fake-quant model; only the f32 summation order
// differs (~1e-7 relative per layer). Weight operands, smallest first (buildOperand): q - z in
// [-8, 7] (packed 4-bit: symmetric W4), 16-level codes shifted into [-8, 7] with a zero point
// (asymmetric W4), q - z in [-127, 127] (symmetric W8, asymmetric up to 7 bits), codes shifted into
// [-127, 127] with a zero point. Asymmetric 8-bit weights that use all 256 levels, and symmetric
// ones where an MSE-clipped range produced the code -128 (the GEMM clamps -128 to -127), stay
// fake-quant, as do per-group scales and per-channel scales off axis 0.
//
// Not exact, listed under `approximate` in the report:
//  - Layers without activation quantization (weight-only recipes) run with dynamic 8-bit
//    activations (opts.dynamicActivations, default true; false keeps them fake-quant): per token
//    for Linear, per tensor (max |x| / 127 of each call) for Conv2d, whose integer kernel takes one
//    activation scale. The conv's max is read back per call, so on CUDA such a forward synchronises
//    and cannot be graph-captured.
//  - Separable (TuneQDM) weights: the column factor c is folded into the activations before they
//    are quantized, while the fake-quant layer quantizes x and then applies c.
//
// Inference only: when grad mode is on and the input or a layer parameter requires grad, the
// layer falls back to fake quant. toIntegerExecution freezes the converted layers' parameters
// (requiresGrad = false) so that plain inference takes the integer path even in grad mode;
// fromIntegerExecution restores the flags. Codes are computed at conversion time: convert after
// the last change to the weights or scales (or convert again).
//
// Devices: a layer runs in integers on the device of its weights (CPU or CUDA). The codes are
// computed on the host and packed on that device; the activation step sizes are read once at
// conversion into host tables (as the codes are: on CUDA no device-to-host read per call, so a
// forward can be graph-captured; half-precision tables are widened once); inputs keep their
// f32/f16/bf16 dtype on CUDA, and convolutions there take the im2row path of qgemm.ts.
import { ArgumentError, Tensor, abs, add, byteSize, cast, castRaw, contiguous, div, expand, full, max, moveRaw, unsqueeze, isGradEnabled, noGrad, reciprocal, reshape, select, slice, tensor, type Device } from '@qdm/core';
import type { Module } from '@qdm/core';
import { quantizeCodes, type FakeQuantParams } from './kernels.js';
import { QuantConv2d, QuantLinear, type QuantLayer } from './layers.js';
import { ActivationQuantizer, SeparableScales, WeightQuantizer, type AnyWeightQuantizer } from './quantizer.js';
import { packWeights, quantConv2d, quantLinear, type ActQuant, type PackedWeights } from './qgemm.js';

export interface IntegerExecutionOptions {
  /** Layers without activation quantization: dynamic 8-bit activations (per token for Linear, per tensor for Conv2d; default true) or fake quant. */
  dynamicActivations?: boolean;
  /** Layer names left in fake quant. */
  skip?: RegExp[];
}

export interface IntegerExecutionReport {
  /** Layers now running on the integer GEMM. */
  integer: string[];
  /** Layers left in fake quant, with the reason. */
  fakeQuant: Array<{ name: string; reason: string }>;
  /** Integer layers whose outputs differ from fake quant by more than summation order (see the file header). */
  approximate: Array<{ name: string; reason: string }>;
  /** Weight bytes of the integer layers: as float in memory, and packed (codes + scales + row sums). */
  weightBytes: { float: number; packed: number };
}

/** One weight operand: the packed codes and, for separable scales, the column factor. */
interface Operand { packed: PackedWeights; colFactor: Tensor | null }

/** One GEMM of a layer: a (sub)weight with its quantizers; split convs have two. */
interface Part {
  /** Operands per separable expert (one entry otherwise). */
  operands: Operand[];
  weightQuantizer: AnyWeightQuantizer;
  act: ActivationQuantizer | null;
  /** Input channel range of this part (split convs). */
  channels: [number, number] | null;
  /** Host copy of the activation table (delta, zero point per step entry), read at conversion. */
  actTable: { delta: Float32Array; zero: Float32Array } | null;
}

interface LayerState { parts: Part[]; frozen: Array<[Tensor, boolean]>; device: Device }

const states = new WeakMap<QuantLayer, LayerState>();

const isQuantLayer = (m: Module): m is QuantLayer => m instanceof QuantLinear || m instanceof QuantConv2d;

/** FakeQuantParams of expert k of separable scales (what params() returns under that expert's timestep). */
function separableParams(wq: SeparableScales, k: number): FakeQuantParams {
  const rows = select(wq.delta_out, 0, k);
  const inCh = select(wq.delta_in, 0, k);
  const cols = wq.window > 1 ? reshape(contiguous(expand(unsqueeze(inCh, 1), [inCh.shape[0]!, wq.window])), [inCh.shape[0]! * wq.window]) : inCh;
  return { scale: rows, colScale: cols, zeroPoint: wq.zero_point, qmin: wq.spec.qmin, qmax: wq.spec.qmax, granularity: 'separable' };
}

const f32Values = (t: Tensor): Float32Array => t.data() as Float32Array;

/**
 * The packed operand of one weight, or the reason it cannot be one. Candidates, smallest first:
 * d = q - z in [-8, 7] (packed 4-bit, no zero point); a 16-level code range shifted into [-8, 7]
 * with the zero point shifted alike (4-bit with a zero point: asymmetric W4); d in [-127, 127]
 * (8-bit); codes shifted into [-127, 127] with a zero point. Every candidate keeps q - z exactly.
 */
function buildOperand(weight: Tensor, p: FakeQuantParams, colFactor: Tensor | null): Operand | string {
  const O = weight.shape[0]!, K = weight.numel / O;
  const device = weight.device;
  const onDevice = quantizeCodes(weight, p, p.qmin < 0 ? 'i8' : 'u8');
  const codes = moveRaw(onDevice, 'cpu');  // the same tensor on the CPU
  if (codes !== onDevice) onDevice.dispose();
  const q = codes.cpuData() as Int8Array | Uint8Array;
  const zs = f32Values(p.zeroPoint);
  const perRow = zs.length === O;
  const z = new Float32Array(O);
  let dlo = 0, dhi = 0, qlo = Infinity, qhi = -Infinity;
  for (let o = 0; o < O; o++) {
    const zo = zs[perRow ? o : 0]!;
    if (!Number.isInteger(zo)) { codes.dispose(); return `zero point ${zo} of row ${o} is not an integer`; }
    z[o] = zo;
    for (let i = o * K; i < (o + 1) * K; i++) {
      const v = q[codes.offset + i]!;
      if (v < qlo) qlo = v;
      if (v > qhi) qhi = v;
      if (v - zo < dlo) dlo = v - zo;
      if (v - zo > dhi) dhi = v - zo;
    }
  }
  // (shift, withZero, bits) of the first candidate that holds every code.
  let pick: { shift: number; withZero: boolean; bits: 4 | 8 } | null = null;
  if (dlo >= -8 && dhi <= 7) pick = { shift: 0, withZero: false, bits: 4 };
  else if (qhi - qlo <= 15) pick = { shift: qlo + 8, withZero: true, bits: 4 };
  else if (dlo >= -127 && dhi <= 127) pick = { shift: 0, withZero: false, bits: 8 };
  else if (qhi - qlo <= 254) pick = { shift: qlo + 127, withZero: true, bits: 8 };
  if (!pick) { codes.dispose(); return `codes span [${qlo}, ${qhi}] and q - z spans [${dlo}, ${dhi}]: neither fits the GEMM's [-127, 127] weight operand`; }
  const values = new Int8Array(O * K);
  for (let o = 0; o < O; o++) {
    const off = pick.withZero ? pick.shift : z[o]!;
    for (let i = o * K; i < (o + 1) * K; i++) values[i] = q[codes.offset + i]! - off;
  }
  codes.dispose();
  let opCodes = tensor(values, { dtype: 'i8', shape: weight.shape });
  if (pick.bits === 4) { const c4 = castRaw(opCodes, 'i4'); opCodes.dispose(); opCodes = c4; }
  const rowScale = p.granularity === 'tensor' ? full([O], f32Values(p.scale)[0]!, { device }) : contiguous(cast(p.scale, 'f32')).clone();
  const zero = pick.withZero ? tensor(z.map((v) => v - pick!.shift), { shape: [O], device }) : undefined;
  if (device !== 'cpu') { const d = moveRaw(opCodes, device); opCodes.dispose(); opCodes = d; }
  const packed = packWeights(opCodes, rowScale, zero);
  opCodes.dispose(); rowScale.dispose(); zero?.dispose();
  return { packed, colFactor };
}

/** Operands of one (sub)weight for every separable expert, or a reason. */
function operandsOf(weight: Tensor, wq: AnyWeightQuantizer, conv: boolean): Operand[] | string {
  if (wq instanceof SeparableScales) {
    const out: Operand[] = [];
    for (let k = 0; k < wq.experts; k++) {
      const p = separableParams(wq, k);
      // Convs take the factor per input channel (shared over the kernel window), linears per input
      // feature; the GEMM divides it into x, so it gets 1/c (y_o = r_o · sum_j d_oj · c_j · x_j).
      const col = reciprocal(contiguous(cast(conv ? select(wq.delta_in, 0, k) : p.colScale!, 'f32')));
      const op = buildOperand(weight, p, col);
      if (typeof op === 'string') return `expert ${k}: ${op}`;
      out.push(op);
    }
    return out;
  }
  if (!(wq instanceof WeightQuantizer)) return 'unknown weight quantizer';
  const g = wq.spec.granularity;
  if (g === 'group') return 'per-group weight scales (the GEMM takes one scale per output channel)';
  if (g === 'channel' && wq.spec.channelAxis !== 0) return `per-channel scales along axis ${wq.spec.channelAxis} (the GEMM takes them per output channel, axis 0)`;
  const op = buildOperand(weight, wq.params(), null);
  return typeof op === 'string' ? op : [op];
}

/** The static activation quantization of the current step entry; unsigned ranges shifted by -128 (exact: q - z unchanged). */
function actQuantOf(aq: ActivationQuantizer, table: NonNullable<Part['actTable']>): ActQuant {
  const k = aq.stepEntry();
  const scale = table.delta[k]!, zero = table.zero[k]!;
  const shift = aq.spec.qmax > 127 ? 128 : 0;
  return { scale, zeroPoint: zero - shift, qmin: aq.spec.qmin - shift, qmax: aq.spec.qmax - shift };
}

function operandFor(part: Part): Operand {
  const wq = part.weightQuantizer;
  return part.operands[wq instanceof SeparableScales ? wq.expertIndex() : 0]!;
}

function layerParams(layer: QuantLayer): Tensor[] {
  return [...layer.stateDict().values()].filter((t) => t.requiresGrad);
}

function activeAct(layer: QuantLayer, aq: ActivationQuantizer | null): ActivationQuantizer | null {
  return aq && aq.enabled && layer.quantActivations ? aq : null;
}

/**
 * Symmetric 8-bit per-tensor quantization of a conv input from its own range (weight-only
 * layers); with a column factor the quantized values are x / colFactor per channel.
 */
function dynamicTensorAct(x: Tensor, colFactor: Tensor | null): ActQuant {
  const scaled = colFactor ? div(x, reshape(colFactor, [1, colFactor.numel, 1, 1])) : x;
  const amax = f32Values(max(abs(scaled)))[0]!;
  return { scale: amax > 0 && Number.isFinite(amax) ? amax / 127 : 1, zeroPoint: 0, qmin: -127, qmax: 127 };
}

/** The integer forward of a layer (null: fall back to fake quant). */
function integerForward(layer: QuantLayer, state: LayerState, staticAct: boolean): (x: Tensor) => Tensor | null {
  return (x: Tensor) => {
    if (!layer.quantWeights || x.device !== state.device) return null;
    // Inference only: anything that needs a gradient takes the fake-quant path.
    if (isGradEnabled() && (x.requiresGrad || layerParams(layer).length > 0)) return null;
    // The activation mode chosen at conversion must still hold.
    if (state.parts.some((p) => (activeAct(layer, p.act) !== null) !== staticAct)) return null;
    return noGrad(() => {
      // The CPU kernels take and give f32; the CUDA ones take the input's dtype and give it back.
      const cpu = x.device === 'cpu';
      const x32 = x.dtype === 'f32' || !cpu ? x : cast(x, 'f32');
      const bias = layer.bias ? (layer.bias.dtype === 'f32' || !cpu ? layer.bias : cast(layer.bias, 'f32')) : undefined;
      let y: Tensor;
      if (layer instanceof QuantLinear) {
        const part = state.parts[0]!, op = operandFor(part);
        y = quantLinear(x32, op.packed, part.act && staticAct ? actQuantOf(part.act, part.actTable!) : 'dynamic', { bias, ...(op.colFactor ? { colFactor: op.colFactor } : {}) });
      } else {
        const conv = layer as QuantConv2d;
        const outs = state.parts.map((part, i) => {
          const op = operandFor(part);
          const xi = part.channels ? contiguous(slice(x32, 1, part.channels[0], part.channels[1])) : x32;
          return quantConv2d(xi, op.packed, conv.kernelSize, staticAct ? actQuantOf(part.act!, part.actTable!) : dynamicTensorAct(xi, op.colFactor), {
            ...(i === 0 && bias ? { bias } : {}), ...(op.colFactor ? { colFactor: op.colFactor } : {}),
            stride: conv.stride, padding: conv.padding, dilation: conv.dilation,
          });
        });
        y = outs.length === 1 ? outs[0]! : add(outs[0]!, outs[1]!);
      }
      return y.dtype === x.dtype ? y : cast(y, x.dtype);
    });
  };
}

/**
 * Switches every eligible QuantLinear / QuantConv2d of model to integer execution (see the file
 * header). Returns which layers run in integers, which stay fake-quant and why, and weight bytes.
 */
export function toIntegerExecution(model: Module, opts: IntegerExecutionOptions = {}): IntegerExecutionReport {
  if (opts.skip !== undefined && (!Array.isArray(opts.skip) || !opts.skip.every((r) => r instanceof RegExp))) throw new ArgumentError('toIntegerExecution: opts.skip must be an array of RegExp');
  const dynamic = opts.dynamicActivations ?? true;
  fromIntegerExecution(model);
  const report: IntegerExecutionReport = { integer: [], fakeQuant: [], approximate: [], weightBytes: { float: 0, packed: 0 } };
  for (const [name, m] of model.namedModules()) {
    if (!isQuantLayer(m)) continue;
    const keep = (reason: string) => { report.fakeQuant.push({ name, reason }); };
    if (opts.skip?.some((r) => r.test(name))) { keep('skipped by opts.skip'); continue; }
    if (!m.quantWeights) { keep('weight quantization is off (quantWeights = false)'); continue; }
    const device = m.weight.device;
    if (device !== 'cpu' && device !== 'cuda') { keep(`weights on ${device as string} (the integer GEMM runs on the CPU and CUDA)`); continue; }
    const isConv = m instanceof QuantConv2d;
    if (isConv && (m as QuantConv2d).groups !== 1) { keep(`grouped conv (groups ${(m as QuantConv2d).groups})`); continue; }
    const conv = isConv ? (m as QuantConv2d) : null;
    const actQs = conv && conv.split ? [m.act_quantizer, conv.act_quantizer_0] : [m.act_quantizer];
    const active = actQs.map((a) => activeAct(m, a));
    const staticAct = active.every((a) => a !== null);
    if (!staticAct && active.some((a) => a !== null)) { keep('split conv with one of its two activation quantizers off'); continue; }
    if (!staticAct && !dynamic) { keep('no activation quantization and dynamicActivations is false'); continue; }
    const specs: Array<[Tensor, AnyWeightQuantizer, ActivationQuantizer | null, [number, number] | null]> = conv && conv.split
      ? [[slice(m.weight, 1, 0, conv.split), m.weight_quantizer, m.act_quantizer, [0, conv.split]], [slice(m.weight, 1, conv.split), conv.weight_quantizer_0!, conv.act_quantizer_0, [conv.split, conv.inChannels]]]
      : [[m.weight, m.weight_quantizer, m.act_quantizer, null]];
    const parts: Part[] = [];
    let reason: string | null = null;
    noGrad(() => {
      for (const [w, wq, aq, channels] of specs) {
        const ops = operandsOf(w, wq, isConv);
        if (typeof ops === 'string') { reason = ops; break; }
        const actTable = aq ? { delta: aq.delta.data() as Float32Array, zero: aq.zero_point.data() as Float32Array } : null;
        parts.push({ operands: ops, weightQuantizer: wq, act: aq, channels, actTable });
      }
    });
    if (reason !== null) {
      for (const p of parts) for (const o of p.operands) disposeOperand(o);
      keep(reason);
      continue;
    }
    const frozen: Array<[Tensor, boolean]> = [...m.stateDict().values()].map((t) => [t, t.requiresGrad]);
    for (const [t] of frozen) t.requiresGrad = false;
    const state: LayerState = { parts, frozen, device };
    states.set(m, state);
    m.integerForward = integerForward(m, state, staticAct);
    report.integer.push(name);
    if (!staticAct) report.approximate.push({ name, reason: `no activation quantizer: dynamic per-${isConv ? 'tensor' : 'token'} 8-bit activations` });
    if (parts.some((p) => p.weightQuantizer instanceof SeparableScales)) report.approximate.push({ name, reason: 'separable scales: the column factor is applied to the activations before they are quantized' });
    report.weightBytes.float += byteSize(m.weight.dtype, m.weight.numel);
    for (const p of parts) for (const o of p.operands) report.weightBytes.packed += operandBytes(o);
  }
  return report;
}

function operandBytes(o: Operand): number {
  const t = [o.packed.packed, o.packed.rowSums, o.packed.scale, ...(o.packed.zeroPoint ? [o.packed.zeroPoint] : []), ...(o.colFactor ? [o.colFactor] : [])];
  return t.reduce((a, x) => a + byteSize(x.dtype, x.numel), 0);
}

function disposeOperand(o: Operand): void {
  for (const t of [o.packed.packed, o.packed.rowSums, o.packed.scale, o.packed.zeroPoint, o.colFactor]) if (t && !t.isDisposed) t.dispose();
}

/** True when the layer currently has an integer forward. */
export function isIntegerLayer(m: Module): boolean { return isQuantLayer(m) && m.integerForward !== null; }

/** Switches every layer back to fake quant, restores requiresGrad and frees the packed weights. Returns the names switched. */
export function fromIntegerExecution(model: Module): string[] {
  const names: string[] = [];
  for (const [name, m] of model.namedModules()) {
    if (!isQuantLayer(m)) continue;
    const state = states.get(m);
    m.integerForward = null;
    if (!state) continue;
    for (const [t, flag] of state.frozen) if (!t.isDisposed) t.requiresGrad = flag;
    for (const p of state.parts) for (const o of p.operands) disposeOperand(o);
    states.delete(m);
    names.push(name);
  }
  return names;
}
