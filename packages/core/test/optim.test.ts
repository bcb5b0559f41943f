// optim: each optimizer against the torch update equations written out in float64, state-dict
// round trips that continue bit-identically, clipping, schedules, EMA, and a tiny fit with Adam.
import { describe, it, expect } from 'vitest';
import { optim, nn, tensor, sub, mul, sum, mean, square, randn, tidy, keep, Generator, Tensor, ArgumentError, DTypeError, ShapeError } from '@qdm/core';

// ---- a small quadratic: loss = 0.5 Σ a (p - c)², grad = a (p - c) ----------------------------
const A = [1, 2, 0.5, 3];
const C = [0.25, -1, 2, 0.5];
const P0 = [1.5, 0.5, -1, 2.25];

function makeParam(values = P0): Tensor { return tensor(values, { requiresGrad: true }); }

function backwardQuadratic(p: Tensor): void {
  tidy(() => {
    const loss = mul(sum(mul(tensor(A), square(sub(p, tensor(C))))), 0.5);
    loss.backward();
  });
}
const gradRef = (p: number[]) => p.map((v, i) => A[i]! * (v - C[i]!));

function run(opt: optim.Optimizer, p: Tensor, steps: number): void {
  for (let s = 0; s < steps; ++s) { opt.zeroGrad(); backwardQuadratic(p); opt.step(); }
}

// Relative to max(|x|, 1): parameters are O(1) and stored in f32, so an element passing near zero
// carries the absolute rounding of its O(1) trajectory.
function expectClose(actual: ArrayLike<number>, expected: number[], rel = 1e-6): void {
  expect(actual.length).toBe(expected.length);
  for (let i = 0; i < expected.length; ++i) {
    const err = Math.abs(actual[i]! - expected[i]!);
    if (err > rel * Math.max(Math.abs(expected[i]!), 1)) throw new Error(`element ${i}: ${actual[i]} vs reference ${expected[i]} (error ${err})`);
  }
}

// torch.optim.SGD, float64.
function sgdRef(steps: number, h: { lr: number; momentum?: number; dampening?: number; weightDecay?: number; nesterov?: boolean }, p0 = P0): number[] {
  const { lr, momentum = 0, dampening = 0, weightDecay = 0, nesterov = false } = h;
  const p = [...p0];
  let buf: number[] | null = null;
  for (let s = 0; s < steps; ++s) {
    let g = gradRef(p).map((v, i) => v + weightDecay * p[i]!);
    if (momentum !== 0) {
      buf = buf === null ? [...g] : buf.map((b, i) => momentum * b + (1 - dampening) * g[i]!);
      g = nesterov ? g.map((v, i) => v + momentum * buf![i]!) : [...buf];
    }
    for (let i = 0; i < p.length; ++i) p[i] = p[i]! - lr * g[i]!;
  }
  return p;
}

// torch.optim.Adam / AdamW, float64.
function adamRef(steps: number, h: { lr?: number; betas?: [number, number]; eps?: number; weightDecay?: number; amsgrad?: boolean; decoupled?: boolean }, p0 = P0): number[] {
  const { lr = 1e-3, betas: [b1, b2] = [0.9, 0.999], eps = 1e-8, weightDecay = 0, amsgrad = false, decoupled = false } = h;
  const p = [...p0];
  const m = p.map(() => 0), v = p.map(() => 0), vmax = p.map(() => 0);
  for (let t = 1; t <= steps; ++t) {
    let g = gradRef(p);
    if (decoupled) for (let i = 0; i < p.length; ++i) p[i] = p[i]! * (1 - lr * weightDecay);
    else g = g.map((x, i) => x + weightDecay * p[i]!);
    const bc1 = 1 - b1 ** t, bc2 = 1 - b2 ** t;
    for (let i = 0; i < p.length; ++i) {
      m[i] = b1 * m[i]! + (1 - b1) * g[i]!;
      v[i] = b2 * v[i]! + (1 - b2) * g[i]! * g[i]!;
      vmax[i] = Math.max(vmax[i]!, v[i]!);
      const denom = Math.sqrt(amsgrad ? vmax[i]! : v[i]!) / Math.sqrt(bc2) + eps;
      p[i] = p[i]! - (lr / bc1) * (m[i]! / denom);
    }
  }
  return p;
}

describe('SGD', () => {
  const cases: Array<[string, { lr: number; momentum?: number; dampening?: number; weightDecay?: number; nesterov?: boolean }]> = [
    ['plain', { lr: 0.1 }],
    ['momentum + dampening', { lr: 0.05, momentum: 0.9, dampening: 0.2 }],
    ['weight decay', { lr: 0.1, weightDecay: 0.3 }],
    ['nesterov + weight decay', { lr: 0.05, momentum: 0.8, nesterov: true, weightDecay: 0.1 }],
  ];
  for (const [name, h] of cases) {
    it(`matches torch.optim.SGD (${name}) over 6 steps`, () => {
      const p = makeParam();
      const storage = p.storage;
      run(new optim.SGD([p], h), p, 6);
      expectClose(p.data() as Float32Array, sgdRef(6, h));
      expect(p.storage).toBe(storage);  // updated in place
      expect(p.gradFn).toBeNull();
      expect(p.isLeaf).toBe(true);
    });
  }

  it('rejects bad hyperparameters and parameters', () => {
    expect(() => new optim.SGD([makeParam()], { lr: -1 })).toThrow(ArgumentError);
    expect(() => new optim.SGD([makeParam()], { lr: 0.1, nesterov: true })).toThrow(/nesterov/);
    expect(() => new optim.SGD([], { lr: 0.1 })).toThrow(/empty parameter list/);
    const p = makeParam();
    expect(() => new optim.SGD([p, p], { lr: 0.1 })).toThrow(/more than one place/);
    expect(() => new optim.SGD([tensor([1, 2], { dtype: 'f16', requiresGrad: true })], { lr: 0.1 })).toThrow(DTypeError);
    expect(() => new optim.SGD([{ params: [makeParam()], betas: [0.9, 0.9] }], { lr: 0.1 })).toThrow(/unknown hyperparameter 'betas'/);
  });
});

describe('Adam and AdamW', () => {
  const cases: Array<[string, Parameters<typeof adamRef>[1]]> = [
    ['defaults with a larger lr', { lr: 0.05 }],
    ['betas, eps, L2 weight decay', { lr: 0.02, betas: [0.8, 0.99], eps: 1e-3, weightDecay: 0.1 }],
    ['amsgrad', { lr: 0.1, amsgrad: true }],
  ];
  for (const [name, h] of cases) {
    it(`Adam matches torch.optim.Adam (${name}) over 8 steps`, () => {
      const p = makeParam();
      const { decoupled: _d, ...opts } = h;
      run(new optim.Adam([p], opts), p, 8);
      expectClose(p.data() as Float32Array, adamRef(8, h));
    });
  }
  it('AdamW matches torch.optim.AdamW (decoupled decay, default 1e-2 and 0.2)', () => {
    for (const wd of [undefined, 0.2]) {
      const p = makeParam();
      run(new optim.AdamW([p], { lr: 0.05, weightDecay: wd }), p, 8);
      expectClose(p.data() as Float32Array, adamRef(8, { lr: 0.05, weightDecay: wd ?? 1e-2, decoupled: true }));
    }
  });
  it('AMSGrad keeps the running maximum of the second moment', () => {
    const p = makeParam();
    const opt = new optim.Adam([p], { lr: 0.1, amsgrad: true });
    run(opt, p, 3);
    const s = opt.stateDict().state['0.0']!;
    expect(s.step).toBe(3);
    const v = (s.expAvgSq as Tensor).data() as Float32Array, vmax = (s.maxExpAvgSq as Tensor).data() as Float32Array;
    for (let i = 0; i < v.length; ++i) expect(vmax[i]!).toBeGreaterThanOrEqual(v[i]!);
  });
  it('rejects bad betas', () => {
    expect(() => new optim.Adam([makeParam()], { betas: [1, 0.9] })).toThrow(/betas\[0\]/);
    expect(() => new optim.Adam([makeParam()], { betas: [0.9] as unknown as [number, number] })).toThrow(/pair/);
  });
});

describe('Optimizer mechanics', () => {
  it('param groups keep their own lr; unspecified hyperparameters take the defaults', () => {
    const a = makeParam(), b = makeParam();
    const opt = new optim.SGD([{ params: [a], lr: 0.1 }, { params: [b] }], { lr: 0.01, momentum: 0.5 });
    expect(opt.paramGroups.map((g) => g.lr)).toEqual([0.1, 0.01]);
    for (let s = 0; s < 4; ++s) { opt.zeroGrad(); backwardQuadratic(a); backwardQuadratic(b); opt.step(); }
    expectClose(a.data() as Float32Array, sgdRef(4, { lr: 0.1, momentum: 0.5 }));
    expectClose(b.data() as Float32Array, sgdRef(4, { lr: 0.01, momentum: 0.5 }));
  });

  it('zeroGrad drops gradients (or zero-fills them); parameters without a gradient are skipped', () => {
    const p = makeParam(), idle = makeParam();
    const opt = new optim.Adam([p, idle], { lr: 0.1 });
    backwardQuadratic(p);
    opt.step();
    expect(Array.from(idle.data() as Float32Array)).toEqual(Array.from(new Float32Array(P0)));
    expect(Object.keys(opt.stateDict().state)).toEqual(['0.0']);
    opt.zeroGrad({ setToNone: false });
    expect(Array.from(p.grad!.data() as Float32Array)).toEqual([0, 0, 0, 0]);
    opt.zeroGrad();
    expect(p.grad).toBeNull();
  });

  it('steps inside tidy() keep their state', () => {
    const p = makeParam();
    const opt = new optim.Adam([p], { lr: 0.05 });
    for (let s = 0; s < 3; ++s) tidy(() => { opt.zeroGrad(); backwardQuadratic(p); opt.step(); });
    expectClose(p.data() as Float32Array, adamRef(3, { lr: 0.05 }));
  });

  const resumable: Array<[string, (ps: Tensor[]) => optim.Optimizer]> = [
    ['SGD with momentum', (ps) => new optim.SGD(ps, { lr: 0.05, momentum: 0.9, nesterov: true })],
    ['Adam with amsgrad', (ps) => new optim.Adam(ps, { lr: 0.05, amsgrad: true, weightDecay: 0.01 })],
    ['AdamW', (ps) => new optim.AdamW(ps, { lr: 0.05 })],
  ];
  for (const [name, make] of resumable) {
    it(`stateDict round trip continues bit-identically (${name})`, () => {
      const straight = makeParam();
      run(make([straight]), straight, 6);

      const p = makeParam();
      const first = make([p]);
      run(first, p, 3);
      const sd = first.stateDict();
      run(first, p, 2);  // the snapshot is a copy: training on does not change it
      // the parameter as it was when the snapshot was taken (training is deterministic)
      const p3 = makeParam();
      run(make([p3]), p3, 3);
      const second = make([p3]);
      second.loadStateDict(sd);
      run(second, p3, 3);
      expect(Buffer.from(p3.cpuData().buffer).equals(Buffer.from(straight.cpuData().buffer))).toBe(true);
    });
  }

  it('stateDict holds hyperparameters without params, and loading restores them', () => {
    const p = makeParam();
    const opt = new optim.Adam([p], { lr: 0.05, betas: [0.8, 0.9] });
    run(opt, p, 1);
    const sd = opt.stateDict();
    expect(sd.paramGroups).toEqual([{ lr: 0.05, betas: [0.8, 0.9], eps: 1e-8, weightDecay: 0, amsgrad: false }]);
    const other = new optim.Adam([makeParam()]);
    other.loadStateDict(sd);
    expect(other.paramGroups[0]!.lr).toBe(0.05);
    expect(other.paramGroups[0]!.betas).toEqual([0.8, 0.9]);
  });

  it('loadStateDict rejects mismatched shapes, counts and entries', () => {
    const p = makeParam();
    const opt = new optim.Adam([p], { lr: 0.05 });
    run(opt, p, 1);
    const sd = opt.stateDict();
    const small = new optim.Adam([tensor([1, 2], { requiresGrad: true })]);
    expect(() => small.loadStateDict(sd)).toThrow(/shape \[4\], but parameter 0\.0 has shape \[2\]/);
    const two = new optim.Adam([{ params: [makeParam()] }, { params: [makeParam()] }]);
    expect(() => two.loadStateDict(sd)).toThrow(/1 parameter groups, this optimizer has 2/);
    const fresh = new optim.Adam([makeParam()]);
    expect(() => fresh.loadStateDict({ ...sd, state: { '0.3': sd.state['0.0']! } })).toThrow(/names parameter 3/);
    const { expAvgSq: _drop, ...partial } = sd.state['0.0']!;
    expect(() => fresh.loadStateDict({ ...sd, state: { '0.0': partial } })).toThrow(/expected \[expAvg, expAvgSq, step\]/);
    expect(() => fresh.loadStateDict({ ...sd, paramGroups: [{ ...sd.paramGroups[0], amsgrad: true }] })).toThrow(ArgumentError);
    expect(() => fresh.loadStateDict({ ...sd, paramGroups: [{ ...sd.paramGroups[0], lr: -1 }] })).toThrow(/invalid lr/);
  });

  it('a gradient of the wrong shape fails with a ShapeError', () => {
    const p = makeParam();
    const opt = new optim.SGD([p], { lr: 0.1 });
    p.grad = tensor([1, 2]);
    expect(() => opt.step()).toThrow(ShapeError);
  });
});

describe('gradient clipping', () => {
  function withGrads(...grads: number[][]): Tensor[] {
    return grads.map((g) => { const p = tensor(g.map(() => 0), { requiresGrad: true }); p.grad = tensor(g); return p; });
  }
  it('clipGradNorm returns the total 2-norm and scales all gradients together', () => {
    const ps = withGrads([3, 4], [12]);
    const total = optim.clipGradNorm(ps, 6.5);
    expect(total).toBeCloseTo(13, 12);
    const coef = 6.5 / (13 + 1e-6);
    expectClose(ps[0]!.grad!.data() as Float32Array, [3 * coef, 4 * coef]);
    expectClose(ps[1]!.grad!.data() as Float32Array, [12 * coef]);
  });
  it('clipGradNorm leaves gradients under the limit alone; inf and 1 norms; parameters without grad skipped', () => {
    const ps = withGrads([3, -4], [1]);
    ps.push(tensor([5], { requiresGrad: true }));
    expect(optim.clipGradNorm(ps, 100)).toBeCloseTo(Math.sqrt(26), 6);
    expect(Array.from(ps[0]!.grad!.data() as Float32Array)).toEqual([3, -4]);
    expect(optim.clipGradNorm(ps, 100, Infinity)).toBe(4);
    expect(optim.clipGradNorm(ps, 4, 1)).toBe(8);
    expectClose(ps[0]!.grad!.data() as Float32Array, [3 * 4 / (8 + 1e-6), -4 * 4 / (8 + 1e-6)]);
    expect(() => optim.clipGradNorm(ps, -1)).toThrow(ArgumentError);
  });
  it('clipGradValue clamps each element', () => {
    const ps = withGrads([3, -4, 0.5]);
    optim.clipGradValue(ps, 1);
    expect(Array.from(ps[0]!.grad!.data() as Float32Array)).toEqual([1, -1, 0.5]);
  });
});

describe('learning-rate schedules', () => {
  it('follow diffusers get_scheduler curves', () => {
    const { schedules } = optim;
    expect(schedules.constant()(1234)).toBe(1);
    const warm = schedules.linearWarmup(4);
    expect([0, 1, 2, 4, 100].map(warm)).toEqual([0, 0.25, 0.5, 1, 1]);
    const lin = schedules.linearWithWarmup(10, 110);
    expect([5, 10, 60, 110, 200].map(lin)).toEqual([0.5, 1, 0.5, 0, 0]);
    const cos = schedules.cosineWithWarmup(10, 110);
    expect(cos(5)).toBe(0.5);
    expect(cos(10)).toBe(1);
    expect(cos(60)).toBeCloseTo(0.5, 12);
    expect(cos(35)).toBeCloseTo(0.5 * (1 + Math.cos(Math.PI * 0.25)), 12);
    expect(cos(110)).toBeCloseTo(0, 12);
    const cosMin = schedules.cosineWithWarmup(0, 100, 0.1);
    expect(cosMin(100)).toBeCloseTo(0.1, 12);
    expect(cosMin(50)).toBeCloseTo(0.55, 12);
    const decay = schedules.stepDecay(10, 0.5);
    expect([0, 9, 10, 25].map(decay)).toEqual([1, 1, 0.5, 0.25]);
    expect(() => schedules.stepDecay(0, 0.5)).toThrow(ArgumentError);
  });
  it('LRScheduler sets each group lr from its initial lr, and round-trips', () => {
    const opt = new optim.SGD([{ params: [makeParam()], lr: 1 }, { params: [makeParam()] }], { lr: 0.1 });
    const sched = new optim.LRScheduler(opt, optim.schedules.linearWarmup(4));
    expect(sched.lastLr).toEqual([0, 0]);
    sched.step(); sched.step();
    expect(sched.lastLr).toEqual([0.5, 0.05]);
    const sd = sched.stateDict();
    const opt2 = new optim.SGD([{ params: [makeParam()], lr: 1 }, { params: [makeParam()] }], { lr: 0.1 });
    const sched2 = new optim.LRScheduler(opt2, optim.schedules.linearWarmup(4));
    sched2.loadStateDict(sd);
    sched.step(); sched2.step();
    expect(sched2.lastLr).toEqual(sched.lastLr);
    expect(sched2.lastLr).toEqual([0.75, 0.07500000000000001]);
    expect(() => new optim.LRScheduler(opt, () => NaN)).toThrow(/returned NaN/);
  });
});

describe('EMA', () => {
  it('without warmup: the first update copies, then shadow -= (1 - decay)(shadow - param)', () => {
    const p = makeParam([1, 2]);
    const ema = new optim.EMA([p], { decay: 0.9 });
    (p.cpuData() as Float32Array).set([3, 4]);
    ema.update();  // diffusers' gating: decay 0 at the first step
    expectClose(ema.averages[0]!.data() as Float32Array, [3, 4]);
    (p.cpuData() as Float32Array).set([5, 0]);
    ema.update();
    expectClose(ema.averages[0]!.data() as Float32Array, [3 + 0.1 * 2, 4 - 0.1 * 4]);
  });
  it('with warmup: decay (1+s)/(10+s) capped at decay; updateAfterStep delays averaging', () => {
    const ema = new optim.EMA([makeParam([0])], { decay: 0.5, warmup: true, updateAfterStep: 2 });
    expect([1, 2, 3, 4, 5, 20].map((s) => ema.currentDecay(s))).toEqual([0, 0, 0, 2 / 11, 3 / 12, 0.5]);
    const power = new optim.EMA([makeParam([0])], { decay: 0.9999, warmup: true, power: 2 / 3 });
    expect(power.currentDecay(11)).toBeCloseTo(1 - 11 ** (-2 / 3), 12);
    const p = makeParam([0]);
    const e = new optim.EMA([p], { decay: 0.9999, warmup: true });
    (p.cpuData() as Float32Array)[0] = 10; e.update();  // copy
    (p.cpuData() as Float32Array)[0] = 0; e.update();   // decay 2/11
    expectClose(e.averages[0]!.data() as Float32Array, [10 * 2 / 11]);
  });
  it('store/copyTo/restore swap the averaged weights in and out; state round-trips', () => {
    const p = makeParam([1, 1]);
    const ema = new optim.EMA([p], { decay: 0.5 });
    ema.update();
    (p.cpuData() as Float32Array).set([3, 5]);
    ema.update();  // shadow = 1 + 0.5 (3 - 1), 1 + 0.5 (5 - 1)
    ema.store();
    ema.copyTo();
    expect(Array.from(p.data() as Float32Array)).toEqual([2, 3]);
    ema.restore();
    expect(Array.from(p.data() as Float32Array)).toEqual([3, 5]);
    expect(() => ema.restore()).toThrow(/nothing stored/);
    const sd = ema.stateDict();
    const other = new optim.EMA([makeParam([0, 0])], { decay: 0.1 });
    other.loadStateDict(sd);
    expect(Array.from(other.averages[0]!.data() as Float32Array)).toEqual([2, 3]);
    expect(other.optimizationStep).toBe(2);
    expect(other.decay).toBe(0.5);
    expect(() => new optim.EMA([makeParam([0])]).loadStateDict(sd)).toThrow(/shape \[2\], parameter 0 has shape \[1\]/);
    expect(() => ema.copyTo([makeParam([1])])).toThrow(ArgumentError);
  });
});

describe('end to end', () => {
  function fit(seed: number): { loss: number; weights: Float32Array } {
    const gen = new Generator(seed);
    const model = new nn.Linear(1, 1, { generator: gen });
    const x = randn([64, 1], { generator: gen });
    const y = tidy(() => keep(mul(x, 3).add(2)));
    const opt = new optim.Adam(model.parameters(), { lr: 0.1 });
    const sched = new optim.LRScheduler(opt, optim.schedules.cosineWithWarmup(10, 400, 0.05));
    let loss = Infinity;
    for (let step = 0; step < 400; ++step) {
      opt.zeroGrad();
      loss = tidy(() => {
        const l = mean(square(sub(model.call(x), y)));
        l.backward();
        return l.item();
      });
      optim.clipGradNorm(model.parameters(), 10);
      opt.step();
      sched.step();
    }
    const weights = Float32Array.from(model.parameters().flatMap((p) => Array.from(p.data() as Float32Array)));
    return { loss, weights };
  }
  it('fits y = 3x + 2 with Adam, bit-identically across runs', () => {
    const a = fit(7);
    expect(a.loss).toBeLessThan(1e-3);
    expect(a.weights[0]).toBeCloseTo(3, 2);
    expect(a.weights[1]).toBeCloseTo(2, 2);
    const b = fit(7);
    expect(Buffer.from(b.weights.buffer).equals(Buffer.from(a.weights.buffer))).toBe(true);
  });
});
