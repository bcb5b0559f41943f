// Stochastic gradient descent with momentum, dampening, L2 weight decay and Nesterov momentum,
// as torch.optim.SGD computes it (the momentum buffer starts as a copy of the first gradient).
import { ArgumentError } from '../errors.js';
import type { Tensor } from '../tensor.js';
import { Optimizer, bufferValues, hyper, stateBuffer, type ParamGroup, type ParamGroupInit, type ParamState, type StateLayout } from './optimizer.js';

export interface SGDOptions {
  lr: number;
  momentum?: number;
  dampening?: number;
  weightDecay?: number;
  nesterov?: boolean;
}

type SGDHyper = Required<SGDOptions>;

export class SGD extends Optimizer<SGDHyper> {
  constructor(params: Iterable<Tensor> | ParamGroupInit[], opts: SGDOptions) {
    if (!opts || opts.lr === undefined) throw new ArgumentError('SGD: lr is required');
    super(params, { lr: opts.lr, momentum: opts.momentum ?? 0, dampening: opts.dampening ?? 0, weightDecay: opts.weightDecay ?? 0, nesterov: opts.nesterov ?? false });
  }

  protected validateGroup(g: ParamGroup): void {
    hyper.nonNegative('lr', g.lr, 'SGD');
    hyper.nonNegative('momentum', g.momentum, 'SGD');
    hyper.nonNegative('dampening', g.dampening, 'SGD');
    hyper.nonNegative('weightDecay', g.weightDecay, 'SGD');
    hyper.boolean('nesterov', g.nesterov, 'SGD');
    if (g.nesterov && ((g.momentum as number) <= 0 || g.dampening !== 0)) throw new ArgumentError('SGD: nesterov momentum requires momentum > 0 and dampening 0');
  }

  protected stateLayout(g: ParamGroup): StateLayout {
    return (g.momentum as number) !== 0 ? { momentumBuffer: 'tensor' } : {};
  }

  protected updateParam(w: Float32Array, grad: Float32Array, state: ParamState | undefined, group: ParamGroup, p: Tensor): ParamState | undefined {
    const g = group as unknown as SGDHyper;
    const { lr, momentum, dampening, weightDecay: wd, nesterov } = g;
    const n = w.length;
    if (momentum === 0) {
      for (let i = 0; i < n; ++i) {
        const d = wd !== 0 ? Math.fround(grad[i]! + wd * w[i]!) : grad[i]!;
        w[i] = w[i]! - lr * d;
      }
      return undefined;
    }
    const first = !state?.momentumBuffer;
    const bufT = state?.momentumBuffer as Tensor | undefined ?? stateBuffer(p.shape);
    const buf = bufferValues(bufT);
    for (let i = 0; i < n; ++i) {
      const d = wd !== 0 ? Math.fround(grad[i]! + wd * w[i]!) : grad[i]!;
      // torch: buf = d at the first step, then buf = momentum * buf + (1 - dampening) * d.
      const b = first ? d : Math.fround(Math.fround(momentum * buf[i]!) + (1 - dampening) * d);
      buf[i] = b;
      const step = nesterov ? Math.fround(d + momentum * b) : b;
      w[i] = w[i]! - lr * step;
    }
    return { momentumBuffer: bufT };
  }
}
