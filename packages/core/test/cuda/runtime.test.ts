// The CUDA runtime: allocator statistics and caching, bit-exact transfers for every dtype
// (contiguous, strided, larger than one staging chunk), the typed out-of-memory error, CUDA
// graph capture and replay with inputs rewritten in place, and the error for a kernel with no
// CUDA implementation. Skips without a GPU; the last block runs only without one.
import { describe, expect, it } from 'vitest';
import {
  DeviceError, Tensor, captureGraph, copyInto, cudaDeviceInfo, cudaEmptyCache, cudaMemoryStats, cudaResetPeak, cudaSynchronize,
  empty, kernel, memoryStats, randn, tensor, transpose, zeros,
} from '@qdm/core';
import type { DType } from '@qdm/core';
import { cudaAvailable, cudaSkipReason, relErr, skipNote } from './harness.js';

const ALL: DType[] = ['f32', 'f16', 'bf16', 'i8', 'u8', 'i32', 'i64', 'i4', 'f8e4m3'];

/** A CPU tensor of `dtype` whose storage holds random bytes (every bit pattern, NaN payloads included). */
function randomBytes(shape: number[], dtype: DType, seed: number): Tensor {
  const t = empty(shape, dtype);
  const d = t.cpuData();
  const bytes = new Uint8Array(d.buffer, d.byteOffset, d.byteLength);
  let s = seed >>> 0;
  for (let i = 0; i < bytes.length; ++i) { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; bytes[i] = s >>> 24; }
  return t;
}
function bytesOf(t: Tensor): Uint8Array { const d = t.cpuData(); return new Uint8Array(d.buffer, d.byteOffset, d.byteLength); }

describe.skipIf(!cudaAvailable)(`CUDA runtime${skipNote}`, () => {
  it('reports the device', () => {
    const info = cudaDeviceInfo();
    expect(info.name.length).toBeGreaterThan(0);
    expect(info.capability).toBeGreaterThanOrEqual(80);
    expect(info.smCount).toBeGreaterThan(0);
    expect(info.totalMemory).toBeGreaterThan(info.freeMemory * 0.5);
  });

  it('counts allocations, the peak, and serves repeats from the cache', () => {
    cudaSynchronize();
    const before = cudaMemoryStats();
    cudaResetPeak();
    const a = empty([1 << 20], 'f32', 'cuda');  // 4 MiB: a 2 MiB-class block
    const mid = cudaMemoryStats();
    expect(mid.bytesInUse - before.bytesInUse).toBe(4 << 20);
    expect(mid.peak).toBeGreaterThanOrEqual(mid.bytesInUse);
    expect(mid.allocations).toBe(before.allocations + 1);
    a.dispose();
    const after = cudaMemoryStats();
    expect(after.bytesInUse).toBe(before.bytesInUse);
    expect(after.peak).toBe(mid.peak);
    const b = empty([1 << 20], 'f32', 'cuda');  // same class: no new cudaMalloc
    expect(cudaMemoryStats().cudaMallocs).toBe(after.cudaMallocs);
    b.dispose();
    const small = empty([3], 'f32', 'cuda');  // 12 B -> one 512 B class
    expect(cudaMemoryStats().bytesInUse - after.bytesInUse).toBe(512);
    small.dispose();
    cudaResetPeak();
    expect(cudaMemoryStats().peak).toBe(cudaMemoryStats().bytesInUse);
    expect(memoryStats('cuda').peakBytes).toBe(cudaMemoryStats().peak);
    const released = cudaEmptyCache();
    expect(released).toBeGreaterThan(0);
    expect(cudaMemoryStats().cachedBytes).toBe(0);
  });

  it('round-trips every dtype bit-exactly (contiguous, offset and strided views)', () => {
    for (const [i, dt] of ALL.entries()) {
      const h = randomBytes([37, 29], dt, 100 + i);
      const g = h.to('cuda');
      expect(g.device).toBe('cuda');
      const back = g.to('cpu');
      expect(Buffer.compare(bytesOf(back), bytesOf(h)), dt).toBe(0);
      if (dt !== 'i4') {
        // A transposed (strided) view, both directions.
        const ref = transpose(h, 0, 1).contiguous();
        const viaHost = transpose(h, 0, 1).to('cuda').to('cpu');
        const viaDev = transpose(g, 0, 1).to('cpu');
        expect(Buffer.compare(bytesOf(viaHost), bytesOf(ref)), `${dt} strided host view`).toBe(0);
        expect(Buffer.compare(bytesOf(viaDev), bytesOf(ref)), `${dt} strided device view`).toBe(0);
        // A view at an offset (row 5 on).
        const rows = h.slice(0, 5, 37).to('cuda').to('cpu');
        expect(Buffer.compare(bytesOf(rows), bytesOf(h.slice(0, 5, 37).contiguous())), `${dt} offset view`).toBe(0);
        for (const t of [ref, viaHost, viaDev, rows]) t.dispose();
      }
      for (const t of [h, g, back]) t.dispose();
    }
  });

  it('moves buffers larger than a staging chunk', () => {
    const h = randomBytes([5_000_003], 'f32', 7);  // 20 MB: five 4 MiB chunks and a tail
    const back = h.to('cuda').to('cpu');
    expect(Buffer.compare(bytesOf(back), bytesOf(h))).toBe(0);
    expect(Array.from((h.to('cuda').data() as Float32Array).subarray(0, 4))).toEqual(Array.from((h.data() as Float32Array).subarray(0, 4)));
  });

  it('fails a 10 TB allocation with a typed out-of-memory error', () => {
    let err: unknown;
    try { empty([2.5e12], 'f32', 'cuda'); } catch (e) { err = e; }
    expect(err).toBeInstanceOf(DeviceError);
    expect((err as DeviceError).code).toBe('QDM_CUDA_OUT_OF_MEMORY');
    expect((err as Error).message).toMatch(/requested 10000000000000 bytes/);
    expect((err as Error).message).toMatch(/in use/);
    expect((err as Error).message).toMatch(/reserved/);
    const ok = zeros([4], { device: 'cuda' });  // the allocator still works afterwards
    expect(Array.from(ok.data() as Float32Array)).toEqual([0, 0, 0, 0]);
  });

  it('captures a graph and replays it after the input changed in place', () => {
    const x = randn([4, 300], { seed: 3 }).to('cuda');
    const bias = randn([300], { seed: 4 }).to('cuda');
    const f = (t: Tensor, b: Tensor) => t.mul(2).add(b).silu().sum(1);
    f(x, bias).dispose();  // eager warm-up: first launches (lazy module loading) happen outside the capture
    const g = captureGraph(() => f(x, bias));
    g.replay();
    const ref1 = f(x.to('cpu'), bias.to('cpu')).data();
    expect(relErr(g.outputs.data(), ref1)).toBeLessThan(1e-5);
    const x2 = randn([4, 300], { seed: 5 });
    copyInto(x, x2);
    const stale = g.outputs.data();
    g.replay();
    const ref2 = f(x2, bias.to('cpu')).data();
    expect(relErr(g.outputs.data(), ref2)).toBeLessThan(1e-5);
    expect(relErr(stale, ref2)).toBeGreaterThan(1e-3);  // the replay, not the capture, produced ref2
    // Work done between replays must not disturb the graph's private memory.
    const noise = Array.from({ length: 8 }, (_, i) => randn([4, 300], { seed: 50 + i }).to('cuda').mul(3));
    g.replay();
    expect(relErr(g.outputs.data(), ref2)).toBeLessThan(1e-5);
    for (const t of noise) t.dispose();
    g.dispose();
    expect(() => g.replay()).toThrow(/after dispose/);
  });

  it('refuses host transfers during capture and aborts cleanly', () => {
    expect(() => captureGraph(() => tensor([1, 2, 3], { device: 'cuda' }))).toThrow(/captured/);
    const ok = zeros([2], { device: 'cuda' }).add(1);  // the stream works after the abort
    expect(Array.from(ok.data() as Float32Array)).toEqual([1, 1]);
  });

  it('names a kernel that has no CUDA implementation', () => {
    const t = zeros([2], { device: 'cuda' });
    let err: unknown;
    try { kernel('noSuchKernelAnywhere', t); } catch (e) { err = e; }
    expect(err).toBeInstanceOf(DeviceError);
    expect((err as DeviceError).code).toBe('QDM_CUDA_UNSUPPORTED');
    expect((err as Error).message).toMatch(/noSuchKernelAnywhere has no CUDA kernel yet/);
  });
});

describe.skipIf(cudaAvailable)('without a GPU', () => {
  it("requesting device 'cuda' throws DeviceError with the reason", () => {
    let err: unknown;
    try { zeros([2], { device: 'cuda' }); } catch (e) { err = e; }
    expect(err).toBeInstanceOf(DeviceError);
    expect((err as DeviceError).code).toBe('QDM_CUDA_UNAVAILABLE');
    expect((err as Error).message).toContain(cudaSkipReason!);
  });
});
