// Gradient clipping, in place on each parameter's .grad, as torch.nn.utils.clip_grad_norm_ and
// clip_grad_value_ do. The total norm is the p-norm of the per-tensor p-norms (for p = Infinity,
// the largest |g|), accumulated in float64; grads are scaled by min(1, maxNorm / (total + 1e-6)).
import { ArgumentError, QdmError } from '../errors.js';
import { noGrad } from '../autograd.js';
import type { Tensor } from '../tensor.js';
import { gradValues } from './optimizer.js';

function gradsOf(params: Iterable<Tensor>, who: string): Float32Array[] {
  const out: Float32Array[] = [];
  for (const p of params) if (p.grad) out.push(gradValues(p, who));
  return out;
}

function tensorNorm(g: Float32Array, normType: number): number {
  let acc = 0;
  if (normType === Infinity) { for (let i = 0; i < g.length; ++i) acc = Math.max(acc, Math.abs(g[i]!)); return acc; }
  if (normType === 2) { for (let i = 0; i < g.length; ++i) acc += g[i]! * g[i]!; return Math.sqrt(acc); }
  if (normType === 1) { for (let i = 0; i < g.length; ++i) acc += Math.abs(g[i]!); return acc; }
  for (let i = 0; i < g.length; ++i) acc += Math.abs(g[i]!) ** normType;
  return acc ** (1 / normType);
}

/**
 * Scales all gradients together so that their total `normType`-norm is at most `maxNorm`.
 * Returns the total norm before clipping. Parameters without a gradient are skipped.
 */
export function clipGradNorm(params: Iterable<Tensor>, maxNorm: number, normType = 2, opts: { errorIfNonfinite?: boolean } = {}): number {
  if (typeof maxNorm !== 'number' || Number.isNaN(maxNorm) || maxNorm < 0) throw new ArgumentError(`clipGradNorm: maxNorm must be a number >= 0 (got ${String(maxNorm)})`);
  if (typeof normType !== 'number' || !(normType > 0)) throw new ArgumentError(`clipGradNorm: normType must be > 0 or Infinity (got ${String(normType)})`);
  return noGrad(() => {
    const grads = gradsOf(params, 'clipGradNorm');
    if (grads.length === 0) return 0;
    const norms = grads.map((g) => tensorNorm(g, normType));
    const total = normType === Infinity ? Math.max(...norms) : tensorNorm(Float32Array.from(norms), normType);
    if (!Number.isFinite(total) && opts.errorIfNonfinite) throw new QdmError('QDM_NONFINITE', `clipGradNorm: the total gradient norm is ${total}`);
    const coef = maxNorm / (total + 1e-6);
    if (coef < 1 || Number.isNaN(coef)) for (const g of grads) for (let i = 0; i < g.length; ++i) g[i] = g[i]! * coef;
    return total;
  });
}

/** Clamps every gradient element to [-clipValue, clipValue]. */
export function clipGradValue(params: Iterable<Tensor>, clipValue: number): void {
  if (typeof clipValue !== 'number' || Number.isNaN(clipValue) || clipValue < 0) throw new ArgumentError(`clipGradValue: clipValue must be a number >= 0 (got ${String(clipValue)})`);
  noGrad(() => {
    for (const g of gradsOf(params, 'clipGradValue')) for (let i = 0; i < g.length; ++i) {
      const v = g[i]!;
      if (v > clipValue) g[i] = clipValue; else if (v < -clipValue) g[i] = -clipValue;
    }
  });
}
