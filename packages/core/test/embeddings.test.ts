import { describe, expect, it } from 'vitest';
import { tensor } from '@qdm/core';
import { deviceSinusoidalEmbedding, sinusoidalEmbedding } from '../src/models/embeddings.js';

// The tensor path (used for device timesteps, e.g. inside a CUDA graph) must agree with the
// host path computed in doubles, up to fp32 rounding of sin/cos arguments near t = 1000.
describe('timestep embeddings', () => {
  for (const [flip, shift] of [[true, 0], [false, 1]] as const) {
    it(`tensor timesteps match the host embedding (flip ${flip}, shift ${shift})`, () => {
      const values = [999, 500, 1, 0];
      const ref = sinusoidalEmbedding(values, 32, { flipSinToCos: flip, downscaleFreqShift: shift }).data();
      const got = deviceSinusoidalEmbedding(tensor(values, { dtype: 'i64' }), 4, 32, { flipSinToCos: flip, downscaleFreqShift: shift }).data();
      expect(got.length).toBe(ref.length);
      let maxErr = 0;
      for (let i = 0; i < ref.length; i++) maxErr = Math.max(maxErr, Math.abs(Number(got[i]) - Number(ref[i])));
      expect(maxErr).toBeLessThan(5e-4);
    });
  }
  it('broadcasts one timestep to the batch and rejects mismatched counts', () => {
    const one = deviceSinusoidalEmbedding(tensor([250]), 3, 8, { flipSinToCos: true, downscaleFreqShift: 0 });
    expect(one.shape).toEqual([3, 8]);
    const d = one.data();
    for (let i = 0; i < 8; i++) expect(d[8 + i]).toBe(d[i]);
    expect(() => deviceSinusoidalEmbedding(tensor([1, 2]), 3, 8, { flipSinToCos: true, downscaleFreqShift: 0 })).toThrow(/2 timesteps for a batch of 3/);
    expect(() => deviceSinusoidalEmbedding(tensor([1]), 1, 7, { flipSinToCos: true, downscaleFreqShift: 0 })).toThrow(/odd/);
  });
});
