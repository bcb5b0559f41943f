// Integer execution: the integer model must equal the fake-quant model (same codes, same
// rounding; only the f32 summation order differs) on a conv + linear model for W8A8, W4A8
// (symmetric and asymmetric), temporal activation tables and split convs, and on a fixture U-Net.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { Generator, Module, Tensor, cast, concat, enableGrad, loadModel, loadSafetensors, mean, nn, noGrad, randn, silu, withContext } from '@qdm/core';
import { QuantConv2d, QuantLinear, fromIntegerExecution, isIntegerLayer, quantize, toIntegerExecution, type QuantRecipe } from '@qdm/quant';
import { vals } from './helpers.js';

class SmallNet extends Module {
  conv_in: nn.Conv2d; conv1: nn.Conv2d; conv2: nn.Conv2d; down: nn.Conv2d; lin1: nn.Linear; lin2: nn.Linear; out: nn.Linear;
  constructor(seed = 1) {
    super();
    const generator = new Generator(seed);
    this.conv_in = this.registerModule('conv_in', new nn.Conv2d(3, 16, 3, { padding: 1, generator }));
    this.conv1 = this.registerModule('conv1', new nn.Conv2d(19, 16, 3, { padding: 1, generator }));  // input concat[h, x]
    this.conv2 = this.registerModule('conv2', new nn.Conv2d(16, 16, 1, { generator }));
    this.down = this.registerModule('down', new nn.Conv2d(16, 24, 3, { stride: 2, padding: 1, generator }));
    this.lin1 = this.registerModule('lin1', new nn.Linear(24, 32, { generator }));
    this.lin2 = this.registerModule('lin2', new nn.Linear(32, 32, { generator }));
    this.out = this.registerModule('out', new nn.Linear(32, 10, { generator }));
  }
  forward(x: Tensor): Tensor {
    let h = silu(this.conv_in.call(x));
    h = silu(this.conv1.call(concat([h, x], 1)));
    h = this.down.call(silu(this.conv2.call(h)));
    const v = mean(h, [2, 3]);
    return this.out.call(silu(this.lin2.call(silu(this.lin1.call(v)))));
  }
}

const batches = (n: number, seed: number) => Array.from({ length: n }, (_, i) => [randn([2, 3, 8, 8], { seed: seed + i })]);
const relErr = (a: Tensor, b: Tensor) => {
  const x = vals(a), y = vals(b);
  let num = 0, den = 0;
  for (let i = 0; i < x.length; i++) { num += (x[i]! - y[i]!) ** 2; den += y[i]! ** 2; }
  return Math.sqrt(num / den);
};
/** Relative error of every layer's output (hooks), so a layer-level mismatch cannot hide behind the head. */
function layerOutputs(model: Module, run: () => unknown): Map<string, Tensor> {
  const out = new Map<string, Tensor>();
  const removers = [...model.namedModules()].filter(([, m]) => m instanceof QuantLinear || m instanceof QuantConv2d)
    .map(([name, m]) => m.registerForwardHook((_m, _a, y) => { out.set(name, (y as Tensor).clone()); }));
  try { noGrad(run); } finally { for (const r of removers) r(); }
  return out;
}

async function compare(recipe: QuantRecipe, opts: { temporal?: boolean } = {}) {
  const model = new SmallNet();
  const calibration = opts.temporal
    ? batches(6, 10).map((args, i) => ({ args, context: { stepIndex: i % 3 } }))
    : batches(4, 10);
  await quantize(model, recipe, { calibration });
  const x = randn([3, 3, 8, 8], { seed: 77 });
  const steps = opts.temporal ? [0, 1, 2] : [undefined];
  const run = (s: number | undefined) => (s === undefined ? model.call(x) : withContext({ stepIndex: s }, () => model.call(x)));
  const fake = steps.map((s) => layerOutputs(model, () => run(s)));
  const report = toIntegerExecution(model);
  const int = steps.map((s) => layerOutputs(model, () => run(s)));
  const errs: Record<string, number> = {};
  steps.forEach((_s, i) => { for (const [name, y] of fake[i]!) errs[`${name}@${i}`] = relErr(int[i]!.get(name)!, y); });
  return { model, report, errs, x, run };
}

const W8A8: QuantRecipe = { weights: { bits: 8, granularity: 'channel', symmetric: true }, activations: { bits: 8, granularity: 'tensor' }, firstLastBits: null };
const W4A8: QuantRecipe = { weights: { bits: 4, granularity: 'channel', symmetric: true }, activations: { bits: 8, granularity: 'tensor' }, firstLastBits: null };

describe('toIntegerExecution on a conv + linear model', () => {
  for (const [label, recipe, temporal] of [
    ['W8A8 symmetric per channel', W8A8, false],
    ['W4A8 symmetric per channel', W4A8, false],
    ['W4A8 asymmetric (default weight spec: 4-bit codes with zero points)', { ...W4A8, weights: { bits: 4, granularity: 'channel' } }, false],
    ['W8A8 per-tensor weights, signed activations', { ...W8A8, weights: { bits: 8, granularity: 'tensor', symmetric: true }, activations: { bits: 8, granularity: 'tensor', signed: true } }, false],
    ['W4A8 with temporal activation tables (3 steps)', { ...W4A8, activations: { bits: 8, granularity: 'tensor', timestepGroups: 3 } }, true],
    ['W8A8 with a split conv (two activation and weight quantizers)', { ...W8A8, splitShortcut: { conv1: 16 } }, false],
    ['W4A4', { ...W4A8, activations: { bits: 4, granularity: 'tensor' } }, false],
  ] as Array<[string, QuantRecipe, boolean]>) {
    it(`${label}: every layer runs in integers and matches fake quant to 1e-5`, async () => {
      const { report, errs, model } = await compare(recipe, { temporal });
      expect(report.fakeQuant).toEqual([]);
      expect(report.integer).toEqual(['conv_in', 'conv1', 'conv2', 'down', 'lin1', 'lin2', 'out']);
      expect(report.approximate).toEqual([]);
      for (const [k, e] of Object.entries(errs)) expect(e, k).toBeLessThan(1e-5);
      expect(Object.keys(errs).length).toBe(7 * (temporal ? 3 : 1));
      expect(isIntegerLayer(model.lin1)).toBe(true);
      console.log(`${label}: max layer rel. error ${Math.max(...Object.values(errs)).toExponential(2)}; weight bytes float ${report.weightBytes.float}, packed ${report.weightBytes.packed}`);
    });
  }

  it('a model converted to f16 runs in integers on its half-precision scale tables (temporal, split conv)', async () => {
    const recipe: QuantRecipe = { ...W8A8, activations: { bits: 8, granularity: 'tensor', timestepGroups: 3 }, splitShortcut: { conv1: 16 } };
    const { model, x } = await compare(recipe, { temporal: true });
    const f32Out = [0, 1, 2].map((s) => noGrad(() => withContext({ stepIndex: s }, () => model.call(x) as Tensor)));
    fromIntegerExecution(model);
    model.to({ dtype: 'f16' });
    const report = toIntegerExecution(model);
    expect(report.fakeQuant).toEqual([]);
    const xh = cast(x, 'f16');
    for (const s of [0, 1, 2]) {
      const y = noGrad(() => withContext({ stepIndex: s }, () => model.call(xh) as Tensor));
      expect(y.dtype).toBe('f16');
      // f16 weights, scales and intermediate activations: a few 1e-3 against the f32 integer model.
      expect(relErr(cast(y, 'f32'), f32Out[s]!)).toBeLessThan(2e-2);
    }
  });

  it('4-bit weights pack to about half the bytes of 8-bit ones', async () => {
    const w8 = await compare(W8A8), w4 = await compare(W4A8);
    expect(w8.report.weightBytes.float).toBe(w4.report.weightBytes.float);
    expect(w4.report.weightBytes.packed).toBeLessThan(0.7 * w8.report.weightBytes.packed);
    expect(w8.report.weightBytes.packed).toBeLessThan(0.4 * w8.report.weightBytes.float);
  });

  it('the integer path is really taken (the layer forward returns the GEMM result)', async () => {
    const { model } = await compare(W8A8);
    const v = randn([2, 24], { seed: 3 });
    const y = noGrad(() => model.lin1.integerForward!(v));
    expect(y).not.toBeNull();
    expect(relErr(y!, noGrad(() => { model.lin1.integerForward = null; const r = model.lin1.call(v); return r; }))).toBeLessThan(1e-5);
  });

  it('layers that cannot run in integers stay fake-quant with a reason', async () => {
    // Asymmetric 8-bit weights: q - z spans up to +-255.
    const { report } = await compare({ ...W8A8, weights: { bits: 8, granularity: 'channel' }, overrides: [{ pattern: /^conv2$/, activations: null }, { pattern: /^lin2$/, weights: { granularity: 'group', groupSize: 8 } }] });
    const reasons = Object.fromEntries(report.fakeQuant.map((f) => [f.name, f.reason]));
    expect(reasons['conv_in']).toMatch(/\[-127, 127\]/);
    expect(reasons['conv2']).toMatch(/\[-127, 127\]/);  // (weight-only convs themselves run, with dynamic activations)
    expect(reasons['lin2']).toMatch(/per-group/);
    expect(report.integer).toEqual([]);
  });

  it('weight-only layers run with dynamic activations: per token for Linear, per tensor for Conv2d (approximate, listed)', async () => {
    const model = new SmallNet();
    await quantize(model, { weights: { bits: 8, granularity: 'channel', symmetric: true }, firstLastBits: null, splitShortcut: { conv1: 16 } });
    const x = randn([3, 3, 8, 8], { seed: 5 });
    const fake = layerOutputs(model, () => model.call(x));
    const report = toIntegerExecution(model);
    const all = ['conv_in', 'conv1', 'conv2', 'down', 'lin1', 'lin2', 'out'];
    expect(report.integer).toEqual(all);
    expect(report.approximate.map((a) => a.name)).toEqual(all);
    expect(report.approximate.find((a) => a.name === 'conv1')!.reason).toMatch(/per-tensor/);
    expect(report.approximate.find((a) => a.name === 'lin1')!.reason).toMatch(/per-token/);
    const int = layerOutputs(model, () => model.call(x));
    // 8-bit activations from each call's own range: about 1 % against the float inputs of fake quant.
    for (const n of all) expect(relErr(int.get(n)!, fake.get(n)!), n).toBeLessThan(2e-2);
    fromIntegerExecution(model);
    expect(toIntegerExecution(model, { dynamicActivations: false }).integer).toEqual([]);
  });

  it('separable (TuneQDM) weights run with the column factor folded into the activations (approximate)', async () => {
    const model = new SmallNet();
    await quantize(model, { weights: { bits: 4, granularity: 'separable' }, activations: { bits: 8, granularity: 'tensor' }, firstLastBits: null }, { calibration: batches(4, 10) });
    // Non-trivial column factors.
    noGrad(() => { for (const [, m] of model.namedModules()) if (m instanceof QuantLinear || m instanceof QuantConv2d) { const d = m.weight_quantizer.stateDict().get('delta_in')!; const a = d.cpuData() as Float32Array; for (let i = 0; i < d.numel; i++) a[d.offset + i] = 0.8 + 0.4 * ((i * 7) % 5) / 4; } });
    const x = randn([3, 3, 8, 8], { seed: 5 });
    const fake = layerOutputs(model, () => model.call(x));
    const report = toIntegerExecution(model);
    expect(report.fakeQuant).toEqual([]);
    expect(report.approximate.length).toBe(7);
    const int = layerOutputs(model, () => model.call(x));
    for (const [n, y] of fake) expect(relErr(int.get(n)!, y), n).toBeLessThan(3e-2);
  });

  it('grad mode with parameters or inputs requiring grad falls back to fake quant; fromIntegerExecution restores', async () => {
    const { model, x } = await compare(W8A8);
    expect(model.lin1.weight.requiresGrad).toBe(false);  // frozen while integer
    const intOut = noGrad(() => model.call(x));
    const xg = x.clone(); xg.requiresGrad = true;
    const y = enableGrad(() => model.call(xg));
    y.square().sum().backward();
    expect(xg.grad).toBeTruthy();
    expect(fromIntegerExecution(model)).toEqual(['conv_in', 'conv1', 'conv2', 'down', 'lin1', 'lin2', 'out']);
    expect(model.lin1.weight.requiresGrad).toBe(true);
    expect(isIntegerLayer(model.lin1)).toBe(false);
    const fakeOut = noGrad(() => model.call(x));
    expect(Array.from(vals(fakeOut))).toEqual(Array.from(vals(noGrad(() => y.detach()))));
    expect(relErr(intOut, fakeOut)).toBeLessThan(1e-5);
  });
});

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const fixtures = process.env.QDM_FIXTURES ?? path.resolve(repoRoot, '../shared/fixtures');
const unetDir = path.join(fixtures, 'unet', 'ddpm-tiny');
const fixturesPresent = fs.existsSync(path.join(unetDir, 'config.json'));
if (!fixturesPresent) console.warn(`integer.test: fixture U-Net not found at ${unetDir} (set QDM_FIXTURES); the U-Net test is skipped`);

/** Each layer's input and output in one run (forward hooks, removed afterwards). */
function capture(model: Module, run: () => unknown): { ins: Map<string, Tensor>; outs: Map<string, Tensor>; result: Tensor } {
  const ins = new Map<string, Tensor>(), outs = new Map<string, Tensor>();
  const removers = [...model.namedModules()].filter(([, m]) => m instanceof QuantLinear || m instanceof QuantConv2d)
    .map(([name, m]) => m.registerForwardHook((_m, a, y) => { ins.set(name, (a[0] as Tensor).clone()); outs.set(name, (y as Tensor).clone()); }));
  try { return { ins, outs, result: noGrad(run) as Tensor }; } finally { for (const r of removers) r(); }
}

describe('integer execution of a fixture U-Net', () => {
  // Per layer, on the same input, the integer output equals fake quant to ~1e-7. End to end the two
  // models cannot agree to 1e-4: an activation sitting within an ulp of a rounding boundary gets a
  // different code after a different f32 summation order upstream, and that one-step flip (and its
  // descendants) propagates. On this random-weight fixture one flip in the mid block grows to
  // ~1e-2 at the output (about half the W8A8 quantization error itself), so end to end the test
  // checks that the integer model is as accurate as the fake-quant one against the fp32 reference.
  it.skipIf(!fixturesPresent)('ddpm-tiny W8A8 and W4A8 (symmetric weights): every layer matches fake quant to 1e-5 on the same input; end to end a different realisation of the quantization noise', async () => {
    const io = loadSafetensors(path.join(unetDir, 'io.safetensors'));
    const sample = io['input.sample']!, t = io['input.timestep']!, ref = io['output.sample_f64']!;
    for (const bits of [8, 4]) {
      const unet = await loadModel(unetDir);
      await quantize(unet, { weights: { bits, granularity: 'channel', symmetric: true }, activations: { bits: 8, granularity: 'tensor' }, calibrator: 'minmax' }, { calibration: [[sample, t]] });
      const fake = capture(unet, () => unet.call(sample, t));
      const report = toIntegerExecution(unet);
      const int = capture(unet, () => unet.call(sample, t));
      let worst = 0;
      for (const [name, y] of fake.outs) {
        const m = unet.getSubmodule(name) as QuantLinear;
        const own = noGrad(() => m.integerForward!(fake.ins.get(name)!));
        expect(own, name).not.toBeNull();
        worst = Math.max(worst, relErr(own!, y));
      }
      const endToEnd = relErr(int.result, fake.result), quantErr = relErr(fake.result, ref), intErr = relErr(int.result, ref);
      console.log(`ddpm-tiny W${bits}A8: ${report.integer.length} integer layers, ${report.fakeQuant.length} fake-quant; worst per-layer rel. error (same input) ${worst.toExponential(2)}; end to end int vs fake ${endToEnd.toExponential(2)}, fake vs fp32 reference ${quantErr.toExponential(2)}, int vs fp32 reference ${intErr.toExponential(2)}; weight bytes float ${report.weightBytes.float}, packed ${report.weightBytes.packed}`);
      expect(report.fakeQuant).toEqual([]);
      expect(fake.outs.size).toBe(report.integer.length);
      expect(worst).toBeLessThan(1e-5);
      // A different realisation of the same quantization noise: as accurate as fake quant, and the
      // difference below the quantization error itself.
      expect(endToEnd).toBeLessThan(quantErr);
      expect(intErr).toBeLessThan(1.5 * quantErr);
    }
  }, 120_000);
});
