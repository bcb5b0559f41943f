// The README's main job: on the embedded digits model, sample at full precision, then with
// each efficiency method that has landed, and print one table of quality, speed and memory.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { saveImageGrid, getNumThreads, byteSize, type Tensor } from '@qdm/core';
import { loadDigitsClassifier, loadReferenceStats, evaluateDigits, heldOutFeatures, DIGITS_GUIDANCE } from '@qdm/digits';
import { mseAndPsnr } from '@qdm/eval';
import type { CommandSpec, ParsedOptions } from '../args.js';
import { loadUnet, withSampler, generate, balancedLabels, type UNet } from '../pipeline.js';
import { writeReport, markdownTable, type ReportRow } from '../report.js';
import { demoVariants } from '../variants.js';

export const demoSpec: CommandSpec = {
  name: 'demo',
  summary: 'the end-to-end demo: full precision vs caching (and quantization) on the embedded digits model',
  usage: 'qdm demo [--n 100] [--steps 20] [--out qdm-demo]',
  options: {
    n: { type: 'integer', description: 'samples per variant (balanced over the 10 digits)', default: 100, min: 20, max: 10000 },
    steps: { type: 'integer', description: 'DDIM steps', default: 20, min: 2, max: 1000 },
    guidance: { type: 'number', description: 'classifier-free guidance scale', default: DIGITS_GUIDANCE, min: 0 },
    seed: { type: 'integer', description: 'random seed (the same noise for every variant)', default: 0 },
    batch: { type: 'integer', description: 'samples per model call', default: 50, min: 1 },
    variants: { type: 'list', description: 'which variants to run (default: all)', choices: demoVariants().map((v) => v.name) },
    out: { type: 'string', description: 'folder for grids and the report', default: 'qdm-demo' },
  },
};

const weightsMB = (unet: UNet) => unet.parameters().reduce((s, p) => s + byteSize(p.dtype, p.numel), 0) / 2 ** 20;

export async function runDemo(opts: ParsedOptions): Promise<void> {
  const out = opts.out as string;
  mkdirSync(out, { recursive: true });
  const labels = balancedLabels(opts.n as number);
  const settings = { n: opts.n, steps: opts.steps, scheduler: 'ddim', guidance: opts.guidance, seed: opts.seed, threads: getNumThreads() };
  console.log(`qdm demo: ${labels.length} digits per variant, ${opts.steps} DDIM steps, guidance ${opts.guidance}, ${getNumThreads()} threads`);
  const classifier = loadDigitsClassifier();
  const reference = loadReferenceStats();
  const real = heldOutFeatures(classifier);
  const wanted = new Set((opts.variants as string[] | undefined) ?? demoVariants().map((v) => v.name));
  const rows: ReportRow[] = [];
  let full: { samples: Tensor; seconds: number } | null = null;
  {
    // One untimed call first, so that the first row does not pay for warming up the JIT and the thread pool.
    const { unet, scheduler } = await loadUnet('digits');
    await generate(unet, withSampler(scheduler, 'ddim'), { labels: labels.slice(0, 2), steps: 1, guidance: opts.guidance as number, seed: 0, batch: 2, quiet: true });
  }
  for (const variant of demoVariants()) {
    if (!wanted.has(variant.name) && variant.name !== 'full precision') continue;
    const { unet, scheduler } = await loadUnet('digits');
    const sched = withSampler(scheduler, 'ddim');
    const prepared = await variant.prepare(unet, { steps: opts.steps as number, scheduler: sched });
    const r = await generate(prepared.unet, sched, {
      labels, steps: opts.steps as number, guidance: opts.guidance as number, seed: opts.seed as number, batch: opts.batch as number, label: variant.name,
    });
    const q = evaluateDigits(r.samples, labels, classifier, reference, real);
    const row: ReportRow = { variant: variant.name, ...q, seconds: r.seconds, peakMB: r.peakBytes / 2 ** 20, weightsMB: prepared.weightsMB ?? weightsMB(prepared.unet), note: prepared.note?.() };
    if (full) {
      const d = mseAndPsnr(r.samples.data() as Float32Array, full.samples.data() as Float32Array);
      row.psnrVsFull = d.psnr; row.mseVsFull = d.mse; row.speedup = full.seconds / r.seconds;
    } else {
      full = { samples: r.samples, seconds: r.seconds };
      row.speedup = 1;
    }
    rows.push(row);
    const file = join(out, `${variant.name.replace(/[^a-z0-9]+/gi, '-').toLowerCase()}.png`);
    await saveImageGrid(file, r.samples.slice(0, 0, Math.min(100, labels.length)), { nrow: 10 });
  }
  writeReport(out, 'demo', 'qdm demo on the embedded digits model', rows, settings);
  console.log('');
  console.log(markdownTable(rows));
  console.log(`\ngrids and report (demo.json, demo.md) in ${out}/`);
}
