// Builds the shipped assets (the command behind `pnpm --filter @qdm/digits train`): the digit
// classifier with the held-out reference statistics, then the digits U-Net with its scheduler
// config and training log. Deterministic for given options.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { saveModel, saveSafetensors, tensor, writeFileAtomic, buildInfo } from '@qdm/core';
import { gaussianStats } from '@qdm/eval';
import { splitDigits } from './dataset.js';
import { trainClassifier, trainDigitsUnet, type TrainLog } from './train.js';
import { heldOutFeatures } from './evaluate.js';
import { DIGITS_SCHEDULER_CONFIG } from './configs.js';

export interface BuildOptions { out: string; classifierSteps: number; unetSteps: number; batch: number; seed: number; log?: (line: string) => void }

const printer = (what: string, log: (s: string) => void) => (l: TrainLog) => log(`${what} step ${l.step}: loss ${l.loss.toFixed(4)} lr ${l.lr.toExponential(2)} ${l.seconds.toFixed(0)}s`);

export function buildClassifierAssets(o: BuildOptions): TrainLog[] {
  const log = o.log ?? console.log;
  const { train, heldOut } = splitDigits();
  mkdirSync(join(o.out, 'classifier'), { recursive: true });
  const cls = trainClassifier(train, { steps: o.classifierSteps, seed: o.seed + 1, onLog: printer('classifier', log) });
  saveSafetensors(join(o.out, 'classifier', 'model.safetensors'), cls.model.stateDict(), { format: 'pt' });
  const stats = gaussianStats(heldOutFeatures(cls.model, heldOut.n));
  saveSafetensors(join(o.out, 'classifier', 'reference_stats.safetensors'), {
    mu: tensor(Float32Array.from(stats.mu)), sigma: tensor(Float32Array.from(stats.sigma), { shape: [stats.d, stats.d] }), count: tensor([stats.n], { dtype: 'i64' }),
  });
  writeFileAtomic(join(o.out, 'classifier', 'train-log.json'), JSON.stringify({ command: commandLine(o), machine: machine(), log: cls.log }, null, 1) + '\n');
  return cls.log;
}

export async function buildUnetAssets(o: BuildOptions): Promise<TrainLog[]> {
  const log = o.log ?? console.log;
  const { train } = splitDigits();
  const { unet, log: entries } = trainDigitsUnet(train, { steps: o.unetSteps, batch: o.batch, seed: o.seed, onLog: printer('unet', log), logEvery: 50 });
  await saveModel(unet, join(o.out, 'unet'), { variant: 'fp16' });
  mkdirSync(join(o.out, 'scheduler'), { recursive: true });
  writeFileAtomic(join(o.out, 'scheduler', 'scheduler_config.json'), JSON.stringify(DIGITS_SCHEDULER_CONFIG, null, 2) + '\n');
  writeFileAtomic(join(o.out, 'unet', 'train-log.json'), JSON.stringify({ command: commandLine(o), machine: machine(), log: entries }, null, 1) + '\n');
  return entries;
}

function commandLine(o: BuildOptions): string {
  return `pnpm --filter @qdm/digits train -- --classifier-steps ${o.classifierSteps} --unet-steps ${o.unetSteps} --batch ${o.batch} --seed ${o.seed}`;
}
function machine(): Record<string, unknown> { const b = buildInfo(); return { isa: b.isa, threads: b.threads, node: process.version }; }
