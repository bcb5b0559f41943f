// End-to-end: a tiny conv net learns a separable task from scratch; the loss falls, and two
// runs from the same seed are bit-identical (whatever the thread count).
import { describe, it, expect } from 'vitest';
import { nn, Generator, Module, Tensor, randn, tensor, tidy, keep, noGrad, crossEntropy, manualSeed, setNumThreads, getNumThreads, mean } from '@qdm/core';

class TinyNet extends Module {
  conv1: nn.Conv2d; norm: nn.GroupNorm; conv2: nn.Conv2d; fc: nn.Linear;
  constructor(gen: Generator) {
    super();
    this.conv1 = this.registerModule('conv1', new nn.Conv2d(1, 8, 3, { padding: 1, generator: gen }));
    this.norm = this.registerModule('norm', new nn.GroupNorm(2, 8));
    this.conv2 = this.registerModule('conv2', new nn.Conv2d(8, 8, 3, { padding: 1, stride: 2, generator: gen }));
    this.fc = this.registerModule('fc', new nn.Linear(8, 2, { generator: gen }));
  }
  forward(x: Tensor): Tensor {
    const h = this.conv2.call(this.norm.call(this.conv1.call(x)).silu()).silu();
    return this.fc.call(mean(h, [2, 3]));
  }
}

/** Class 0: a bright top half; class 1: a bright bottom half; plus noise. */
function batch(gen: Generator, n: number): { x: Tensor; y: Tensor } {
  const labels = Array.from(randn([n], { generator: gen }).data(), (v) => (Number(v) > 0 ? 1 : 0));
  const noise = randn([n, 1, 8, 8], { generator: gen }).data() as Float32Array;
  const px = new Float32Array(n * 64);
  for (let i = 0; i < n; ++i) for (let p = 0; p < 64; ++p) px[i * 64 + p] = 0.5 * noise[i * 64 + p]! + ((p < 32) === (labels[i] === 0) ? 1 : 0);
  return { x: tensor(px, { shape: [n, 1, 8, 8] }), y: tensor(labels, { dtype: 'i64' }) };
}

function train(seed: number): { losses: number[]; weights: Float32Array } {
  manualSeed(seed);
  const gen = new Generator(seed);
  const net = new TinyNet(gen);
  const losses: number[] = [];
  for (let step = 0; step < 60; ++step) {
    const l = tidy(() => {
      const { x, y } = batch(gen, 16);
      const loss = crossEntropy(net.call(x), y);
      loss.backward();
      return keep(loss);
    });
    losses.push(l.item());
    l.dispose();
    noGrad(() => {
      for (const p of net.parameters()) {
        const w = p.cpuData() as Float32Array, g = p.grad!.data() as Float32Array;
        for (let i = 0; i < w.length; ++i) w[i]! -= 0.1 * g[i]!;
        p.grad!.dispose(); p.grad = null;
      }
    });
  }
  const weights = Float32Array.from(net.parameters().flatMap((p) => Array.from(p.data() as Float32Array)));
  return { losses, weights };
}

describe('end-to-end training', () => {
  it('learns, and is bit-identical across runs and thread counts', () => {
    const threads = getNumThreads();
    const a = train(3);
    const early = a.losses.slice(0, 10).reduce((s, v) => s + v, 0) / 10;
    const late = a.losses.slice(-10).reduce((s, v) => s + v, 0) / 10;
    expect(late).toBeLessThan(early * 0.5);
    setNumThreads(1);
    try {
      const b = train(3);
      expect(b.losses).toEqual(a.losses);
      expect(Buffer.from(b.weights.buffer).equals(Buffer.from(a.weights.buffer))).toBe(true);
    } finally { setNumThreads(threads); }
  });
});
