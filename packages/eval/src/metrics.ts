// Quality metrics. Everything takes plain feature matrices (rows = samples) so any model can
// bring its own feature network; the digits classifier of the embedded model is one of them.
import { ArgumentError } from '@qdm/core';
import { matmulSq, sqrtmPsd, trace } from './linalg.js';

/** Features as rows: a Float64Array/Float32Array of n*d values with its dims. */
export interface Features { data: ArrayLike<number>; n: number; d: number }

export interface GaussianStats { mu: Float64Array; sigma: Float64Array; d: number; n: number }

function check(f: Features, what: string): void {
  if (f.n < 2) throw new ArgumentError(`${what}: at least 2 samples are needed, got ${f.n}`);
  if (f.data.length !== f.n * f.d) throw new ArgumentError(`${what}: ${f.data.length} values for ${f.n} x ${f.d} features`);
}

/** Mean and (unbiased) covariance of the features, as FID uses. */
export function gaussianStats(f: Features): GaussianStats {
  check(f, 'gaussianStats');
  const { n, d, data } = f;
  const mu = new Float64Array(d);
  for (let i = 0; i < n; ++i) for (let j = 0; j < d; ++j) mu[j] += Number(data[i * d + j]);
  for (let j = 0; j < d; ++j) mu[j] /= n;
  const sigma = new Float64Array(d * d);
  const row = new Float64Array(d);
  for (let i = 0; i < n; ++i) {
    for (let j = 0; j < d; ++j) row[j] = Number(data[i * d + j]) - mu[j]!;
    for (let a = 0; a < d; ++a) { const ra = row[a]!; if (ra === 0) continue; for (let b = a; b < d; ++b) sigma[a * d + b] += ra * row[b]!; }
  }
  for (let a = 0; a < d; ++a) for (let b = a; b < d; ++b) { const v = sigma[a * d + b]! / (n - 1); sigma[a * d + b] = v; sigma[b * d + a] = v; }
  return { mu, sigma, d, n };
}

/**
 * Fréchet distance between two Gaussians: ||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2).
 * The symmetric form has the same trace as (S1 S2)^1/2 and needs only symmetric square roots.
 */
export function frechetDistance(a: GaussianStats, b: GaussianStats): number {
  if (a.d !== b.d) throw new ArgumentError(`frechetDistance: feature dims differ (${a.d} vs ${b.d})`);
  const d = a.d;
  let diff = 0;
  for (let j = 0; j < d; ++j) diff += (a.mu[j]! - b.mu[j]!) ** 2;
  const s1h = sqrtmPsd(a.sigma, d);
  const inner = matmulSq(matmulSq(s1h, b.sigma, d), s1h, d);
  for (let i = 0; i < d; ++i) for (let j = i + 1; j < d; ++j) { const m = (inner[i * d + j]! + inner[j * d + i]!) / 2; inner[i * d + j] = m; inner[j * d + i] = m; }
  const covmean = sqrtmPsd(inner, d);
  return Math.max(0, diff + trace(a.sigma, d) + trace(b.sigma, d) - 2 * trace(covmean, d));
}

export function fid(real: Features | GaussianStats, fake: Features | GaussianStats): number {
  const s = (x: Features | GaussianStats) => ('mu' in x ? x : gaussianStats(x));
  return frechetDistance(s(real), s(fake));
}

function sqDistances(a: Features, b: Features): Float64Array {
  const out = new Float64Array(a.n * b.n);
  for (let i = 0; i < a.n; ++i) for (let j = 0; j < b.n; ++j) {
    let s = 0;
    for (let k = 0; k < a.d; ++k) { const t = Number(a.data[i * a.d + k]) - Number(b.data[j * b.d + k]); s += t * t; }
    out[i * b.n + j] = s;
  }
  return out;
}

/** Distance from each sample to its k-th nearest neighbour within the same set (self excluded). */
function kthRadii(f: Features, k: number): Float64Array {
  const d = sqDistances(f, f);
  const radii = new Float64Array(f.n);
  for (let i = 0; i < f.n; ++i) {
    const row = Array.from(d.subarray(i * f.n, (i + 1) * f.n)).sort((x, y) => x - y);
    radii[i] = row[Math.min(k, f.n - 1)]!;  // row[0] is the sample itself
  }
  return radii;
}

/**
 * Improved precision and recall (Kynkäänniemi et al. 2019): precision is the share of generated
 * samples inside the real manifold (union of k-NN balls), recall the share of real samples inside
 * the generated one.
 */
export function precisionRecall(real: Features, fake: Features, k = 3): { precision: number; recall: number } {
  check(real, 'precisionRecall'); check(fake, 'precisionRecall');
  if (real.d !== fake.d) throw new ArgumentError('precisionRecall: feature dims differ');
  const rr = kthRadii(real, k), rf = kthRadii(fake, k);
  const dfr = sqDistances(fake, real);
  let p = 0, r = 0;
  for (let i = 0; i < fake.n; ++i) { for (let j = 0; j < real.n; ++j) if (dfr[i * real.n + j]! <= rr[j]!) { p++; break; } }
  for (let j = 0; j < real.n; ++j) { for (let i = 0; i < fake.n; ++i) if (dfr[i * real.n + j]! <= rf[i]!) { r++; break; } }
  return { precision: p / fake.n, recall: r / real.n };
}

/** Share of predictions equal to the asked labels. */
export function classAccuracy(predicted: ArrayLike<number>, asked: ArrayLike<number>): number {
  if (predicted.length !== asked.length || predicted.length === 0) throw new ArgumentError(`classAccuracy: ${predicted.length} predictions for ${asked.length} labels`);
  let ok = 0;
  for (let i = 0; i < predicted.length; ++i) if (Number(predicted[i]) === Number(asked[i])) ok++;
  return ok / predicted.length;
}

/** Mean squared error and PSNR (peak-to-peak `range`, 2 for [-1, 1] images) between two sample sets. */
export function mseAndPsnr(a: ArrayLike<number>, b: ArrayLike<number>, range = 2): { mse: number; psnr: number } {
  if (a.length !== b.length || a.length === 0) throw new ArgumentError(`mseAndPsnr: lengths ${a.length} and ${b.length} differ`);
  let s = 0;
  for (let i = 0; i < a.length; ++i) s += (Number(a[i]) - Number(b[i])) ** 2;
  const mse = s / a.length;
  return { mse, psnr: mse === 0 ? Infinity : 10 * Math.log10((range * range) / mse) };
}
