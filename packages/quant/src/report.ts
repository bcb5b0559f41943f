// Per-step quality of a quantized model against its full-precision original. Diffusion models
// see very different activations at different timesteps (Q-Diffusion's observation), so a
// single average hides where quantization hurts: the report keeps one figure per sampling step.
//
// Both models are evaluated on the SAME inputs: a paired model runs the reference's trajectory
// and, at every call, also the quantized model on that call's inputs (same forward context, so
// temporal step sizes pick their entry); it returns the reference's output, so the trajectory is
// the full-precision one and errors do not compound. Compounded error (sampling with the
// quantized model end to end) is what the final-sample metrics of @qdm/eval measure.
import { Module, Tensor, currentContext, sub } from '@qdm/core';

export interface StepError {
  stepIndex: number;
  /** ||q - ref|| / ||ref|| over every call at this step (summed squares, then the ratio). */
  relError: number;
  /** Cosine similarity of the flattened outputs. */
  cosine: number;
  calls: number;
}

function outputTensor(out: unknown): Tensor {
  if (out instanceof Tensor) return out;
  const s = (out as { sample?: unknown } | null)?.sample;
  if (s instanceof Tensor) return s;
  throw new TypeError('stepErrorReport: the model returned neither a tensor nor { sample }');
}

interface Acc { diff2: number; ref2: number; q2: number; dot: number; calls: number }

class PairedModel extends Module {
  readonly acc = new Map<number, Acc>();
  config?: Record<string, unknown>;
  constructor(private readonly reference: Module, private readonly quantized: Module) {
    super();
    this.config = (reference as { config?: Record<string, unknown> }).config;
  }
  forward(...args: unknown[]): unknown {
    const out = this.reference.call(...args);
    const ref = outputTensor(out);
    const q = outputTensor(this.quantized.call(...args));
    const r = ref.data(), qd = q.data();
    const d = sub(q, ref);
    const dd = d.data();
    d.dispose();
    q.dispose();
    let diff2 = 0, ref2 = 0, q2 = 0, dot = 0;
    for (let i = 0; i < r.length; i++) {
      const a = Number(r[i]), b = Number(qd[i]), e = Number(dd[i]);
      diff2 += e * e; ref2 += a * a; q2 += b * b; dot += a * b;
    }
    const step = currentContext().stepIndex ?? -1;
    const s = this.acc.get(step) ?? { diff2: 0, ref2: 0, q2: 0, dot: 0, calls: 0 };
    s.diff2 += diff2; s.ref2 += ref2; s.q2 += q2; s.dot += dot; s.calls += 1;
    this.acc.set(step, s);
    return out;
  }
}

/**
 * Runs `run` (typically a sample() call) with a model that evaluates `reference` and `quantized`
 * on the same inputs at every call, and returns the error of the quantized outputs per step
 * (stepIndex from the forward context; -1 for calls made outside a sampler).
 */
export async function stepErrorReport(reference: Module, quantized: Module, run: (paired: Module) => unknown): Promise<StepError[]> {
  const paired = new PairedModel(reference, quantized);
  // sample() turns gradient recording off for its own steps; an async body cannot be wrapped in noGrad.
  await run(paired);
  return [...paired.acc.entries()].sort((a, b) => a[0] - b[0]).map(([stepIndex, s]) => ({
    stepIndex,
    relError: Math.sqrt(s.diff2 / Math.max(s.ref2, 1e-30)),
    cosine: s.dot / Math.max(Math.sqrt(s.ref2 * s.q2), 1e-30),
    calls: s.calls,
  }));
}
