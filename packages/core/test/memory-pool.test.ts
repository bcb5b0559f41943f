// CPU buffer reuse (memory.ts): released buffers that never left the library are reused, zeroed;
// a typed array handed out by cpuData() / data() is never rewritten after its tensor is gone.
import { afterEach, describe, expect, it } from 'vitest';
import { add, empty, emptyUninitialized, full, memoryStats, randn, setCpuPoolLimit, tidy } from '@qdm/core';

const N = 12345;  // a size no other test in this file allocates by accident
afterEach(() => setCpuPoolLimit(null));

describe('CPU buffer reuse', () => {
  it('reuses a released kernel buffer and hands it out zeroed', () => {
    setCpuPoolLimit(0);
    setCpuPoolLimit(2 ** 30);
    tidy(() => { add(full([N], 3), full([N], 4)); });  // three f32 buffers of N, never handed out
    const pooled = memoryStats().pooledBytes;
    expect(pooled).toBeGreaterThanOrEqual(3 * 4 * N);
    const t = empty([N]);
    expect(memoryStats().pooledBytes).toBe(pooled - 4 * N);
    expect(t.data().every((v) => v === 0)).toBe(true);
  });

  it('never rewrites a typed array the caller holds', () => {
    setCpuPoolLimit(2 ** 30);
    const t = full([N], 7);
    const held = t.cpuData() as Float32Array;
    const read = add(t, t).data();  // data() returns the storage of a temporary it disposed
    t.dispose();
    // Plenty of same-size allocations and writes afterwards: neither array may change.
    tidy(() => { for (let i = 0; i < 20; ++i) add(randn([N], { seed: i }), full([N], 1)); });
    expect(held.every((v) => v === 7)).toBe(true);
    expect(read.every((v) => v === 14)).toBe(true);
  });

  it('empty() is zeroed even from a reused buffer; emptyUninitialized() is poisoned under QDM_POISON_UNINITIALIZED=1 (as pnpm test runs)', () => {
    setCpuPoolLimit(2 ** 30);
    tidy(() => { add(full([N], 5), full([N], 6)); });
    expect(empty([N]).data().every((v) => v === 0)).toBe(true);
    tidy(() => { add(full([N], 5), full([N], 6)); });
    const u = emptyUninitialized([N]).data();
    if (process.env.QDM_POISON_UNINITIALIZED === '1') expect(u.every((v) => Number.isNaN(v))).toBe(true);
    else expect(u.length).toBe(N);
  });

  it('the limit bounds what is kept; 0 empties the pool; a bad limit is refused', () => {
    setCpuPoolLimit(4 * N);
    tidy(() => { add(full([N], 1), full([N], 2)); });
    expect(memoryStats().pooledBytes).toBeLessThanOrEqual(4 * N);
    setCpuPoolLimit(0);
    expect(memoryStats().pooledBytes).toBe(0);
    tidy(() => { add(full([N], 1), full([N], 2)); });
    expect(memoryStats().pooledBytes).toBe(0);
    expect(() => setCpuPoolLimit(-1)).toThrow(RangeError);
    expect(() => setCpuPoolLimit(Number.NaN)).toThrow(RangeError);
    setCpuPoolLimit(null);  // automatic: at least 256 MiB
    tidy(() => { add(full([N], 1), full([N], 2)); });
    expect(memoryStats().pooledBytes).toBeGreaterThanOrEqual(3 * 4 * N);
  });
});
