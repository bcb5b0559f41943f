import { describe, it, expect } from 'vitest';
import { loadAllDigits, splitDigits } from '../src/dataset.js';

describe('digits dataset', () => {
  it('loads the 10,000 digits with labels 0..9', () => {
    const all = loadAllDigits();
    expect(all.n).toBe(10000);
    expect(all.images.length).toBe(10000 * 784);
    const counts = new Array(10).fill(0);
    for (const l of all.labels) counts[l]++;
    expect(counts.every((c) => c > 800)).toBe(true);
    expect(Math.max(...all.images.subarray(0, 784))).toBeLessThanOrEqual(1);
  });
  it('splits deterministically, stratified, disjoint', () => {
    const a = splitDigits({ seed: 0 }), b = splitDigits({ seed: 0 }), c = splitDigits({ seed: 1 });
    expect(a.train.n + a.heldOut.n).toBe(10000);
    expect(a.heldOut.n).toBeGreaterThan(950);
    expect(Array.from(a.heldOut.labels)).toEqual(Array.from(b.heldOut.labels));
    expect(a.heldOut.images).toEqual(b.heldOut.images);
    expect(a.heldOut.images).not.toEqual(c.heldOut.images);
    const perClass = new Array(10).fill(0);
    for (const l of a.heldOut.labels) perClass[l]++;
    expect(perClass.every((k) => k >= 85 && k <= 115)).toBe(true);
  });
  it('rejects a bad fraction', () => {
    expect(() => splitDigits({ heldOut: 1.5 })).toThrow(/heldOut/);
  });
});
