// Quality of digit samples: FID on the classifier's penultimate features against the held-out
// digits, prompt fidelity (the share classified as the asked digit), and precision/recall in
// the same feature space.
import { type Tensor } from '@qdm/core';
import { fid, precisionRecall, classAccuracy, type GaussianStats } from '@qdm/eval';
import { FEATURE_DIM, type DigitClassifier } from './classifier.js';
import { classify, batchOf } from './train.js';
import { splitDigits } from './dataset.js';

export interface DigitsQuality { fid: number; classAccuracy: number; precision: number; recall: number; n: number }

/** Held-out digits' classifier features (the reference set for precision/recall). */
export function heldOutFeatures(classifier: DigitClassifier, limit = 1000): { data: Float32Array; n: number; d: number } {
  const { heldOut } = splitDigits();
  const n = Math.min(limit, heldOut.n);
  const { x } = batchOf(heldOut, Array.from({ length: n }, (_, i) => i));
  const { features } = classify(classifier, x);
  x.dispose();
  return { data: features, n, d: FEATURE_DIM };
}

/** Scores samples in [-1, 1] ([N, 1, 28, 28]) generated for the labels `asked`. */
export function evaluateDigits(samples: Tensor, asked: number[], classifier: DigitClassifier, reference: GaussianStats, real?: { data: Float32Array; n: number; d: number }): DigitsQuality {
  const { predictions, features } = classify(classifier, samples);
  const n = samples.shape[0]!;
  const fake = { data: features, n, d: FEATURE_DIM };
  const pr = precisionRecall(real ?? heldOutFeatures(classifier), fake);
  return { fid: fid(reference, fake), classAccuracy: classAccuracy(predictions, asked), precision: pr.precision, recall: pr.recall, n };
}
