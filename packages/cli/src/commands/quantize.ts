// qdm quantize: Q-Diffusion-style post-training quantization of a model, written as a quantized
// checkpoint (@qdm/quant saveQuantized: packed codes, scales, recipe in metadata) that
// `qdm sample --quantized FILE` and `qdm eval --quantized FILE` run on the integer GEMM.
// Calibration is data-free: the full-precision model's own sampling trajectories. The report
// gives the quantized model's error against full precision per sampling step, on a trajectory
// with fresh noise (the calibration one would flatter it).
import { mkdirSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { sample, tensor, writeFileAtomic, type Module } from '@qdm/core';
import { quantize, saveQuantized, stepErrorReport, toIntegerExecution, type QuantRecipe } from '@qdm/quant';
import { UsageError, type CommandSpec, type ParsedOptions } from '../args.js';
import { DIGITS_GUIDANCE } from '@qdm/digits';
import { loadUnet, withSampler, type UNet } from '../pipeline.js';
import { Progress } from '../progress.js';

export const quantizeSpec: CommandSpec = {
  name: 'quantize',
  summary: 'post-training quantization (W8A8, W4A8, ...) calibrated on the model\'s own trajectories; writes a quantized checkpoint',
  usage: 'qdm quantize [--model digits|DIR] [--weights 8] [--acts 8] [--calibrator minmax] [--temporal] [--attention 8] --out model.qdm.safetensors',
  options: {
    model: { type: 'string', description: "'digits' or a diffusers model folder", default: 'digits' },
    weights: { type: 'integer', description: 'weight bits (per output channel)', default: 8, min: 2, max: 8 },
    acts: { type: 'integer', description: 'activation bits (per tensor); 0 keeps activations in full precision', default: 8, min: 0, max: 8 },
    calibrator: { type: 'string', description: 'activation range calibrator', default: 'minmax', choices: ['minmax', 'running', 'percentile', 'mse'] },
    attention: { type: 'integer', description: 'also quantize the attention products\' operands (Q, K, V and the softmax output) to this many bits, per tensor; 0: full precision', default: 0, min: 0, max: 8 },
    temporal: { type: 'boolean', description: 'one activation step size per sampling step (EfficientDM-style); the checkpoint then fixes the step count' },
    'calib-n': { type: 'integer', description: 'calibration trajectories (one per class label for class-conditional models)', default: 10, min: 1, max: 1024 },
    steps: { type: 'integer', description: 'sampling steps of the calibration and report trajectories', default: 20, min: 1, max: 1000 },
    scheduler: { type: 'string', description: 'sampler for the trajectories', default: 'ddim', choices: ['ddpm', 'ddim', 'pndm', 'dpm++', 'euler', 'euler-a', 'unipc'] },
    guidance: { type: 'number', description: 'classifier-free guidance scale of the trajectories', default: DIGITS_GUIDANCE, min: 0 },
    seed: { type: 'integer', description: 'seed of the calibration noise (the report uses seed + 1)', default: 1234 },
    out: { type: 'string', description: 'quantized checkpoint to write (.safetensors)' },
    report: { type: 'string', description: 'folder for the JSON and Markdown report', default: 'qdm-quantize' },
  },
};

export async function runQuantize(opts: ParsedOptions): Promise<void> {
  const out = opts.out as string | undefined;
  if (!out) throw new UsageError('qdm quantize: --out FILE is required (the quantized checkpoint to write)');
  if (!out.endsWith('.safetensors')) throw new UsageError(`qdm quantize: --out must end in .safetensors, got '${out}'`);
  const wBits = opts.weights as number, aBits = opts.acts as number;
  if (aBits !== 0 && aBits < 2) throw new UsageError('qdm quantize: --acts must be 0 (full precision) or 2..8');
  const attBits = opts.attention as number;
  if (attBits !== 0 && attBits < 2) throw new UsageError('qdm quantize: --attention must be 0 (full precision) or 2..8');
  const steps = opts.steps as number;
  const { unet, scheduler } = await loadUnet(opts.model as string);
  const { unet: reference } = await loadUnet(opts.model as string);
  const sched = withSampler(scheduler, opts.scheduler as string);
  const classes = Number(unet.config.num_class_embeds ?? 0);
  const n = opts['calib-n'] as number;
  // The trajectories: class-conditional models get labels 0..n-1 (cycled) against the null class (the last embedding).
  const run = (model: Module, seed: number, progress?: Progress) => {
    const labels = Array.from({ length: n }, (_, i) => (classes ? i % (classes - 1) : 0));
    return sample({
      unet: model as UNet, scheduler: sched.clone(), steps, batch: n, seed, guidanceScale: classes ? (opts.guidance as number) : 1,
      ...(classes ? { cond: { classLabels: tensor(labels, { dtype: 'i64' }) }, uncond: { classLabels: tensor(labels.map(() => classes - 1), { dtype: 'i64' }) } } : {}),
      onProgress: progress ? (d) => progress.update(d) : undefined,
    });
  };
  const recipe: QuantRecipe = {
    // 8-bit weights symmetric so that every layer can run on the integer GEMM (its weight operand is [-127, 127]).
    weights: { bits: wBits, granularity: 'channel', ...(wBits === 8 ? { symmetric: true } : {}) },
    activations: aBits ? { bits: aBits, granularity: 'tensor', ...(opts.temporal ? { timestepGroups: steps } : {}) } : null,
    calibrator: opts.calibrator as QuantRecipe['calibrator'],
    ...(attBits ? {
      attention: { bits: attBits, granularity: 'tensor' as const, ...(opts.temporal ? { timestepGroups: steps } : {}) },
      // The softmax output lies in [0, 1]: unsigned codes.
      attentionProbs: { bits: attBits, granularity: 'tensor' as const, signed: false, ...(opts.temporal ? { timestepGroups: steps } : {}) },
    } : {}),
  };
  const t0 = Date.now();
  const calib = new Progress('calibrating', steps);
  const { summary } = await quantize(unet, recipe, { calibration: (m: Module) => run(m, opts.seed as number, calib) });
  const integer = toIntegerExecution(unet);
  mkdirSync(dirname(out), { recursive: true });
  saveQuantized(unet, out, { recipe, baseConfig: unet.config });
  const calibSeconds = (Date.now() - t0) / 1000;
  const rep = new Progress('per-step report', steps);
  const perStep = await stepErrorReport(reference, unet, (paired) => run(paired, (opts.seed as number) + 1, rep));
  const errs = perStep.filter((e) => e.stepIndex >= 0);
  const mean = errs.reduce((s, e) => s + e.relError, 0) / Math.max(errs.length, 1);
  const bytes = statSync(out).size;
  console.log(`wrote ${out}: ${(bytes / 2 ** 20).toFixed(2)} MB, ${summary.layers.length} layers quantized (W${wBits}A${aBits || 'fp'}), ${integer.integer.length} on the integer GEMM, ${integer.fakeQuant.length} fake-quant; ${calibSeconds.toFixed(1)} s`);
  for (const f of integer.fakeQuant) console.log(`  fake-quant: ${f.name}: ${f.reason}`);
  console.log(`output error vs full precision on the full-precision trajectory (||q - fp|| / ||fp||): mean ${mean.toFixed(4)} over ${errs.length} steps`);
  console.log(`  per step: ${errs.map((e) => e.relError.toFixed(3)).join(' ')}`);
  const md = [
    `# qdm quantize: ${opts.model} W${wBits}A${aBits || 'fp'}`, '',
    `Checkpoint \`${out}\` (${(bytes / 2 ** 20).toFixed(2)} MB); ${summary.layers.length} layers quantized, ${integer.integer.length} on the integer GEMM.`, '',
    '| step | relative error | cosine |', '| ---: | ---: | ---: |',
    ...errs.map((e) => `| ${e.stepIndex} | ${e.relError.toFixed(4)} | ${e.cosine.toFixed(5)} |`),
  ].join('\n');
  const dir = opts.report as string;
  mkdirSync(dir, { recursive: true });
  writeFileAtomic(join(dir, 'quantize.json'), JSON.stringify({ model: opts.model, recipe, checkpoint: out, bytes, layers: summary.layers, integer, perStep: errs, calibSeconds }, null, 2) + '\n');
  writeFileAtomic(join(dir, 'quantize.md'), md + '\n');
  console.log(`report: ${join(dir, 'quantize.md')}`);
}
