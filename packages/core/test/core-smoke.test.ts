import { describe, it, expect } from 'vitest';
import { tensor, randn, matmul, gradcheck, tidy, memoryStats, noGrad, Tensor } from '@qdm/core';

describe('core smoke', () => {
  it('adds with broadcasting and reads back', () => {
    const a = tensor([[1, 2, 3], [4, 5, 6]]);
    const b = tensor([10, 20, 30]);
    expect(a.add(b).toArray()).toEqual([[11, 22, 33], [14, 25, 36]]);
  });
  it('matmul matches a float64 reference', () => {
    const a = randn([5, 7], { seed: 1 }), b = randn([7, 3], { seed: 2 });
    const c = matmul(a, b).data();
    const A = a.data(), B = b.data();
    for (let i = 0; i < 5; ++i) for (let j = 0; j < 3; ++j) {
      let s = 0; for (let k = 0; k < 7; ++k) s += Number(A[i * 7 + k]) * Number(B[k * 3 + j]);
      expect(Number(c[i * 3 + j])).toBeCloseTo(s, 4);
    }
  });
  it('gradcheck of a composite', () => {
    const a = randn([3, 4], { seed: 3 }).requiresGrad_();
    const b = randn([4, 2], { seed: 4 }).requiresGrad_();
    const r = gradcheck((x, y) => matmul(x.tanh(), y).silu().mul(x.sum(1, { keepdim: true })), [a, b]);
    expect(r.ok, r.worst).toBe(true);
  });
  it('tidy disposes intermediates', () => {
    const before = memoryStats().bytesInUse;
    const kept = tidy(() => { const x = randn([100]); const y = x.mul(2).add(1); return y.exp(); });
    expect(memoryStats().bytesInUse - before).toBe(400);
    kept.dispose();
    expect(noGrad(() => 1)).toBe(1);
    expect(kept).toBeInstanceOf(Tensor);
  });
});

describe('module forward overrides', () => {
  it('an override replaces forward, post-hooks still run, and removal restores it', async () => {
    const { nn: n, ones } = await import('@qdm/core');
    const lin = new n.Linear(2, 2);
    let forwards = 0, posts = 0;
    const orig = lin.forward.bind(lin);
    lin.forward = (x: Tensor) => { forwards++; return orig(x); };
    lin.registerForwardHook(() => { posts++; return undefined; });
    const canned = ones([1, 2]);
    const remove = lin.registerForwardOverride(() => canned);
    expect(lin.call(ones([1, 2]))).toBe(canned);
    expect([forwards, posts]).toEqual([0, 1]);
    remove();
    expect(lin.call(ones([1, 2]))).not.toBe(canned);
    expect([forwards, posts]).toEqual([1, 2]);
  });
});
