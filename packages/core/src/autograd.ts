// Define-by-run reverse-mode autodiff. Each op that sees an input requiring gradients records
// a GradNode with a closure computing the input gradients from the output gradient. backward()
// walks the nodes in reverse topological order, summing gradients that meet at a tensor.
import { AutogradError } from './errors.js';
import type { Tensor } from './tensor.js';
import { keep } from './memory.js';

export interface GradNode {
  readonly name: string;
  /** The op's inputs (null where an input needs no gradient). */
  readonly inputs: ReadonlyArray<Tensor | null>;
  /** Gradients for each input (null where none flows). */
  backward(gradOutput: Tensor): Array<Tensor | null>;
  /** Drops saved tensors after use unless the graph is retained. */
  release?(): void;
}

let gradEnabled = true;

export function isGradEnabled(): boolean { return gradEnabled; }

/** Runs fn with gradient recording off (parameter updates, evaluation, sampling). */
export function noGrad<T>(fn: () => T): T {
  const prev = gradEnabled;
  gradEnabled = false;
  try { return fn(); } finally { gradEnabled = prev; }
}

/** Runs fn with gradient recording on, also inside noGrad (checkpoint recomputation). */
export function enableGrad<T>(fn: () => T): T {
  const prev = gradEnabled;
  gradEnabled = true;
  try { return fn(); } finally { gradEnabled = prev; }
}

/** True when an op over these inputs must record a node. */
export function needsGrad(...inputs: Array<Tensor | null | undefined>): boolean {
  if (!gradEnabled) return false;
  for (const t of inputs) if (t && t.requiresGrad) return true;
  return false;
}

/**
 * Attaches a node to `out` when any input requires grad. `backward` receives the output
 * gradient and returns one gradient (or null) per input, in order.
 */
export function record(out: Tensor, name: string, inputs: Array<Tensor | null | undefined>, backward: (g: Tensor) => Array<Tensor | null>): Tensor {
  if (!needsGrad(...inputs)) return out;
  out.requiresGrad = true;
  out.gradFn = { name, inputs: inputs.map((t) => (t && t.requiresGrad ? t : null)), backward };
  return out;
}

// Late-bound helpers from ops (set by ops/index.ts) so this file does not import the ops.
export const autogradHooks: {
  onesLike?: (t: Tensor) => Tensor;
  add?: (a: Tensor, b: Tensor) => Tensor;
  clone?: (t: Tensor) => Tensor;
} = {};

/** A leaf's .grad must own a dense buffer (optimizers update it in place). */
function isDense(g: Tensor): boolean { return g.offset === 0 && g.isContiguous() && g.storage.numel === g.numel; }

export function runBackward(root: Tensor, grad: Tensor | undefined, opts: { retainGraph?: boolean }): void {
  if (!root.requiresGrad) throw new AutogradError('backward(): this tensor does not require grad (no input had requiresGrad, or it was computed under noGrad)');
  if (!grad) {
    if (root.numel !== 1) throw new AutogradError(`backward(): a gradient must be given for a non-scalar output of shape [${root.shape.join(', ')}]`);
    grad = autogradHooks.onesLike!(root);
  } else if (grad.shape.length !== root.shape.length || grad.shape.some((d, i) => d !== root.shape[i])) {
    throw new AutogradError(`backward(): gradient shape [${grad.shape.join(', ')}] differs from output shape [${root.shape.join(', ')}]`);
  }
  // Topological order over tensors reachable through gradFn.
  const order: Tensor[] = [];
  const seen = new Set<Tensor>();
  const stack: Array<[Tensor, number]> = [[root, 0]];
  seen.add(root);
  while (stack.length) {
    const top = stack[stack.length - 1]!;
    const [t, i] = top;
    const inputs = t.gradFn ? t.gradFn.inputs : [];
    if (i < inputs.length) {
      top[1] = i + 1;
      const inp = inputs[i];
      if (inp && !seen.has(inp)) { seen.add(inp); stack.push([inp, 0]); }
    } else {
      stack.pop();
      order.push(t);
    }
  }
  const prevMode = gradEnabled;
  gradEnabled = false;  // gradients of gradients are not recorded
  try {
    // Every tensor in `grads` is owned by this walk: disposed once consumed.
    const grads = new Map<Tensor, Tensor>();
    grads.set(root, autogradHooks.clone!(grad));
    const add = autogradHooks.add!;
    for (let k = order.length - 1; k >= 0; --k) {
      const t = order[k]!;
      const g = grads.get(t);
      if (!g) continue;
      grads.delete(t);
      const node = t.gradFn;
      if (!node) {
        if (!t.requiresGrad) { g.dispose(); continue; }
        // Leaf gradients outlive any tidy() scope the backward runs in: they belong to the leaf.
        if (t.grad) { const sum = add(t.grad, g); t.grad.dispose(); g.dispose(); t.grad = keep(sum); }
        else if (isDense(g)) t.grad = keep(g);
        else { t.grad = keep(autogradHooks.clone!(g)); g.dispose(); }
        continue;
      }
      const inGrads = node.backward(g);
      if (!inGrads.includes(g)) g.dispose();  // a node may pass its gradient straight through
      for (let j = 0; j < node.inputs.length; ++j) {
        const inp = node.inputs[j];
        const ig = inGrads[j];
        if (!inp || !ig) continue;
        const prev = grads.get(inp);
        if (prev) { grads.set(inp, add(prev, ig)); prev.dispose(); if (inGrads.indexOf(ig) === j) ig.dispose(); }
        else grads.set(inp, ig);
      }
      if (!opts.retainGraph) { node.release?.(); t.gradFn = null; }
    }
  } finally {
    gradEnabled = prevMode;
  }
}
