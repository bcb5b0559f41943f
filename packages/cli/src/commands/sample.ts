import { join } from 'node:path';
import { mkdirSync } from 'node:fs';
import { saveImageGrid } from '@qdm/core';
import { UsageError, type CommandSpec, type ParsedOptions } from '../args.js';
import { loadUnet, withSampler, generate, balancedLabels, SAMPLING_OPTIONS } from '../pipeline.js';

export const sampleSpec: CommandSpec = {
  name: 'sample',
  summary: 'draw samples from a model (default: the embedded digits model) and write a PNG grid',
  usage: 'qdm sample [--model digits|DIR] [--labels 0,1,2] [--n 16] [--steps 25] [--out samples.png]',
  options: {
    model: { type: 'string', description: "'digits' or a diffusers model folder", default: 'digits' },
    labels: { type: 'list', description: 'class labels to sample (default: 0..9 cycled)' },
    n: { type: 'integer', description: 'number of samples when no labels are given', default: 20, min: 1, max: 10000 },
    ...SAMPLING_OPTIONS,
    out: { type: 'string', description: 'PNG grid to write', default: 'samples.png' },
  },
};

export async function runSample(opts: ParsedOptions): Promise<void> {
  const labels = opts.labels ? (opts.labels as string[]).map((s) => {
    const v = Number(s);
    if (!Number.isInteger(v) || v < 0) throw new UsageError(`qdm sample: --labels must be non-negative integers, got '${s}'`);
    return v;
  }) : balancedLabels(opts.n as number);
  const { unet, scheduler } = await loadUnet(opts.model as string, opts.quantized as string | undefined);
  const classes = Number(unet.config.num_class_embeds ?? 0);
  if (classes && labels.some((l) => l >= classes)) throw new UsageError(`qdm sample: the model has ${classes} class embeddings; labels must be below that`);
  const sched = withSampler(scheduler, opts.scheduler as string);
  const r = await generate(unet, sched, { labels, steps: opts.steps as number, guidance: opts.guidance as number, seed: opts.seed as number, batch: opts.batch as number });
  const out = opts.out as string;
  mkdirSync(join(out, '..'), { recursive: true });
  await saveImageGrid(out, r.samples, { nrow: Math.min(10, labels.length) });
  console.log(`wrote ${out}: ${labels.length} samples, ${opts.steps} steps (${opts.scheduler}), ${r.seconds.toFixed(1)} s`);
}
