import { describe, it, expect } from 'vitest';
import { fid, gaussianStats, frechetDistance, precisionRecall, classAccuracy, mseAndPsnr, symmetricEigen, sqrtmPsd } from '@qdm/eval';

function lcg(seed: number) { let s = seed >>> 0; return () => { s = (1664525 * s + 1013904223) >>> 0; return s / 2 ** 32; }; }
function gauss(r: () => number) { return Math.sqrt(-2 * Math.log(r() + 1e-12)) * Math.cos(2 * Math.PI * r()); }
function sampleSet(n: number, d: number, mean: number, std: number, seed: number) {
  const r = lcg(seed); const data = new Float64Array(n * d);
  for (let i = 0; i < n * d; ++i) data[i] = mean + std * gauss(r);
  return { data, n, d };
}

describe('metrics', () => {
  it('FID of a set against itself is 0', () => {
    const a = sampleSet(200, 8, 0, 1, 1);
    expect(fid(a, a)).toBeLessThan(1e-8);
  });
  it('FID matches the closed form for diagonal Gaussians', () => {
    // Stats given directly: mu1 = 0, S1 = diag(1, 4); mu2 = (1, 2), S2 = diag(9, 1)
    const a = { mu: Float64Array.from([0, 0]), sigma: Float64Array.from([1, 0, 0, 4]), d: 2, n: 10 };
    const b = { mu: Float64Array.from([1, 2]), sigma: Float64Array.from([9, 0, 0, 1]), d: 2, n: 10 };
    // 1 + 4 + (1 + 9 - 2*3) + (4 + 1 - 2*2) = 5 + 4 + 1 = 10
    expect(frechetDistance(a, b)).toBeCloseTo(10, 10);
  });
  it('FID grows with a mean shift and is symmetric', () => {
    const a = sampleSet(300, 4, 0, 1, 2), b = sampleSet(300, 4, 0.5, 1, 3), c = sampleSet(300, 4, 2, 1, 4);
    expect(fid(a, b)).toBeLessThan(fid(a, c));
    expect(fid(a, b)).toBeCloseTo(fid(b, a), 6);
    expect(fid(a, c)).toBeGreaterThan(14);  // about 4 * 2^2 = 16
  });
  it('eigen and sqrtm of a known matrix', () => {
    const m = Float64Array.from([4, 1, 1, 3]);
    const { values } = symmetricEigen(m, 2);
    const sorted = Array.from(values).sort();
    expect(sorted[0]).toBeCloseTo((7 - Math.sqrt(5)) / 2, 10);
    const s = sqrtmPsd(m, 2);
    const back = [s[0]! * s[0]! + s[1]! * s[2]!, s[0]! * s[1]! + s[1]! * s[3]!, s[2]! * s[0]! + s[3]! * s[2]!, s[2]! * s[1]! + s[3]! * s[3]!];
    back.forEach((v, i) => expect(v).toBeCloseTo(m[i]!, 10));
  });
  it('precision and recall: identical sets are 1, disjoint sets 0', () => {
    const a = sampleSet(100, 3, 0, 1, 5);
    expect(precisionRecall(a, a)).toEqual({ precision: 1, recall: 1 });
    const far = sampleSet(100, 3, 100, 1, 6);
    expect(precisionRecall(a, far)).toEqual({ precision: 0, recall: 0 });
  });
  it('accuracy, mse, psnr', () => {
    expect(classAccuracy([1, 2, 3, 4], [1, 2, 0, 4])).toBe(0.75);
    expect(mseAndPsnr([0, 0], [0, 0]).psnr).toBe(Infinity);
    const { mse, psnr } = mseAndPsnr([0, 1], [1, 1], 2);
    expect(mse).toBe(0.5);
    expect(psnr).toBeCloseTo(10 * Math.log10(8), 10);
    expect(gaussianStats(sampleSet(10, 2, 0, 1, 7)).mu.length).toBe(2);
  });
  it('bad inputs give typed errors', () => {
    expect(() => classAccuracy([], [])).toThrow(/classAccuracy/);
    expect(() => gaussianStats({ data: [1, 2], n: 1, d: 2 })).toThrow(/at least 2/);
    expect(() => fid(sampleSet(5, 2, 0, 1, 1), sampleSet(5, 3, 0, 1, 1))).toThrow(/dims differ/);
  });
});
