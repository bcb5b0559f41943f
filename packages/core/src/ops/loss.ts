// Losses, as compositions of differentiable ops (their gradients follow from the parts).
import { ArgumentError, ShapeError } from '../errors.js';
import { Tensor, shapeStr } from '../tensor.js';
import { sub, mul, square, sqrt, affine, abs, minimum } from './elementwise.js';
import { sum, mean } from './reduce.js';
import { logSoftmax } from './nn.js';
import { tensor } from './creation.js';
import { dataOf } from '../tensor-data.js';

export type Reduction = 'mean' | 'sum' | 'none';

function reduce(x: Tensor, reduction: Reduction | undefined, op: string): Tensor {
  switch (reduction ?? 'mean') {
    case 'mean': return mean(x);
    case 'sum': return sum(x);
    case 'none': return x;
    default: throw new ArgumentError(`${op}: unknown reduction '${String(reduction)}'`);
  }
}

function checkPair(a: Tensor, b: Tensor, op: string): void {
  if (a.shape.length !== b.shape.length || a.shape.some((d, i) => d !== b.shape[i])) {
    throw new ShapeError(`${op}: prediction ${shapeStr(a.shape)} and target ${shapeStr(b.shape)} differ`);
  }
}

export function mseLoss(a: Tensor, b: Tensor, opts: { reduction?: Reduction } = {}): Tensor {
  checkPair(a, b, 'mseLoss');
  return reduce(square(sub(a, b)), opts.reduction, 'mseLoss');
}

/** Huber (smooth-L1 scaled by delta, as torch.nn.HuberLoss): 0.5 d^2 inside |d| < delta, delta (|d| - delta/2) outside. */
export function huberLoss(a: Tensor, b: Tensor, opts: { delta?: number; reduction?: Reduction } = {}): Tensor {
  checkPair(a, b, 'huberLoss');
  const delta = opts.delta ?? 1;
  if (!(delta > 0)) throw new ArgumentError(`huberLoss: delta must be positive, got ${delta}`);
  const ad = abs(sub(a, b));
  // With m = min(|d|, delta): 0.5 m^2 + delta (|d| - m) is both branches in one smooth expression.
  const m = minimum(ad, delta);
  const loss = sub(affine(square(m), 0.5, 0), affine(sub(m, ad), delta, 0));
  return reduce(loss, opts.reduction, 'huberLoss');
}

/** sqrt((a-b)^2 + c^2) - c: the LCD distance (c = 0.001 by default). */
export function pseudoHuberLoss(a: Tensor, b: Tensor, opts: { c?: number; reduction?: Reduction } = {}): Tensor {
  checkPair(a, b, 'pseudoHuberLoss');
  const c = opts.c ?? 0.001;
  if (!(c > 0)) throw new ArgumentError(`pseudoHuberLoss: c must be positive, got ${c}`);
  const loss = affine(sqrt(affine(square(sub(a, b)), 1, c * c)), 1, -c);
  return reduce(loss, opts.reduction, 'pseudoHuberLoss');
}

/** Cross-entropy of [N, C] logits against class indices [N] (i32/i64) or class probabilities [N, C]. */
export function crossEntropy(logits: Tensor, targets: Tensor, opts: { reduction?: Reduction; labelSmoothing?: number } = {}): Tensor {
  if (logits.ndim !== 2) throw new ShapeError(`crossEntropy: logits must be [N, C], got ${shapeStr(logits.shape)}`);
  const [N, C] = logits.shape as [number, number];
  const eps = opts.labelSmoothing ?? 0;
  if (!(eps >= 0 && eps <= 1)) throw new ArgumentError(`crossEntropy: labelSmoothing must be in [0, 1], got ${eps}`);
  let probs: Tensor;
  if (targets.dtype === 'i64' || targets.dtype === 'i32') {
    if (targets.ndim !== 1 || targets.shape[0] !== N) throw new ShapeError(`crossEntropy: targets ${shapeStr(targets.shape)} must be [${N}]`);
    const t = dataOf(targets);
    const oh = new Float32Array(N * C).fill(eps / C);
    for (let i = 0; i < N; ++i) {
      const k = Number(t[i]);
      if (!Number.isInteger(k) || k < 0 || k >= C) throw new ArgumentError(`crossEntropy: target ${k} out of range for ${C} classes`);
      oh[i * C + k]! += 1 - eps;
    }
    probs = tensor(oh, { shape: [N, C], device: logits.device });
  } else {
    checkPair(logits, targets, 'crossEntropy');
    probs = eps > 0 ? affine(targets, 1 - eps, eps / C) : targets;
  }
  const perSample = affine(sum(mul(probs, logSoftmax(logits, 1)), 1), -1, 0);
  return reduce(perSample, opts.reduction, 'crossEntropy');
}
