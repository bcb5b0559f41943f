// AdaRound (Nagel et al. 2020) as Q-Diffusion uses it (adaptive_rounding.py, learned_hard_sigmoid):
//   W_q = Δ·(clamp(floor(W/Δ) + h(V) + z, qmin, qmax) - z),  h(V) = clamp(σ(V)(ζ-γ)+γ, 0, 1),
// ζ = 1.1, γ = -0.1, V initialised so that h(V) = frac(W/Δ) (soft mode then reproduces W up to the
// clamp); hard mode h = [V >= 0]; regulariser Σ(1 - |2h(V) - 1|^β).
// AdaRoundWeight borrows delta / zero_point from the layer's WeightQuantizer (per tensor or per
// channel); floor(W/Δ) is a constant computed once, gradients reach V through @qdm/core ops.
import { ArgumentError, DTypeError, Tensor, abs, add, clamp, keep, mul, noGrad, pow, reshape, shapeStr, sigmoid, sub, sum, tensor } from '@qdm/core';
import type { WeightQuantizer } from './quantizer.js';

export const ADAROUND_ZETA = 1.1;
export const ADAROUND_GAMMA = -0.1;

/** V such that h(V) = frac: V = -log((ζ-γ)/(frac-γ) - 1). */
export function adaroundInit(frac: number): number {
  return -Math.log((ADAROUND_ZETA - ADAROUND_GAMMA) / (frac - ADAROUND_GAMMA) - 1);
}

export class AdaRoundWeight {
  readonly q: WeightQuantizer;
  /** floor(W/Δ), constant. */
  readonly base: Tensor;
  /** The rounding variable V (leaf, requires grad). */
  readonly v: Tensor;
  private readonly bshape: number[];
  private readonly initialUp: Uint8Array;

  constructor(weight: Tensor, q: WeightQuantizer) {
    const spec = q.spec;
    if (spec.granularity !== 'tensor' && spec.granularity !== 'channel') throw new ArgumentError(`AdaRoundWeight: granularity '${spec.granularity}' is not supported (per tensor or per channel)`);
    if (!['f32', 'f16', 'bf16'].includes(weight.dtype)) throw new DTypeError(`AdaRoundWeight: expected a floating-point weight, got ${weight.dtype}`);
    this.q = q;
    const axis = spec.channelAxis < 0 ? spec.channelAxis + weight.ndim : spec.channelAxis;
    const C = spec.granularity === 'tensor' ? 1 : weight.shape[axis]!;
    if (q.delta.numel !== C) throw new ArgumentError(`AdaRoundWeight: weight ${shapeStr(weight.shape)} needs ${C} step sizes, the quantizer has ${q.delta.numel}`);
    this.bshape = spec.granularity === 'tensor' ? [1] : weight.shape.map((d, i) => (i === axis ? d : 1));
    const inner = spec.granularity === 'tensor' ? 1 : weight.shape.slice(axis + 1).reduce((a, b) => a * b, 1);
    const w = weight.data() as Float32Array, delta = q.delta.data() as Float32Array;
    const fl = new Float32Array(w.length), v = new Float32Array(w.length);
    this.initialUp = new Uint8Array(w.length);
    for (let i = 0; i < w.length; i++) {
      const p = C === 1 ? 0 : Math.floor(i / inner) % C;
      const r = w[i]! / delta[p]!, f = Math.floor(r);
      fl[i] = f; v[i] = adaroundInit(r - f);
      this.initialUp[i] = r - f >= 0.5 ? 1 : 0;
    }
    this.base = keep(tensor(fl, { shape: weight.shape }));
    this.v = keep(tensor(v, { shape: weight.shape }));
    this.v.requiresGrad = true;
  }

  /** h(V) = clamp(σ(V)(ζ-γ)+γ, 0, 1). */
  rectified(): Tensor { return clamp(add(mul(sigmoid(this.v), ADAROUND_ZETA - ADAROUND_GAMMA), ADAROUND_GAMMA), 0, 1); }

  /** The quantized weight: soft h(V) (hard = false) or [V >= 0] (hard = true). */
  weight(hard: boolean): Tensor {
    const delta = reshape(this.q.delta.detach(), this.bshape), zero = reshape(this.q.zero_point.detach(), this.bshape);
    const offset = hard ? tensor((this.v.data() as Float32Array).map((x) => (x >= 0 ? 1 : 0)), { shape: this.v.shape }) : this.rectified();
    return mul(delta, sub(clamp(add(add(this.base, offset), zero), this.q.spec.qmin, this.q.spec.qmax), zero));
  }

  /** Σ(1 - |2h(V) - 1|^β). */
  regularizer(beta: number): Tensor {
    const h = this.rectified();
    return sub(h.numel, sum(pow(abs(sub(mul(h, 2), 1)), beta)));
  }

  /** Share of elements rounded differently from round-to-nearest. */
  flippedFraction(_weight?: Tensor): number {
    const v = noGrad(() => this.v.data() as Float32Array);
    let n = 0;
    for (let i = 0; i < v.length; i++) if ((v[i]! >= 0 ? 1 : 0) !== this.initialUp[i]) n++;
    return v.length ? n / v.length : 0;
  }

  dispose(): void { this.v.dispose(); this.base.dispose(); }
}
