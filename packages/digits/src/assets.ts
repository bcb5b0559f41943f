// Where the shipped models live and how to load them. The U-Net and its scheduler are a
// diffusers pipeline folder (unet/, scheduler/), so they also load in diffusers; the
// classifier and the reference feature statistics are plain safetensors files.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { QdmError, loadModel, loadScheduler, loadSafetensors, type Scheduler, UNet2DModel, type Device, type DType } from '@qdm/core';
import { DigitClassifier } from './classifier.js';

/** packages/digits/assets (dist/ and src/ both sit one level below the package root). */
export const ASSETS_DIR = process.env.QDM_DIGITS_ASSETS ?? fileURLToPath(new URL('../assets/', import.meta.url));
export const UNET_DIR = join(ASSETS_DIR, 'unet');
export const SCHEDULER_DIR = join(ASSETS_DIR, 'scheduler');
export const CLASSIFIER_FILE = join(ASSETS_DIR, 'classifier', 'model.safetensors');
export const REFERENCE_STATS_FILE = join(ASSETS_DIR, 'classifier', 'reference_stats.safetensors');

function need(path: string, what: string): void {
  if (!existsSync(path)) {
    throw new QdmError('QDM_ASSET_MISSING', `the embedded ${what} is missing at ${path}; rebuild it with: pnpm --filter @qdm/digits train`);
  }
}

export async function loadDigitsUnet(opts: { device?: Device; dtype?: DType } = {}): Promise<UNet2DModel> {
  need(join(UNET_DIR, 'config.json'), 'digits U-Net');
  return (await loadModel(UNET_DIR, { variant: 'fp16', dtype: opts.dtype ?? 'f32', device: opts.device ?? 'cpu' })) as UNet2DModel;
}

export async function loadDigitsScheduler(): Promise<Scheduler> {
  need(join(SCHEDULER_DIR, 'scheduler_config.json'), 'digits scheduler config');
  return loadScheduler(SCHEDULER_DIR);
}

export function loadDigitsClassifier(): DigitClassifier {
  need(CLASSIFIER_FILE, 'digit classifier');
  const model = new DigitClassifier();
  model.loadStateDict(loadSafetensors(CLASSIFIER_FILE, { dtype: 'f32' }));
  return model.eval();
}

/** Mean and covariance of the classifier's features over the held-out digits (the FID reference). */
export function loadReferenceStats(): { mu: Float64Array; sigma: Float64Array; d: number; n: number } {
  need(REFERENCE_STATS_FILE, 'reference feature statistics');
  const t = loadSafetensors(REFERENCE_STATS_FILE);
  const mu = Float64Array.from(t.mu!.data() as Float32Array);
  const sigma = Float64Array.from(t.sigma!.data() as Float32Array);
  const n = Number(t.count!.item());
  return { mu, sigma, d: mu.length, n };
}
