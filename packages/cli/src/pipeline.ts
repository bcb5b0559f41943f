// Shared by sample, eval and demo: load a model folder (or the embedded digits model), pick a
// scheduler, and draw class-conditional samples with classifier-free guidance.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import {
  Tensor, tensor, sample, concat, manualSeed, UNet2DModel, loadModel, loadScheduler, schedulerFromConfig, memoryStats, resetPeakMemory,
  type Scheduler, type Module,
} from '@qdm/core';
import { loadDigitsUnet, loadDigitsScheduler, NULL_CLASS, DIGITS_UNET_CONFIG, DIGITS_GUIDANCE } from '@qdm/digits';
import { loadQuantized } from '@qdm/quant';
import { UsageError, type OptionSpec } from './args.js';
import { Progress } from './progress.js';

export const SCHEDULERS = ['ddpm', 'ddim', 'pndm', 'dpm++', 'euler', 'euler-a', 'unipc', 'lcm'] as const;
const CLASS_NAMES: Record<string, string> = {
  ddpm: 'DDPMScheduler', ddim: 'DDIMScheduler', pndm: 'PNDMScheduler', 'dpm++': 'DPMSolverMultistepScheduler',
  euler: 'EulerDiscreteScheduler', 'euler-a': 'EulerAncestralDiscreteScheduler', unipc: 'UniPCMultistepScheduler', lcm: 'LCMScheduler',
};

export type UNet = Module & { config: Record<string, unknown> };

/** The sampling options every sampling command takes. */
export const SAMPLING_OPTIONS: Record<string, OptionSpec> = {
  steps: { type: 'integer', description: 'denoising steps', default: 25, min: 1, max: 1000 },
  scheduler: { type: 'string', description: 'sampling algorithm', default: 'ddim', choices: SCHEDULERS },
  guidance: { type: 'number', description: 'classifier-free guidance scale (the digits model samples best at 1.5)', default: DIGITS_GUIDANCE, min: 0 },
  seed: { type: 'integer', description: 'random seed', default: 0 },
  batch: { type: 'integer', description: 'samples per model call', default: 50, min: 1 },
  quantized: { type: 'string', description: 'a quantized checkpoint of the model (qdm quantize --out), run on the integer GEMM' },
};

/** 'digits' (the embedded model), 'digits-untrained' (its architecture, random weights) or a diffusers model folder (a pipeline folder with unet/ also works). */
export async function loadUnet(model: string, quantized?: string): Promise<{ unet: UNet; scheduler: Scheduler }> {
  const loaded = await loadFloatUnet(model);
  if (!quantized) return loaded;
  if (!existsSync(quantized)) throw new UsageError(`qdm: no quantized checkpoint at '${quantized}' (write one with qdm quantize --out FILE)`);
  // The checkpoint replaces the float layers by quantized ones and runs them on the integer GEMM.
  loadQuantized(quantized, { model: loaded.unet, integer: true });
  return loaded;
}

async function loadFloatUnet(model: string): Promise<{ unet: UNet; scheduler: Scheduler }> {
  if (model === 'digits') return { unet: (await loadDigitsUnet()) as UNet, scheduler: await loadDigitsScheduler() };
  // The untrained baseline of the embedded model: its architecture with seeded random weights.
  if (model === 'digits-untrained') { manualSeed(0); return { unet: new UNet2DModel(DIGITS_UNET_CONFIG) as UNet, scheduler: await loadDigitsScheduler() }; }
  const dir = existsSync(join(model, 'unet', 'config.json')) ? join(model, 'unet') : model;
  if (!existsSync(join(dir, 'config.json'))) throw new UsageError(`qdm: no model at '${model}' (expected a diffusers folder with config.json, or 'digits')`);
  const hasFp16 = existsSync(join(dir, 'diffusion_pytorch_model.fp16.safetensors')) && !existsSync(join(dir, 'diffusion_pytorch_model.safetensors'));
  const unet = (await loadModel(dir, { variant: hasFp16 ? 'fp16' : undefined })) as UNet;
  const schedDir = [join(model, 'scheduler'), join(dir, '..', 'scheduler'), dir].find((d) => existsSync(join(d, 'scheduler_config.json')));
  const scheduler = schedDir ? await loadScheduler(schedDir) : schedulerFromConfig({ _class_name: 'DDPMScheduler' });
  return { unet, scheduler };
}

/** The same noise schedule, sampled by another algorithm. */
export function withSampler(base: Scheduler, name: string | undefined): Scheduler {
  if (!name) return base;
  const cls = CLASS_NAMES[name];
  if (!cls) throw new UsageError(`qdm: unknown scheduler '${name}' (one of ${SCHEDULERS.join(', ')})`);
  return schedulerFromConfig({ ...base.config, _class_name: cls });
}

export interface GenerateOptions { labels: number[]; steps: number; guidance: number; seed: number; batch: number; label?: string; quiet?: boolean }
export interface Generated { samples: Tensor; seconds: number; peakBytes: number }

/** Samples one image per label (class-conditional models) or labels.length images. */
export async function generate(unet: UNet, scheduler: Scheduler, opts: GenerateOptions): Promise<Generated> {
  const conditional = unet.config.num_class_embeds != null || unet.config.class_embed_type != null;
  const parts: Tensor[] = [];
  const n = opts.labels.length;
  const progress = opts.quiet ? null : new Progress(opts.label ?? 'sampling', n * opts.steps);
  resetPeakMemory();
  const t0 = performance.now();
  for (let at = 0; at < n; at += opts.batch) {
    const labels = opts.labels.slice(at, at + opts.batch);
    const b = labels.length;
    const r = await sample({
      unet, scheduler: scheduler.clone(), steps: opts.steps, batch: b, seed: opts.seed + at,
      guidanceScale: conditional ? opts.guidance : 1,
      cond: conditional ? { classLabels: tensor(labels, { dtype: 'i64' }) } : undefined,
      uncond: conditional ? { classLabels: tensor(new Array(b).fill(NULL_CLASS), { dtype: 'i64' }) } : undefined,
      onProgress: (done) => progress?.update(at * opts.steps + done * b),
    });
    parts.push(r.samples);
  }
  const seconds = (performance.now() - t0) / 1000;
  const samples = parts.length === 1 ? parts[0]! : concat(parts, 0);
  return { samples, seconds, peakBytes: memoryStats('cpu').peakBytes };
}

/** n labels cycling 0..classes-1 (balanced classes). */
export function balancedLabels(n: number, classes = 10): number[] { return Array.from({ length: n }, (_, i) => i % classes); }
