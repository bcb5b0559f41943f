// AdaRound (Nagel et al. 2020) as Q-Diffusion uses it (adaptive_rounding.py, `learned_hard_sigmoid`):
// each weight element is rounded down or up by a learned variable V,
//   W_q = Δ·(clamp(floor(W/Δ) + h(V) + z, qmin, qmax) - z),  h(V) = clamp(σ(V)(ζ-γ)+γ, 0, 1),
// ζ = 1.1, γ = -0.1, V initialised so that h(V) = frac(W/Δ) (the soft weight then equals W up to
// the clamp); soft h(V) while optimising, hard h = [V >= 0] afterwards; regulariser
// Σ(1 - |2h(V) - 1|^β) pushes h(V) to 0 or 1.
//
// Design: AdaRoundQuantizer does not replace the layer's WeightQuantizer. It borrows that
// quantizer's delta, zero_point and spec, and is installed as a forward override of it
// (install()), so layers.ts needs no AdaRound knowledge and the layer's `quantWeights` switch
// still bypasses it (full-precision targets keep the float weight). freeze() fixes the hard codes
// and frees V; finalize() writes the grid values Δ·(code - z) into the layer's weight storage,
// which the ordinary fakeQuant maps to themselves (exactly the learned codes), so integer
// execution, packing and checkpoints work on the result unchanged. floor(W/Δ) is computed once
// (a constant); gradients reach V and, with learnStepSize, Δ through @qdm/core ops.
import { ArgumentError, DTypeError, Tensor, abs, add, clamp, keep, mul, noGrad, pow, reshape, shapeStr, sigmoid, sub, sum, tensor } from '@qdm/core';
import { paramMap, type WeightQuantizer } from './quantizer.js';

/** Stretch of the rectified sigmoid (Q-Diffusion / BRECQ / AdaRound constants). */
export const ADAROUND_ZETA = 1.1;
export const ADAROUND_GAMMA = -0.1;

/** V such that h(V) = frac: V = -log((ζ-γ)/(frac-γ) - 1). */
export function adaroundInit(frac: number): number {
  return -Math.log((ADAROUND_ZETA - ADAROUND_GAMMA) / (frac - ADAROUND_GAMMA) - 1);
}

/** h(V) = clamp(σ(V)(ζ-γ)+γ, 0, 1) for one number. */
export function rectifiedSigmoid(v: number): number {
  const s = 1 / (1 + Math.exp(-v));
  return Math.min(1, Math.max(0, s * (ADAROUND_ZETA - ADAROUND_GAMMA) + ADAROUND_GAMMA));
}

export interface AdaRoundOptions {
  /** Also learn the quantizer's step size Δ with V. Default false (Q-Diffusion keeps Δ from the 'max' init). */
  learnStepSize?: boolean;
}

export type AdaRoundState = 'soft' | 'hard' | 'frozen' | 'finalized';

export class AdaRoundQuantizer {
  readonly base: WeightQuantizer;
  /** The float weight (or the slice of it, for split convs) this quantizer rounds; finalize() writes into it. */
  readonly weight: Tensor;
  /** The rounding variable V, shaped like the weight (null once frozen). */
  alpha: Tensor | null;
  readonly learnStepSize: boolean;
  /** 'soft': h(V) (optimisation); 'hard': [V >= 0]; 'frozen': fixed codes, V freed; 'finalized': written into the weight. */
  state: AdaRoundState = 'soft';
  private readonly floorW: Tensor;
  private readonly floorValues: Float32Array;
  private readonly paramIndex: Int32Array;
  private readonly initialUp: Uint8Array;
  private readonly bshape: number[];
  private frozenWeight: Tensor | null = null;
  private flipped = 0;

  constructor(base: WeightQuantizer, weight: Tensor, opts: AdaRoundOptions = {}) {
    const spec = base.spec;
    if (spec.granularity !== 'tensor' && spec.granularity !== 'channel') throw new ArgumentError(`AdaRoundQuantizer: granularity '${spec.granularity}' is not supported (AdaRound rounds per tensor or per channel weight quantizers)`);
    if (!base.initialised) throw new ArgumentError('AdaRoundQuantizer: the weight quantizer is not initialised (initFrom the weight first)');
    if (weight.dtype !== 'f32' || weight.device !== 'cpu') throw new DTypeError(`AdaRoundQuantizer: expected an f32 CPU weight, got ${weight.dtype} on ${weight.device}`);
    this.base = base;
    this.weight = weight;
    this.learnStepSize = opts.learnStepSize ?? false;
    const { count, index } = paramMap(weight.shape, spec);
    if (count !== base.delta.numel) throw new ArgumentError(`AdaRoundQuantizer: weight ${shapeStr(weight.shape)} needs ${count} step sizes, the quantizer has ${base.delta.numel}`);
    const axis = spec.channelAxis < 0 ? spec.channelAxis + weight.ndim : spec.channelAxis;
    this.bshape = spec.granularity === 'tensor' ? [1] : weight.shape.map((d, i) => (i === axis ? d : 1));
    const w = weight.data() as Float32Array;
    const delta = base.delta.data() as Float32Array;
    const n = w.length;
    this.floorValues = new Float32Array(n);
    this.paramIndex = new Int32Array(n);
    this.initialUp = new Uint8Array(n);
    const v = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      const p = index(i);
      this.paramIndex[i] = p;
      const r = w[i]! / delta[p]!;
      const f = Math.floor(r);
      this.floorValues[i] = f;
      v[i] = adaroundInit(r - f);
      this.initialUp[i] = r - f >= 0.5 ? 1 : 0;
    }
    this.floorW = keep(tensor(this.floorValues, { shape: weight.shape }));
    this.alpha = keep(tensor(v, { shape: weight.shape }));
    this.alpha.requiresGrad = true;
  }

  private liveAlpha(): Tensor {
    if (!this.alpha) throw new ArgumentError(`AdaRoundQuantizer: V was freed (state '${this.state}')`);
    return this.alpha;
  }

  /** h(V): the soft rounding offset in [0, 1] (autograd op). */
  softOffset(): Tensor {
    return clamp(add(mul(sigmoid(this.liveAlpha()), ADAROUND_ZETA - ADAROUND_GAMMA), ADAROUND_GAMMA), 0, 1);
  }

  /** The hard rounding offsets [V >= 0] as 0/1. */
  hardOffset(): Float32Array {
    return (this.liveAlpha().data() as Float32Array).map((x) => (x >= 0 ? 1 : 0));
  }

  /** The quantized weight for the current state. Gradients reach V (soft) and Δ (learnStepSize). */
  forward(): Tensor {
    if (this.state === 'finalized') throw new ArgumentError('AdaRoundQuantizer: finalized (the weight holds the rounded values); remove the override');
    if (this.state === 'frozen') return this.frozenWeight!;
    const delta = reshape(this.learnStepSize ? this.base.delta : this.base.delta.detach(), this.bshape);
    const zero = reshape(this.base.zero_point.detach(), this.bshape);
    const offset = this.state === 'soft' ? this.softOffset() : tensor(this.hardOffset(), { shape: this.weight.shape });
    const { qmin, qmax } = this.base.spec;
    return mul(delta, sub(clamp(add(add(this.floorW, offset), zero), qmin, qmax), zero));
  }

  /** Σ(1 - |2h(V) - 1|^β) (autograd op). */
  roundingLoss(beta: number): Tensor {
    const h = this.softOffset();
    return sub(h.numel, sum(pow(abs(sub(mul(h, 2), 1)), beta)));
  }

  /** Integer codes clamp(floor(W/Δ) + [V >= 0] + z, qmin, qmax), in the weight's element order. */
  codes(): Int32Array {
    const hard = this.hardOffset();
    const zero = this.base.zero_point.data() as Float32Array;
    const { qmin, qmax } = this.base.spec;
    const out = new Int32Array(hard.length);
    for (let i = 0; i < hard.length; i++) out[i] = Math.min(qmax, Math.max(qmin, this.floorValues[i]! + hard[i]! + zero[this.paramIndex[i]!]!));
    return out;
  }

  /** Share of elements rounded the other way than round-to-nearest would. */
  flippedFraction(): number {
    if (!this.alpha) return this.flipped;
    const hard = this.hardOffset();
    let n = 0;
    for (let i = 0; i < hard.length; i++) if (hard[i] !== this.initialUp[i]) n++;
    return hard.length ? n / hard.length : 0;
  }

  /** Fixes the hard codes: the override returns the grid weight Δ·(code - z); V is freed. */
  freeze(): void {
    if (this.state === 'frozen' || this.state === 'finalized') return;
    this.flipped = this.flippedFraction();
    const codes = this.codes();
    const delta = this.base.delta.data() as Float32Array, zero = this.base.zero_point.data() as Float32Array;
    const values = new Float32Array(codes.length);
    for (let i = 0; i < codes.length; i++) { const p = this.paramIndex[i]!; values[i] = Math.fround(delta[p]! * (codes[i]! - zero[p]!)); }
    this.frozenWeight = keep(tensor(values, { shape: this.weight.shape }));
    this.alpha!.dispose();
    this.alpha = null;
    this.floorW.dispose();
    this.state = 'frozen';
  }

  /**
   * Folds the rounding into the weight: writes Δ·(code - z) into the weight storage in place, so
   * the layer's ordinary fake quant gives exactly the learned codes. Remove the override afterwards.
   */
  finalize(): void {
    if (this.state === 'finalized') return;
    this.freeze();
    noGrad(() => writeView(this.weight, this.frozenWeight!.data() as Float32Array));
    this.frozenWeight!.dispose();
    this.frozenWeight = null;
    this.state = 'finalized';
  }

  /** Makes the weight quantizer return this quantizer's weight. Returns the remover. */
  install(): () => void {
    return this.base.registerForwardOverride((_m, args) => {
      const w = args[0] as Tensor;
      if (!w || w.numel !== this.weight.numel) throw new ArgumentError(`AdaRoundQuantizer: the weight quantizer was called on ${w ? shapeStr(w.shape) : 'nothing'}, expected ${shapeStr(this.weight.shape)}`);
      return this.forward();
    });
  }

  /** Frees V and any cached weight without touching the layer (the layer keeps nearest rounding). */
  dispose(): void {
    if (this.alpha) { this.alpha.dispose(); this.alpha = null; this.floorW.dispose(); }
    this.frozenWeight?.dispose();
    this.frozenWeight = null;
  }
}

/** Writes logical-order values into a (possibly strided) f32 CPU view, element by element. */
export function writeView(t: Tensor, values: ArrayLike<number>): void {
  if (t.dtype !== 'f32' || t.device !== 'cpu') throw new DTypeError(`writeView: expected an f32 CPU tensor, got ${t.dtype} on ${t.device}`);
  if (values.length !== t.numel) throw new ArgumentError(`writeView: ${values.length} values for a tensor of ${t.numel} elements`);
  const data = t.cpuData() as Float32Array;
  const { shape, strides } = t;
  const idx = new Array<number>(shape.length).fill(0);
  for (let i = 0; i < values.length; i++) {
    let off = t.offset;
    for (let d = 0; d < shape.length; d++) off += idx[d]! * strides[d]!;
    data[off] = values[i]!;
    for (let d = shape.length - 1; d >= 0; d--) { if (++idx[d]! < shape[d]!) break; idx[d] = 0; }
  }
}
