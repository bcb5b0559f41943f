// Gradient checkpointing: run a sub-computation without keeping its intermediate tensors and
// recompute it during the backward pass. Trades one extra forward for the activation memory
// of the segment, which is what makes backpropagating through whole U-Nets affordable.
// The segment must be deterministic: random ops inside it should take explicit generators
// re-seeded by the caller, or the recomputation will draw different numbers.
import { isGradEnabled, noGrad, enableGrad, runBackward } from './autograd.js';
import { AutogradError } from './errors.js';
import { Tensor } from './tensor.js';
import { detach } from './ops/shape.js';

export function checkpoint(fn: (...inputs: Tensor[]) => Tensor, ...inputs: Tensor[]): Tensor {
  if (!isGradEnabled()) return fn(...inputs);
  const out = noGrad(() => fn(...inputs));
  if (!(out instanceof Tensor)) throw new AutogradError('checkpoint(): the function must return one tensor');
  // Parameters used inside fn are invisible from here, so the node is recorded whether or not
  // an input requires grad; the inner backward deposits parameter gradients on the leaves.
  out.requiresGrad = true;
  out.gradFn = {
    name: 'checkpoint',
    inputs: inputs.map((t) => (t.requiresGrad ? t : null)),
    backward(g: Tensor) {
      const replay = inputs.map((t) => { const d = detach(t); d.requiresGrad = t.requiresGrad; return d; });
      const y = enableGrad(() => fn(...replay));
      if (y.requiresGrad) runBackward(y, g, {});
      const grads = replay.map((r) => (r.requiresGrad ? r.grad : null));
      y.dispose();
      return grads;
    },
  };
  return out;
}
