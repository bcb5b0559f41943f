// The sampling loop: one loop for every model family and scheduler, with classifier-free
// guidance (batched: one model call per step), LCM guidance embeddings, per-step hooks, a
// progress callback, cancellation, and an optional trajectory. Each model call runs inside a
// forward context carrying the step index, so timestep-aware layers need no call counting.
import { ArgumentError, QdmError } from '../errors.js';
import { noGrad } from '../autograd.js';
import { Tensor } from '../tensor.js';
import { Generator } from '../random.js';
import { randn, tensor } from '../ops/creation.js';
import { add, mul, sub, affine } from '../ops/elementwise.js';
import { concat, chunk } from '../ops/indexing.js';
import { withContext } from '../nn/context.js';
import type { Module } from '../nn/module.js';
import { keep, tidy } from '../memory.js';

/** What the loop needs of a scheduler (every scheduler in schedulers/ satisfies it). */
export interface SamplingScheduler {
  setTimesteps(numInferenceSteps: number): void;
  readonly timesteps: ArrayLike<number>;
  readonly initNoiseSigma: number;
  scaleModelInput(sample: Tensor, t: number): Tensor;
  step(modelOutput: Tensor, t: number, sample: Tensor, opts?: { generator?: Generator; noise?: Tensor }): { prevSample: Tensor; predOriginalSample?: Tensor; denoised?: Tensor };
  readonly config?: Record<string, unknown>;
}

/** Conditioning for one model call. */
export interface ModelConditioning {
  classLabels?: Tensor;
  encoderHiddenStates?: Tensor;
  timestepCond?: Tensor;
  addedCondKwargs?: { textEmbeds: Tensor; timeIds: Tensor };
}

export interface StepInfo { stepIndex: number; numSteps: number; timestep: number; sample: Tensor; modelOutput: Tensor; prevSample: Tensor; predOriginalSample?: Tensor }

export interface SampleOptions {
  unet: Module & { config?: Record<string, unknown> };
  scheduler: SamplingScheduler;
  steps: number;
  batch?: number;
  /** Seed for the initial noise and the scheduler's noise (ignored when generator is given). */
  seed?: number;
  generator?: Generator;
  /** Initial latents (else drawn from the generator, scaled by initNoiseSigma). */
  latents?: Tensor;
  /** Sample shape [C, H, W] (default from the model config: in_channels, sample_size). */
  sampleShape?: [number, number, number];
  /** Classifier-free guidance scale; > 1 enables CFG with the unconditional inputs. */
  guidanceScale?: number;
  cond?: ModelConditioning;
  /** The unconditional inputs for CFG (e.g. the null class label, or empty-prompt embeddings). */
  uncond?: ModelConditioning;
  /** LCM: embed w = guidanceScale - 1 as timestep_cond instead of running CFG. */
  guidanceEmbedding?: boolean;
  hooks?: {
    /** Called before each model call; may return replacement model inputs. */
    beforeStep?(info: { stepIndex: number; numSteps: number; timestep: number; sample: Tensor }): void;
    afterStep?(info: StepInfo): void;
  };
  onProgress?(done: number, total: number): void;
  signal?: AbortSignal;
  returnTrajectory?: boolean;
}

export interface SampleResult { samples: Tensor; trajectory?: Tensor[]; timesteps: number[] }

/** Sinusoidal embedding of w * 1000 (LCM's guidance-scale embedding; dim even). */
export function guidanceScaleEmbedding(w: number[], dim: number): Tensor {
  const half = dim / 2;
  const scale = Math.log(10000) / (half - 1);
  const out: number[] = [];
  for (const wi of w) {
    const v = wi * 1000;
    const s: number[] = [], c: number[] = [];
    for (let i = 0; i < half; ++i) { const a = v * Math.exp(-i * scale); s.push(Math.sin(a)); c.push(Math.cos(a)); }
    out.push(...s, ...c);
    if (dim % 2) out.push(0);
  }
  return tensor(out, { shape: [w.length, dim] });
}

function repeatBatch(t: Tensor | undefined, batch: number): Tensor | undefined {
  if (!t) return t;
  if (t.shape[0] === batch) return t;
  if (t.shape[0] === 1) return t.expand([batch, ...t.shape.slice(1)]).contiguous();
  throw new ArgumentError(`sample(): conditioning batch ${t.shape[0]} does not match batch ${batch}`);
}

function concatCond(a: ModelConditioning, b: ModelConditioning): ModelConditioning {
  const cat = (x?: Tensor, y?: Tensor) => (x && y ? concat([x, y], 0) : x ?? y);
  return {
    classLabels: cat(a.classLabels, b.classLabels),
    encoderHiddenStates: cat(a.encoderHiddenStates, b.encoderHiddenStates),
    timestepCond: cat(a.timestepCond, b.timestepCond),
    addedCondKwargs: a.addedCondKwargs && b.addedCondKwargs
      ? { textEmbeds: concat([a.addedCondKwargs.textEmbeds, b.addedCondKwargs.textEmbeds], 0), timeIds: concat([a.addedCondKwargs.timeIds, b.addedCondKwargs.timeIds], 0) }
      : a.addedCondKwargs,
  };
}

/** Calls a diffusers-style U-Net with conditioning (UNet2DModel takes class labels only). */
export function callUnet(unet: Module, x: Tensor, t: number, cond: ModelConditioning): Tensor {
  const out = unet.call(x, t, cond);
  return out instanceof Tensor ? out : (out as { sample: Tensor }).sample;
}

export async function sample(opts: SampleOptions): Promise<SampleResult> {
  const { unet, scheduler, steps } = opts;
  if (!Number.isInteger(steps) || steps < 1) throw new ArgumentError(`sample(): steps must be a positive integer, got ${steps}`);
  const cfgScale = opts.guidanceScale ?? 1;
  const lcm = opts.guidanceEmbedding ?? false;
  const useCfg = !lcm && cfgScale !== 1;
  if (useCfg && !opts.uncond) throw new ArgumentError('sample(): guidanceScale != 1 needs the unconditional inputs (uncond)');
  const cfg = unet.config ?? {};
  const gen = opts.generator ?? new Generator(opts.seed ?? 0);
  const batch = opts.batch ?? opts.latents?.shape[0] ?? 1;
  const shape = opts.sampleShape ?? [
    Number(cfg.in_channels ?? 4),
    ...(Array.isArray(cfg.sample_size) ? (cfg.sample_size as number[]) : [Number(cfg.sample_size ?? 64), Number(cfg.sample_size ?? 64)]),
  ] as [number, number, number];

  scheduler.setTimesteps(steps);
  const timesteps = Array.from(scheduler.timesteps);
  const numTrain = Number(scheduler.config?.num_train_timesteps ?? 1000);

  let x = opts.latents ? opts.latents : randn([batch, ...shape], { generator: gen });
  if (scheduler.initNoiseSigma !== 1) { const s = affine(x, scheduler.initNoiseSigma, 0); if (x !== opts.latents) x.dispose(); x = s; }

  // Conditioning, repeated to the batch, and the CFG batch [uncond, cond].
  const rep = (c?: ModelConditioning): ModelConditioning => ({
    classLabels: repeatBatch(c?.classLabels, batch), encoderHiddenStates: repeatBatch(c?.encoderHiddenStates, batch),
    timestepCond: repeatBatch(c?.timestepCond, batch),
    addedCondKwargs: c?.addedCondKwargs ? { textEmbeds: repeatBatch(c.addedCondKwargs.textEmbeds, batch)!, timeIds: repeatBatch(c.addedCondKwargs.timeIds, batch)! } : undefined,
  });
  let cond = rep(opts.cond);
  if (lcm) {
    const dim = Number(cfg.time_cond_proj_dim ?? 256);
    cond = { ...cond, timestepCond: guidanceScaleEmbedding(new Array(batch).fill(cfgScale - 1), dim) };
  }
  const modelCond = useCfg ? concatCond(rep(opts.uncond), cond) : cond;

  const trajectory: Tensor[] = [];
  for (let i = 0; i < timesteps.length; ++i) {
    if (opts.signal?.aborted) throw new QdmError('QDM_CANCELLED', `sample(): cancelled at step ${i} of ${timesteps.length}`);
    const t = timesteps[i]!;
    opts.hooks?.beforeStep?.({ stepIndex: i, numSteps: timesteps.length, timestep: t, sample: x });
    const next = noGrad(() => tidy(() => {
      const xin = scheduler.scaleModelInput(x, t);
      const modelIn = useCfg ? concat([xin, xin], 0) : xin;
      let out = withContext({ stepIndex: i, numSteps: timesteps.length, timestep: t, numTrainTimesteps: numTrain },
        () => callUnet(unet, modelIn, t, modelCond));
      if (useCfg) {
        const [u, c] = chunk(out, 2, 0) as [Tensor, Tensor];
        out = add(u, mul(sub(c, u), cfgScale));
      }
      const r = scheduler.step(out, t, x, { generator: gen });
      opts.hooks?.afterStep?.({ stepIndex: i, numSteps: timesteps.length, timestep: t, sample: x, modelOutput: out, prevSample: r.prevSample, predOriginalSample: r.predOriginalSample });
      return keep(r.prevSample);
    }));
    if (opts.returnTrajectory) trajectory.push(x);
    else if (x !== opts.latents) x.dispose();
    x = next;
    opts.onProgress?.(i + 1, timesteps.length);
    // Yield to the event loop so that progress renders and an abort signal can arrive.
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
  return { samples: x, trajectory: opts.returnTrajectory ? trajectory : undefined, timesteps };
}
