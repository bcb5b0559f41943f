// The forward context: per-call information that timestep-aware layers need (the sampling
// step index for temporal quantizers, the timestep for expert selection, a cache for
// DeepCache), passed down without global mutable state leaking between calls: the sampler
// (or a training loop) wraps each model call in withContext().

export interface ForwardContext {
  /** Index of the current sampling step, 0 for the first step (the noisiest). */
  stepIndex?: number;
  /** Number of sampling steps of the run. */
  numSteps?: number;
  /** The diffusion timestep of this call (first batch element's, as the references use). */
  timestep?: number;
  /** Number of training timesteps of the model's noise schedule (1000 usually). */
  numTrainTimesteps?: number;
  /** Free-form per-call state for method packages (namespaced keys, e.g. 'cache'). */
  [key: string]: unknown;
}

const stack: ForwardContext[] = [];

/** Runs fn with ctx merged over the enclosing context. */
export function withContext<T>(ctx: ForwardContext, fn: () => T): T {
  const merged = { ...(stack[stack.length - 1] ?? {}), ...ctx };
  stack.push(merged);
  try { return fn(); } finally { stack.pop(); }
}

/** The innermost context, or an empty one. */
export function currentContext(): ForwardContext { return stack[stack.length - 1] ?? {}; }
