import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { saveImageGrid } from '@qdm/core';
import { loadDigitsClassifier, loadReferenceStats, evaluateDigits, heldOutFeatures, splitDigits, batchOf, classify, FEATURE_DIM } from '@qdm/digits';
import { fid, precisionRecall } from '@qdm/eval';
import type { CommandSpec, ParsedOptions } from '../args.js';
import { loadUnet, withSampler, generate, balancedLabels, SAMPLING_OPTIONS } from '../pipeline.js';
import { writeReport, markdownTable, type ReportRow } from '../report.js';

export const evalSpec: CommandSpec = {
  name: 'eval',
  summary: 'sample a digits model and score it (FID, class accuracy, precision/recall) against held-out digits',
  usage: 'qdm eval [--model digits|DIR] [--n 200] [--steps 25] [--out qdm-eval]',
  options: {
    model: { type: 'string', description: "'digits', 'digits-untrained' (the baseline) or a diffusers folder of a 28x28 digits model", default: 'digits' },
    n: { type: 'integer', description: 'number of samples (balanced over the 10 digits)', default: 200, min: 20, max: 10000 },
    ...SAMPLING_OPTIONS,
    real: { type: 'boolean', description: 'also score real training digits (the floor of each metric)' },
    out: { type: 'string', description: 'folder for the report (JSON, Markdown) and the sample grid', default: 'qdm-eval' },
  },
};

export async function runEval(opts: ParsedOptions): Promise<void> {
  const out = opts.out as string;
  mkdirSync(out, { recursive: true });
  const classifier = loadDigitsClassifier();
  const reference = loadReferenceStats();
  const real = heldOutFeatures(classifier);
  const rows: ReportRow[] = [];
  if (opts.real) {
    const { train } = splitDigits();
    const n = opts.n as number;
    const { x, labels } = batchOf(train, Array.from({ length: n }, (_, i) => Math.floor((i * train.n) / n)));
    const { predictions, features } = classify(classifier, x);
    const pr = precisionRecall(real, { data: features, n, d: FEATURE_DIM });
    rows.push({ variant: 'real training digits', fid: fid(reference, { data: features, n, d: FEATURE_DIM }), classAccuracy: predictions.filter((p, i) => p === labels[i]).length / n, precision: pr.precision, recall: pr.recall });
  }
  const { unet, scheduler } = await loadUnet(opts.model as string, opts.quantized as string | undefined);
  const labels = balancedLabels(opts.n as number);
  const r = await generate(unet, withSampler(scheduler, opts.scheduler as string), { labels, steps: opts.steps as number, guidance: opts.guidance as number, seed: opts.seed as number, batch: opts.batch as number });
  const q = evaluateDigits(r.samples, labels, classifier, reference, real);
  rows.push({ variant: String(opts.model), ...q, seconds: r.seconds, peakMB: r.peakBytes / 2 ** 20 });
  await saveImageGrid(join(out, 'samples.png'), r.samples.slice(0, 0, Math.min(100, labels.length)), { nrow: 10 });
  writeReport(out, 'eval', 'qdm eval', rows, { model: opts.model, n: opts.n, steps: opts.steps, scheduler: opts.scheduler, guidance: opts.guidance, seed: opts.seed });
  console.log(markdownTable(rows));
  console.log(`report: ${join(out, 'eval.md')}`);
}
