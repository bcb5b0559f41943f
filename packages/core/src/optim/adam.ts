// Adam (L2 weight decay added to the gradient, optional AMSGrad) and AdamW (decoupled weight
// decay), with torch.optim's per-parameter step counter and bias correction:
//   m = lerp(m, g, 1-b1); v = b2 v + (1-b2) g²; denom = sqrt(v) / sqrt(1-b2^t) + eps;
//   p -= lr / (1-b1^t) · m / denom          (AMSGrad: v_max = max(v_max, v) replaces v in denom)
import { ArgumentError } from '../errors.js';
import type { Tensor } from '../tensor.js';
import { Optimizer, bufferValues, hyper, stateBuffer, type ParamGroup, type ParamGroupInit, type ParamState, type StateLayout } from './optimizer.js';

export interface AdamOptions {
  lr?: number;
  betas?: [number, number];
  eps?: number;
  weightDecay?: number;
  amsgrad?: boolean;
}

type AdamHyper = Required<AdamOptions> & { lr: number };

function validateAdam(g: ParamGroup, who: string): void {
  hyper.nonNegative('lr', g.lr, who);
  const b = g.betas as unknown;
  if (!Array.isArray(b) || b.length !== 2) throw new ArgumentError(`${who}: betas must be a pair [beta1, beta2] (got ${String(b)})`);
  hyper.unitInterval('betas[0]', b[0], who);
  hyper.unitInterval('betas[1]', b[1], who);
  hyper.nonNegative('eps', g.eps, who);
  hyper.nonNegative('weightDecay', g.weightDecay, who);
  hyper.boolean('amsgrad', g.amsgrad, who);
}

function adamLayout(g: ParamGroup): StateLayout {
  return g.amsgrad ? { step: 'number', expAvg: 'tensor', expAvgSq: 'tensor', maxExpAvgSq: 'tensor' } : { step: 'number', expAvg: 'tensor', expAvgSq: 'tensor' };
}

/** The shared update; `l2` is the weight decay added to the gradient (0 for AdamW). */
function adamUpdate(w: Float32Array, grad: Float32Array, state: ParamState | undefined, g: AdamHyper, l2: number, p: Tensor): ParamState {
  const s: ParamState = state ?? (g.amsgrad
    ? { step: 0, expAvg: stateBuffer(p.shape), expAvgSq: stateBuffer(p.shape), maxExpAvgSq: stateBuffer(p.shape) }
    : { step: 0, expAvg: stateBuffer(p.shape), expAvgSq: stateBuffer(p.shape) });
  const step = (s.step as number) + 1;
  s.step = step;
  const [b1, b2] = g.betas;
  const m = bufferValues(s.expAvg as Tensor), v = bufferValues(s.expAvgSq as Tensor);
  const vmax = g.amsgrad ? bufferValues(s.maxExpAvgSq as Tensor) : null;
  const stepSize = g.lr / (1 - b1 ** step);
  const bc2Sqrt = Math.sqrt(1 - b2 ** step);
  const eps = g.eps;
  const n = w.length;
  for (let i = 0; i < n; ++i) {
    const d = l2 !== 0 ? Math.fround(grad[i]! + l2 * w[i]!) : grad[i]!;
    const mi = Math.fround(m[i]! + (1 - b1) * (d - m[i]!));
    const vi = Math.fround(b2 * v[i]! + (1 - b2) * d * d);
    m[i] = mi; v[i] = vi;
    let vd = vi;
    if (vmax) { vd = Math.max(vmax[i]!, vi); vmax[i] = vd; }
    const denom = Math.sqrt(vd) / bc2Sqrt + eps;
    w[i] = w[i]! - stepSize * (mi / denom);
  }
  return s;
}

export class Adam extends Optimizer<AdamHyper> {
  constructor(params: Iterable<Tensor> | ParamGroupInit[], opts: AdamOptions = {}) {
    super(params, { lr: opts.lr ?? 1e-3, betas: opts.betas ?? [0.9, 0.999], eps: opts.eps ?? 1e-8, weightDecay: opts.weightDecay ?? 0, amsgrad: opts.amsgrad ?? false });
  }
  protected validateGroup(g: ParamGroup): void { validateAdam(g, this.who); }
  protected stateLayout(g: ParamGroup): StateLayout { return adamLayout(g); }
  protected updateParam(w: Float32Array, grad: Float32Array, state: ParamState | undefined, group: ParamGroup, p: Tensor): ParamState {
    const g = group as unknown as AdamHyper;
    return adamUpdate(w, grad, state, g, g.weightDecay, p);
  }
}

/** Adam with decoupled weight decay: p *= 1 - lr·wd before the Adam step (torch.optim.AdamW). */
export class AdamW extends Optimizer<AdamHyper> {
  constructor(params: Iterable<Tensor> | ParamGroupInit[], opts: AdamOptions = {}) {
    super(params, { lr: opts.lr ?? 1e-3, betas: opts.betas ?? [0.9, 0.999], eps: opts.eps ?? 1e-8, weightDecay: opts.weightDecay ?? 1e-2, amsgrad: opts.amsgrad ?? false });
  }
  protected validateGroup(g: ParamGroup): void { validateAdam(g, this.who); }
  protected stateLayout(g: ParamGroup): StateLayout { return adamLayout(g); }
  protected updateParam(w: Float32Array, grad: Float32Array, state: ParamState | undefined, group: ParamGroup, p: Tensor): ParamState {
    const g = group as unknown as AdamHyper;
    if (g.weightDecay !== 0) {
      const keepFrac = 1 - g.lr * g.weightDecay;
      for (let i = 0; i < w.length; ++i) w[i] = w[i]! * keepFrac;
    }
    return adamUpdate(w, grad, state, g, 0, p);
  }
}
