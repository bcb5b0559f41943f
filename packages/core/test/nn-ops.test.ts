// Forward checks of the NN, indexing and loss ops against float64 references written out in
// plain loops here, and their backwards against finite differences.
import { describe, it, expect } from 'vitest';
import {
  tensor, randn, rand, gradcheck, conv2d, groupNorm, layerNorm, softmax, logSoftmax, scaledDotProductAttention,
  interpolate, avgPool2d, dropout, concat, stack, split, chunk, gather, indexSelect, embedding, pad, mseLoss,
  huberLoss, pseudoHuberLoss, crossEntropy, checkpoint, transpose, Generator, ShapeError, ArgumentError, Tensor, silu, sum, mul,
} from '@qdm/core';

function relErr(got: ArrayLike<number>, ref: ArrayLike<number>): number {
  let num = 0, den = 0;
  for (let i = 0; i < ref.length; ++i) { const d = Number(got[i]) - Number(ref[i]); num += d * d; den += Number(ref[i]) ** 2; }
  return Math.sqrt(num / Math.max(den, 1e-300));
}
const f64 = (t: Tensor) => Float64Array.from(t.data() as Float32Array);

function convRef(x: Tensor, w: Tensor, b: Tensor | null, s: number, p: number, d: number, g: number): { out: Float64Array; shape: number[] } {
  const [N, C, H, W] = x.shape as number[]; const [O, Cg, KH, KW] = w.shape as number[];
  const X = f64(x), Wt = f64(w), B = b ? f64(b) : null;
  const OH = Math.floor((H! + 2 * p - d * (KH! - 1) - 1) / s) + 1, OW = Math.floor((W! + 2 * p - d * (KW! - 1) - 1) / s) + 1;
  const out = new Float64Array(N! * O! * OH * OW);
  const og = O! / g;
  for (let n = 0; n < N!; ++n) for (let o = 0; o < O!; ++o) for (let oh = 0; oh < OH; ++oh) for (let ow = 0; ow < OW; ++ow) {
    let acc = B ? B[o]! : 0;
    const grp = Math.floor(o / og);
    for (let c = 0; c < Cg!; ++c) for (let kh = 0; kh < KH!; ++kh) for (let kw = 0; kw < KW!; ++kw) {
      const ih = oh * s - p + kh * d, iw = ow * s - p + kw * d;
      if (ih < 0 || iw < 0 || ih >= H! || iw >= W!) continue;
      acc += X[((n * C! + grp * Cg! + c) * H! + ih) * W! + iw]! * Wt[((o * Cg! + c) * KH! + kh) * KW! + kw]!;
    }
    out[((n * O! + o) * OH + oh) * OW + ow] = acc;
  }
  return { out, shape: [N!, O!, OH, OW] };
}

describe('conv2d', () => {
  const cases = [
    { name: '3x3 pad 1', x: [2, 3, 7, 6], w: [4, 3, 3, 3], s: 1, p: 1, d: 1, g: 1 },
    { name: 'stride 2 (downsampler, odd size)', x: [1, 4, 7, 7], w: [4, 4, 3, 3], s: 2, p: 1, d: 1, g: 1 },
    { name: 'dilation 2, groups 2', x: [2, 4, 9, 8], w: [6, 2, 3, 3], s: 1, p: 2, d: 2, g: 2 },
    { name: '1x1', x: [3, 5, 4, 4], w: [7, 5, 1, 1], s: 1, p: 0, d: 1, g: 1 },
    { name: 'depthwise', x: [1, 3, 5, 5], w: [3, 1, 3, 3], s: 1, p: 1, d: 1, g: 3 },
  ];
  for (const c of cases) {
    it(`forward matches float64: ${c.name}`, () => {
      const x = randn(c.x, { seed: 1 }), w = randn(c.w, { seed: 2 }), b = randn([c.w[0]!], { seed: 3 });
      const y = conv2d(x, w, b, { stride: c.s, padding: c.p, dilation: c.d, groups: c.g });
      const ref = convRef(x, w, b, c.s, c.p, c.d, c.g);
      expect(y.shape).toEqual(ref.shape);
      expect(relErr(y.data() as Float32Array, ref.out)).toBeLessThan(1e-6);
    });
    it(`backward matches finite differences: ${c.name}`, () => {
      const x = randn(c.x, { seed: 4 }).requiresGrad_(), w = randn(c.w, { seed: 5 }).requiresGrad_(), b = randn([c.w[0]!], { seed: 6 }).requiresGrad_();
      const r = gradcheck((a, bb, cc) => conv2d(a, bb, cc, { stride: c.s, padding: c.p, dilation: c.d, groups: c.g }), [x, w, b], { eps: 1e-2, atol: 2e-3, rtol: 1e-2 });
      expect(r.ok, r.worst).toBe(true);
    });
  }
  it('accepts a non-contiguous input and rejects bad shapes', () => {
    const x = randn([1, 2, 5, 4], { seed: 7 });
    const xt = transpose(x, 2, 3);
    const w = randn([3, 2, 3, 3], { seed: 8 });
    const ref = convRef(xt.contiguous(), w, null, 1, 1, 1, 1);
    expect(relErr(conv2d(xt, w, null, { padding: 1 }).data() as Float32Array, ref.out)).toBeLessThan(1e-6);
    expect(() => conv2d(randn([1, 3, 4, 4]), w)).toThrow(ShapeError);
    expect(() => conv2d(x, w, null, { stride: 0 })).toThrow(ArgumentError);
  });
});

describe('normalisation and softmax', () => {
  it('groupNorm forward matches float64 and its backward', () => {
    const [N, C, H, W, G] = [2, 6, 3, 4, 3];
    const x = randn([N, C, H, W], { seed: 10 }).mul(3).add(1), w = randn([C], { seed: 11 }), b = randn([C], { seed: 12 });
    const y = groupNorm(x, G, w, b, 1e-6).data() as Float32Array;
    const X = f64(x), Wt = f64(w), B = f64(b), ref = new Float64Array(X.length);
    const per = (C / G) * H * W;
    for (let n = 0; n < N; ++n) for (let g = 0; g < G; ++g) {
      const base = (n * C + g * (C / G)) * H * W;
      let m = 0; for (let i = 0; i < per; ++i) m += X[base + i]!; m /= per;
      let v = 0; for (let i = 0; i < per; ++i) v += (X[base + i]! - m) ** 2; v /= per;
      for (let i = 0; i < per; ++i) { const c = g * (C / G) + Math.floor(i / (H * W)); ref[base + i] = (X[base + i]! - m) / Math.sqrt(v + 1e-6) * Wt[c]! + B[c]!; }
    }
    expect(relErr(y, ref)).toBeLessThan(1e-5);
    const r = gradcheck((a, ww, bb) => groupNorm(a, G, ww, bb), [x.detach().requiresGrad_(), w.requiresGrad_(), b.requiresGrad_()], { atol: 3e-3, rtol: 2e-2 });
    expect(r.ok, r.worst).toBe(true);
    expect(() => groupNorm(x, 4)).toThrow(ArgumentError);
  });
  it('layerNorm forward matches float64 and its backward', () => {
    const x = randn([3, 5, 8], { seed: 13 }), w = randn([8], { seed: 14 }), b = randn([8], { seed: 15 });
    const y = layerNorm(x, [8], w, b).data() as Float32Array;
    const X = f64(x), Wt = f64(w), B = f64(b), ref = new Float64Array(X.length);
    for (let r = 0; r < 15; ++r) {
      let m = 0; for (let i = 0; i < 8; ++i) m += X[r * 8 + i]!; m /= 8;
      let v = 0; for (let i = 0; i < 8; ++i) v += (X[r * 8 + i]! - m) ** 2; v /= 8;
      for (let i = 0; i < 8; ++i) ref[r * 8 + i] = (X[r * 8 + i]! - m) / Math.sqrt(v + 1e-5) * Wt[i]! + B[i]!;
    }
    expect(relErr(y, ref)).toBeLessThan(1e-5);
    const g = gradcheck((a, ww, bb) => layerNorm(a, [8], ww, bb), [x.requiresGrad_(), w.requiresGrad_(), b.requiresGrad_()], { atol: 3e-3, rtol: 2e-2 });
    expect(g.ok, g.worst).toBe(true);
  });
  it('softmax and logSoftmax over any dim, forward and backward', () => {
    const x = randn([3, 4, 5], { seed: 16 }).mul(4);
    for (const dim of [0, 1, 2]) {
      const y = softmax(x, dim), ly = logSoftmax(x, dim);
      const X = f64(x.contiguous()), Y = f64(y.contiguous()), LY = f64(ly.contiguous());
      const shape = [3, 4, 5], stride = [20, 5, 1];
      for (let i = 0; i < 60; ++i) {
        const idx = shape.map((s, k) => Math.floor(i / stride[k]!) % s);
        let m = -Infinity; const vals: number[] = [];
        for (let j = 0; j < shape[dim]!; ++j) { const id = [...idx]; id[dim] = j; const v = X[id[0]! * 20 + id[1]! * 5 + id[2]!]!; vals.push(v); m = Math.max(m, v); }
        const z = vals.reduce((a, v) => a + Math.exp(v - m), 0);
        expect(Y[i]).toBeCloseTo(Math.exp(X[i]! - m) / z, 6);
        expect(LY[i]).toBeCloseTo(X[i]! - m - Math.log(z), 5);
      }
      const g1 = gradcheck((a) => softmax(a, dim), [x.detach().requiresGrad_()], { atol: 2e-3 });
      const g2 = gradcheck((a) => logSoftmax(a, dim), [x.detach().requiresGrad_()], { atol: 2e-3 });
      expect(g1.ok && g2.ok, g1.worst + g2.worst).toBe(true);
    }
  });
});

describe('attention', () => {
  function attnRef(q: Tensor, k: Tensor, v: Tensor, scale: number, maskAdd?: Float64Array): Float64Array {
    const [B, L, D] = q.shape as number[]; const S = k.shape[1]!; const DV = v.shape[2]!;
    const Q = f64(q), K = f64(k), V = f64(v), out = new Float64Array(B! * L! * DV);
    for (let b = 0; b < B!; ++b) for (let i = 0; i < L!; ++i) {
      const s = new Float64Array(S);
      for (let j = 0; j < S; ++j) { let a = 0; for (let d = 0; d < D!; ++d) a += Q[(b * L! + i) * D! + d]! * K[(b * S + j) * D! + d]!; s[j] = a * scale + (maskAdd ? maskAdd[i * S + j]! : 0); }
      const m = Math.max(...s); let z = 0; for (let j = 0; j < S; ++j) { s[j] = Math.exp(s[j]! - m); z += s[j]!; }
      for (let d = 0; d < DV; ++d) { let a = 0; for (let j = 0; j < S; ++j) a += s[j]! * V[(b * S + j) * DV + d]!; out[(b * L! + i) * DV + d] = a / z; }
    }
    return out;
  }
  it('matches float64 with default scale, an additive mask, and causal masking', () => {
    const q = randn([2, 5, 4], { seed: 20 }), k = randn([2, 7, 4], { seed: 21 }), v = randn([2, 7, 3], { seed: 22 });
    expect(relErr(scaledDotProductAttention(q, k, v).data() as Float32Array, attnRef(q, k, v, 0.5))).toBeLessThan(1e-6);
    const mask = randn([5, 7], { seed: 23 });
    expect(relErr(scaledDotProductAttention(q, k, v, { mask, scale: 0.3 }).data() as Float32Array, attnRef(q, k, v, 0.3, f64(mask)))).toBeLessThan(1e-6);
    const kc = randn([2, 5, 4], { seed: 24 }), vc = randn([2, 5, 3], { seed: 25 });
    const causal = new Float64Array(25).map((_, i) => (i % 5 <= Math.floor(i / 5) ? 0 : -Infinity));
    expect(relErr(scaledDotProductAttention(q, kc, vc, { isCausal: true }).data() as Float32Array, attnRef(q, kc, vc, 0.5, causal))).toBeLessThan(1e-6);
  });
  it('blocks long inference sequences without changing the result', () => {
    // 2 x 2100 x 2100 scores at 4 bytes = 35 MB per batch... use a batch that crosses 64 MB.
    const q = randn([4, 2100, 8], { seed: 26 }), k = randn([4, 2100, 8], { seed: 27 }), v = randn([4, 2100, 8], { seed: 28 });
    const blocked = scaledDotProductAttention(q, k, v).data() as Float32Array;
    const full = scaledDotProductAttention(q.requiresGrad_(), k, v).data() as Float32Array;
    expect(relErr(blocked, full)).toBeLessThan(1e-6);
  });
  it('backward matches finite differences', () => {
    const q = randn([2, 3, 4], { seed: 29 }).requiresGrad_(), k = randn([2, 4, 4], { seed: 30 }).requiresGrad_(), v = randn([2, 4, 2], { seed: 31 }).requiresGrad_();
    const r = gradcheck((a, b, c) => scaledDotProductAttention(a, b, c), [q, k, v], { atol: 2e-3 });
    expect(r.ok, r.worst).toBe(true);
  });
});

describe('resampling, pooling, dropout', () => {
  it('nearest x2 and to an explicit size (odd sizes round-trip as in diffusers)', () => {
    const x = tensor([[[[1, 2, 3], [4, 5, 6]]]]);
    expect(interpolate(x, { scaleFactor: 2 }).toArray()).toEqual([[[[1, 1, 2, 2, 3, 3], [1, 1, 2, 2, 3, 3], [4, 4, 5, 5, 6, 6], [4, 4, 5, 5, 6, 6]]]]);
    const y = interpolate(randn([1, 2, 4, 4], { seed: 1 }), { size: [7, 7] });
    expect(y.shape).toEqual([1, 2, 7, 7]);
  });
  it('bilinear matches torch conventions (align_corners false and true)', () => {
    const x = tensor([[[[0, 1], [2, 3]]]]);
    // torch.nn.functional.interpolate(x, scale_factor=2, mode='bilinear') for this input:
    expect(interpolate(x, { scaleFactor: 2, mode: 'bilinear' }).toArray()[0][0][0].map((v: number) => Math.round(v * 1e4) / 1e4)).toEqual([0, 0.25, 0.75, 1]);
    expect(interpolate(x, { size: [3, 3], mode: 'bilinear', alignCorners: true }).toArray()[0][0][1].map((v: number) => Math.round(v * 1e4) / 1e4)).toEqual([1, 1.5, 2]);
  });
  it('resampling and pooling backwards match finite differences', () => {
    for (const mode of ['nearest', 'bilinear'] as const) {
      const r = gradcheck((a) => interpolate(a, { scaleFactor: 2, mode }), [randn([1, 2, 3, 3], { seed: 2 }).requiresGrad_()]);
      expect(r.ok, `${mode}: ${r.worst}`).toBe(true);
    }
    const p = avgPool2d(tensor([[[[1, 2, 3, 4], [5, 6, 7, 8]]]]), 2);
    expect(p.toArray()).toEqual([[[[3.5, 5.5]]]]);
    const r = gradcheck((a) => avgPool2d(a, 2), [randn([1, 2, 4, 4], { seed: 3 }).requiresGrad_()]);
    expect(r.ok, r.worst).toBe(true);
  });
  it('dropout keeps the expectation, is seeded, and is the identity in eval', () => {
    const x = rand([20000], { seed: 4 }).add(1);
    const y = dropout(x, 0.25, true, new Generator(7)).data() as Float32Array;
    const X = x.data() as Float32Array;
    let zeros = 0, sx = 0, sy = 0;
    for (let i = 0; i < y.length; ++i) { if (y[i] === 0) zeros++; sx += X[i]!; sy += y[i]!; }
    expect(zeros / y.length).toBeGreaterThan(0.23); expect(zeros / y.length).toBeLessThan(0.27);
    expect(Math.abs(sy / sx - 1)).toBeLessThan(0.02);
    expect(dropout(x, 0.25, true, new Generator(7)).data()).toEqual(y);
    expect(dropout(x, 0.25, false)).toBe(x);
    expect(() => dropout(x, 1.5, true)).toThrow(ArgumentError);
  });
});

describe('joining, splitting and indexing', () => {
  it('concat, stack, split and chunk, with gradients', () => {
    const a = tensor([[1, 2], [3, 4]]), b = tensor([[5, 6]]);
    expect(concat([a, b], 0).toArray()).toEqual([[1, 2], [3, 4], [5, 6]]);
    expect(concat([a, tensor([[9], [8]])], 1).toArray()).toEqual([[1, 2, 9], [3, 4, 8]]);
    expect(stack([a, a], 1).shape).toEqual([2, 2, 2]);
    expect(split(tensor([1, 2, 3, 4, 5]), 2).map((t) => t.toArray())).toEqual([[1, 2], [3, 4], [5]]);
    expect(split(tensor([1, 2, 3, 4, 5]), [1, 4]).map((t) => t.toArray())).toEqual([[1], [2, 3, 4, 5]]);
    expect(chunk(tensor([1, 2, 3, 4, 5]), 2).map((t) => t.toArray())).toEqual([[1, 2, 3], [4, 5]]);
    expect(() => concat([a, tensor([1, 2])])).toThrow(ShapeError);
    expect(() => split(tensor([1, 2, 3]), [1, 1])).toThrow(ArgumentError);
    const r = gradcheck((x, y) => concat([x.tanh(), y], 1).mul(concat(chunk(concat([x, y], 1), 1, 1), 1)), [randn([2, 3], { seed: 5 }).requiresGrad_(), randn([2, 2], { seed: 6 }).requiresGrad_()]);
    expect(r.ok, r.worst).toBe(true);
  });
  it('indexSelect, embedding and gather, with scatter-add gradients', () => {
    const x = tensor([[1, 2, 3], [4, 5, 6], [7, 8, 9]]);
    const idx = tensor([2, 0, 2], { dtype: 'i64' });
    expect(indexSelect(x, 0, idx).toArray()).toEqual([[7, 8, 9], [1, 2, 3], [7, 8, 9]]);
    expect(indexSelect(x, 1, idx).toArray()).toEqual([[3, 1, 3], [6, 4, 6], [9, 7, 9]]);
    expect(embedding(tensor([[0, 2], [1, 1]], { dtype: 'i32' }), x).toArray()).toEqual([[[1, 2, 3], [7, 8, 9]], [[4, 5, 6], [4, 5, 6]]]);
    expect(gather(x, 1, tensor([[0, 0], [1, 0], [2, 2]], { dtype: 'i64' })).toArray()).toEqual([[1, 1], [5, 4], [9, 9]]);
    expect(() => indexSelect(x, 0, tensor([3], { dtype: 'i64' }))).toThrow(/out of range/);
    expect(() => embedding(tensor([0.5]), x)).toThrow(/i64 or i32/);
    const w = randn([4, 3], { seed: 7 }).requiresGrad_();
    const e = embedding(tensor([1, 3, 1], { dtype: 'i64' }), w);
    sum(mul(e, e)).backward();
    const W = w.data() as Float32Array, G = w.grad!.data() as Float32Array;
    expect(G[0]).toBe(0); expect(G[3]).toBeCloseTo(4 * W[3]!, 5); expect(G[9]).toBeCloseTo(2 * W[9]!, 5);
    const r = gradcheck((a) => gather(a, 0, tensor([[1, 0], [1, 1]], { dtype: 'i64' })).mul(a.slice(0, 0, 2)), [randn([3, 2], { seed: 8 }).requiresGrad_()]);
    expect(r.ok, r.worst).toBe(true);
  });
  it('pad: constant (incl. cropping), reflect and replicate, with gradients', () => {
    const x = tensor([[1, 2, 3]]);
    expect(pad(x, [1, 2]).toArray()).toEqual([[0, 1, 2, 3, 0, 0]]);
    expect(pad(x, [0, 1, 1, 0], { value: 9 }).toArray()).toEqual([[9, 9, 9, 9], [1, 2, 3, 9]]);
    expect(pad(x, [-1, 1]).toArray()).toEqual([[2, 3, 0]]);
    expect(pad(x, [2, 2], { mode: 'reflect' }).toArray()).toEqual([[3, 2, 1, 2, 3, 2, 1]]);
    expect(pad(x, [2, 1], { mode: 'replicate' }).toArray()).toEqual([[1, 1, 1, 2, 3, 3]]);
    expect(() => pad(x, [3, 0], { mode: 'reflect' })).toThrow(ArgumentError);
    for (const mode of ['constant', 'reflect', 'replicate'] as const) {
      const r = gradcheck((a) => pad(a, [1, 1, 1, 0], { mode }), [randn([1, 2, 3, 3], { seed: 9 }).requiresGrad_()]);
      expect(r.ok, `${mode}: ${r.worst}`).toBe(true);
    }
  });
});

describe('losses', () => {
  const a = randn([4, 5], { seed: 40 }), b = randn([4, 5], { seed: 41 });
  const A = f64(a), B = f64(b);
  const meanOf = (f: (d: number) => number) => A.reduce((s, v, i) => s + f(v - B[i]!), 0) / A.length;
  it('mse, huber and pseudo-Huber match their definitions', () => {
    expect(mseLoss(a, b).item()).toBeCloseTo(meanOf((d) => d * d), 5);
    expect(mseLoss(a, b, { reduction: 'sum' }).item()).toBeCloseTo(meanOf((d) => d * d) * 20, 4);
    expect(huberLoss(a, b, { delta: 0.7 }).item()).toBeCloseTo(meanOf((d) => (Math.abs(d) < 0.7 ? 0.5 * d * d : 0.7 * (Math.abs(d) - 0.35))), 5);
    expect(pseudoHuberLoss(a, b, { c: 0.1 }).item()).toBeCloseTo(meanOf((d) => Math.sqrt(d * d + 0.01) - 0.1), 5);
    for (const f of [(x: Tensor, y: Tensor) => mseLoss(x, y), (x: Tensor, y: Tensor) => huberLoss(x, y, { delta: 0.7 }), (x: Tensor, y: Tensor) => pseudoHuberLoss(x, y, { c: 0.1 })]) {
      const r = gradcheck(f, [a.detach().requiresGrad_(), b.detach().requiresGrad_()], { eps: 1e-3 });
      expect(r.ok, r.worst).toBe(true);
    }
    expect(() => mseLoss(a, randn([5, 4]))).toThrow(ShapeError);
  });
  it('cross-entropy with indices, probabilities and label smoothing', () => {
    const logits = randn([3, 4], { seed: 42 });
    const L = f64(logits);
    const t = [2, 0, 3];
    let ref = 0, refSmooth = 0;
    for (let i = 0; i < 3; ++i) {
      const row = L.slice(i * 4, i * 4 + 4); const m = Math.max(...row); const lse = m + Math.log(row.reduce((s, v) => s + Math.exp(v - m), 0));
      ref += lse - row[t[i]!]!;
      refSmooth += 0.9 * (lse - row[t[i]!]!) + 0.1 * row.reduce((s, v) => s + (lse - v), 0) / 4;
    }
    expect(crossEntropy(logits, tensor(t, { dtype: 'i64' })).item()).toBeCloseTo(ref / 3, 5);
    expect(crossEntropy(logits, tensor(t, { dtype: 'i64' }), { labelSmoothing: 0.1 }).item()).toBeCloseTo(refSmooth / 3, 5);
    const r = gradcheck((x) => crossEntropy(x, tensor(t, { dtype: 'i64' }), { reduction: 'none' }), [logits.requiresGrad_()]);
    expect(r.ok, r.worst).toBe(true);
    expect(() => crossEntropy(logits, tensor([0, 1, 4], { dtype: 'i64' }))).toThrow(/out of range/);
  });
});

describe('gradient checkpointing', () => {
  it('gives the same gradients as the plain graph, including for weights used inside', () => {
    const run = (useCheckpoint: boolean) => {
      const x = randn([2, 3, 5, 5], { seed: 50 }).requiresGrad_();
      const w = randn([3, 3, 3, 3], { seed: 51 }).requiresGrad_();
      const seg = (h: Tensor) => silu(conv2d(silu(conv2d(h, w, null, { padding: 1 })), w, null, { padding: 1 }));
      const y = useCheckpoint ? checkpoint(seg, x) : seg(x);
      sum(mul(y, y)).backward();
      return [x.grad!.data() as Float32Array, w.grad!.data() as Float32Array];
    };
    const [gx1, gw1] = run(false), [gx2, gw2] = run(true);
    expect(relErr(gx2!, gx1!)).toBeLessThan(1e-6);
    expect(relErr(gw2!, gw1!)).toBeLessThan(1e-6);
  });
});
