// qdm's own trainers for the embedded models. Deterministic for a given seed: batches,
// noise, timesteps and label dropout all come from one counter-based generator.
import {
  Tensor, Generator, tensor, randn, rand, noGrad, tidy, keep, mseLoss, crossEntropy, optim, manualSeed,
  DDPMScheduler, UNet2DModel,
} from '@qdm/core';
import { DIGITS_UNET_CONFIG, DIGITS_SCHEDULER_CONFIG, NULL_CLASS } from './configs.js';
import { DigitClassifier, FEATURE_DIM } from './classifier.js';
import { IMAGE_SIZE, type DigitSet } from './dataset.js';

export interface TrainLog { step: number; loss: number; lr: number; seconds: number }

const PIXELS = IMAGE_SIZE * IMAGE_SIZE;

/** Images of the set at `indices`, scaled to [-1, 1], shape [B, 1, 28, 28], with their labels. */
export function batchOf(set: DigitSet, indices: number[]): { x: Tensor; labels: number[] } {
  const px = new Float32Array(indices.length * PIXELS);
  const labels: number[] = [];
  indices.forEach((k, i) => {
    const src = set.images.subarray(k * PIXELS, (k + 1) * PIXELS);
    for (let j = 0; j < PIXELS; ++j) px[i * PIXELS + j] = src[j]! * 2 - 1;
    labels.push(set.labels[k]!);
  });
  return { x: tensor(px, { shape: [indices.length, 1, IMAGE_SIZE, IMAGE_SIZE] }), labels };
}

function uniforms(n: number, gen: Generator): number[] {
  const t = rand([n], { generator: gen });
  const v = Array.from(t.data() as Float32Array);
  t.dispose();
  return v;
}

export interface UnetTrainOptions {
  steps: number;
  batch?: number;
  lr?: number;
  seed?: number;
  /** Probability of replacing the label by the null class (classifier-free guidance training). */
  labelDropout?: number;
  emaDecay?: number;
  warmupSteps?: number;
  onLog?(log: TrainLog): void;
  logEvery?: number;
}

/**
 * Trains the class-conditional digits U-Net: epsilon prediction on the DDPM linear schedule,
 * AdamW with warm-up and cosine decay, gradient clipping, and an EMA of the weights (returned
 * as the model to ship, as diffusers' training examples do).
 */
export function trainDigitsUnet(train: DigitSet, opts: UnetTrainOptions): { unet: UNet2DModel; log: TrainLog[] } {
  const seed = opts.seed ?? 0;
  manualSeed(seed);
  const gen = new Generator(seed).fork(7);
  const unet = new UNet2DModel(DIGITS_UNET_CONFIG);
  const scheduler = DDPMScheduler.fromConfig(DIGITS_SCHEDULER_CONFIG);
  const batch = opts.batch ?? 32;
  const params = unet.parameters();
  const opt = new optim.AdamW(params, { lr: opts.lr ?? 1.5e-3, weightDecay: 0 });
  const lrs = new optim.LRScheduler(opt, optim.schedules.cosineWithWarmup(opts.warmupSteps ?? Math.min(100, Math.floor(opts.steps / 10)), opts.steps));
  const ema = new optim.EMA(params, { decay: opts.emaDecay ?? 0.995, warmup: true });
  const log: TrainLog[] = [];
  const t0 = Date.now();
  const drop = opts.labelDropout ?? 0.1;
  const numTrain = Number(DIGITS_SCHEDULER_CONFIG.num_train_timesteps);
  unet.train();
  for (let step = 1; step <= opts.steps; ++step) {
    const loss = tidy(() => {
      const picks = uniforms(batch, gen).map((u) => Math.min(train.n - 1, Math.floor(u * train.n)));
      const { x, labels } = batchOf(train, picks);
      const noise = randn(x.shape, { generator: gen });
      const ts = uniforms(batch, gen).map((u) => Math.min(numTrain - 1, Math.floor(u * numTrain)));
      const dropped = uniforms(batch, gen).map((u, i) => (u < drop ? NULL_CLASS : labels[i]!));
      const noisy = scheduler.addNoise(x, noise, ts);
      const pred = unet.call(noisy, ts, { classLabels: tensor(dropped, { dtype: 'i64' }) });
      const l = mseLoss(pred, noise);
      l.backward();
      return keep(l);
    });
    optim.clipGradNorm(params, 1.0);
    opt.step();
    opt.zeroGrad();
    lrs.step();
    ema.update();
    const value = loss.item();
    loss.dispose();
    if (step % (opts.logEvery ?? 50) === 0 || step === opts.steps) {
      const entry = { step, loss: value, lr: opt.paramGroups[0]!.lr, seconds: (Date.now() - t0) / 1000 };
      log.push(entry);
      opts.onLog?.(entry);
    }
  }
  ema.copyTo(params);
  unet.eval();
  return { unet, log };
}

export interface ClassifierTrainOptions { steps: number; batch?: number; lr?: number; seed?: number; onLog?(log: TrainLog): void }

/** Trains the digit classifier used as the evaluation feature network. */
export function trainClassifier(train: DigitSet, opts: ClassifierTrainOptions): { model: DigitClassifier; log: TrainLog[] } {
  const seed = opts.seed ?? 1;
  manualSeed(seed);
  const gen = new Generator(seed).fork(11);
  const model = new DigitClassifier();
  const opt = new optim.Adam(model.parameters(), { lr: opts.lr ?? 2e-3 });
  const lrs = new optim.LRScheduler(opt, optim.schedules.cosineWithWarmup(Math.min(100, Math.floor(opts.steps / 10)), opts.steps));
  const log: TrainLog[] = [];
  const t0 = Date.now();
  model.train();
  for (let step = 1; step <= opts.steps; ++step) {
    const loss = tidy(() => {
      const picks = uniforms(opts.batch ?? 64, gen).map((u) => Math.min(train.n - 1, Math.floor(u * train.n)));
      const { x, labels } = batchOf(train, picks);
      const l = crossEntropy(model.call(x), tensor(labels, { dtype: 'i64' }));
      l.backward();
      return keep(l);
    });
    opt.step();
    opt.zeroGrad();
    lrs.step();
    const value = loss.item();
    loss.dispose();
    if (step % 50 === 0 || step === opts.steps) {
      const e = { step, loss: value, lr: opt.paramGroups[0]!.lr, seconds: (Date.now() - t0) / 1000 };
      log.push(e);
      opts.onLog?.(e);
    }
  }
  model.eval();
  return { model, log };
}

/** Classifier predictions and penultimate features for images in [-1, 1], [N, 1, 28, 28]. */
export function classify(model: DigitClassifier, images: Tensor, batch = 256): { predictions: number[]; features: Float32Array } {
  const n = images.shape[0]!;
  const preds: number[] = [];
  const feats = new Float32Array(n * FEATURE_DIM);
  noGrad(() => {
    for (let i = 0; i < n; i += batch) {
      tidy(() => {
        const xb = images.slice(0, i, Math.min(n, i + batch));
        const f = model.features(xb);
        const logits = model.fc2.call(f);
        preds.push(...Array.from(logits.argmax(1).data() as ArrayLike<number | bigint>, Number));
        feats.set(f.data() as Float32Array, i * FEATURE_DIM);
      });
    }
  });
  return { predictions: preds, features: feats };
}
