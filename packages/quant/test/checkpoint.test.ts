// Quantized checkpoints: bit-identical round trips (fake quant and integer execution), byte-
// identical re-saves, the key scheme, clean failures, and W4 files about half the size of W8.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import {
  ArgumentError, Generator, Module, SafetensorsError, StateDictError, Tensor, concat, loadModel, loadSafetensors, mean, nn, noGrad,
  randn, readSafetensorsHeader, saveSafetensors, silu, withContext,
} from '@qdm/core';
import { QuantConv2d, QuantLinear, loadQuantized, quantize, saveQuantized, toIntegerExecution, type QuantRecipe } from '@qdm/quant';
import { vals } from './helpers.js';

class SmallNet extends Module {
  conv_in: nn.Conv2d; conv1: nn.Conv2d; conv2: nn.Conv2d; lin1: nn.Linear; lin2: nn.Linear; out: nn.Linear;
  constructor(seed = 1, width = 16) {
    super();
    const generator = new Generator(seed);
    this.conv_in = this.registerModule('conv_in', new nn.Conv2d(3, width, 3, { padding: 1, generator }));
    this.conv1 = this.registerModule('conv1', new nn.Conv2d(width + 3, width, 3, { padding: 1, generator }));
    this.conv2 = this.registerModule('conv2', new nn.Conv2d(width, width, 1, { generator }));
    this.lin1 = this.registerModule('lin1', new nn.Linear(width, 2 * width, { generator }));
    this.lin2 = this.registerModule('lin2', new nn.Linear(2 * width, 2 * width, { generator }));
    this.out = this.registerModule('out', new nn.Linear(2 * width, 10, { generator }));
  }
  forward(x: Tensor): Tensor {
    let h = silu(this.conv_in.call(x));
    h = silu(this.conv1.call(concat([h, x], 1)));
    h = this.conv2.call(h);
    const v = mean(h, [2, 3]);
    return this.out.call(silu(this.lin2.call(silu(this.lin1.call(v)))));
  }
}

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'qdm-qckpt-'));
const batches = (n: number, seed: number) => Array.from({ length: n }, (_, i) => ({ args: [randn([2, 3, 8, 8], { seed: seed + i })], context: { stepIndex: i % 2 } }));
const bytesOf = (t: Tensor) => Buffer.from(vals(t).buffer);

const RECIPES: Record<string, QuantRecipe> = {
  'W8A8 symmetric': { weights: { bits: 8, granularity: 'channel', symmetric: true }, activations: { bits: 8, granularity: 'tensor', timestepGroups: 2 } },
  'W4A8 asymmetric, split conv, weight-only head': {
    weights: { bits: 4, granularity: 'channel' }, activations: { bits: 8, granularity: 'tensor', timestepGroups: 2 },
    splitShortcut: { conv1: 16 }, overrides: [{ pattern: /^out$/, activations: null }], skip: [/^conv2$/],
  },
  'W4 separable (TuneQDM)': { weights: { bits: 4, granularity: 'separable' }, activations: { bits: 8, granularity: 'tensor', timestepGroups: 2 } },
};

async function quantized(recipe: QuantRecipe, width = 16): Promise<SmallNet> {
  const model = new SmallNet(1, width);
  await quantize(model, recipe, { calibration: batches(4, 10) });
  return model;
}
const runAt = (model: Module, x: Tensor, step: number) => noGrad(() => withContext({ stepIndex: step }, () => model.call(x) as Tensor));

describe('saveQuantized / loadQuantized', () => {
  for (const [label, recipe] of Object.entries(RECIPES)) {
    it(`${label}: the loaded model reproduces the saved one bit for bit (fake quant and integer); re-saving writes the same bytes`, async () => {
      const model = await quantized(recipe);
      const x = randn([2, 3, 8, 8], { seed: 5 });
      const file = path.join(tmp, `${label.replace(/\W+/g, '_')}.safetensors`);
      saveQuantized(model, file, { recipe, baseConfig: { _class_name: 'SmallNet', width: 16 } });
      const loaded = loadQuantized(file, { model: new SmallNet(2) });  // different float init: everything must come from the file
      expect(loaded.config).toEqual({ _class_name: 'SmallNet', width: 16 });
      expect(loaded.recipe).toEqual(recipe);
      for (const step of [0, 1]) expect(bytesOf(runAt(loaded.model, x, step)).equals(bytesOf(runAt(model, x, step)))).toBe(true);

      const a = toIntegerExecution(model), b = toIntegerExecution(loaded.model);
      expect(b).toEqual(a);
      for (const step of [0, 1]) expect(bytesOf(runAt(loaded.model, x, step)).equals(bytesOf(runAt(model, x, step)))).toBe(true);

      const again = path.join(tmp, `${label.replace(/\W+/g, '_')}.again.safetensors`);
      saveQuantized(loaded.model, again, { recipe: loaded.recipe, baseConfig: loaded.config! });
      expect(fs.readFileSync(again).equals(fs.readFileSync(file))).toBe(true);
    });
  }

  it('key scheme: weight codes replace <layer>.weight; quantizer tables, biases and float layers keep their names', async () => {
    const recipe = RECIPES['W4A8 asymmetric, split conv, weight-only head']!;
    const model = await quantized(recipe);
    const file = path.join(tmp, 'keys.safetensors');
    saveQuantized(model, file, { recipe });
    const h = readSafetensorsHeader(file);
    const keys = [...h.entries.keys()].sort();
    expect(keys).toContain('conv1.weight_codes');
    expect(keys).toContain('conv1.weight_codes_0');
    expect(keys).toContain('conv1.act_quantizer_0.delta');
    expect(keys).toContain('conv2.weight');  // skipped: stays float
    expect(keys).not.toContain('lin1.weight');
    expect(h.entries.get('lin1.weight_codes')!.dtype).toBe('i4');
    expect(h.entries.get('lin1.weight_codes')!.shape).toEqual([32, 16]);
    expect(h.entries.get('conv_in.weight_codes')!.dtype).toBe('u8');  // first layer at 8 bits (unsigned)
    expect(h.entries.get('lin1.act_quantizer.delta')!.shape).toEqual([2]);  // every temporal entry
    expect(h.entries.get('lin1.bias')!.dtype).toBe('f32');
    expect(h.metadata['qdm.quant.format']).toBe('qdm-quantized');
    expect(h.metadata['qdm.quant.version']).toBe('1');
    const layers = JSON.parse(h.metadata['qdm.quant.layers']!);
    expect(layers.conv1.split).toBe(16);
    expect(layers.lin1.weights.bits).toBe(4);
    expect(layers.out.activations).toBe(null);
    expect(JSON.parse(h.metadata['qdm.quant.recipe']!).skip).toEqual([{ $regexp: '^conv2$', flags: '' }]);
  });

  it('W4 files are about half the size of W8 files (weights dominate)', async () => {
    const sizes: Record<number, number> = {};
    for (const bits of [8, 4]) {
      const recipe: QuantRecipe = { weights: { bits, granularity: 'channel', symmetric: true }, activations: { bits: 8, granularity: 'tensor' }, firstLastBits: null };
      const model = await quantized({ ...recipe, activations: { ...recipe.activations!, timestepGroups: 2 } }, 128);
      const file = path.join(tmp, `size-w${bits}.safetensors`);
      saveQuantized(model, file, { recipe });
      sizes[bits] = fs.statSync(file).size;
    }
    const floatBytes = [...new SmallNet(1, 128).stateDict().values()].reduce((a, t) => a + 4 * t.numel, 0);
    console.log(`checkpoint sizes (SmallNet width 128, ${floatBytes} float bytes): W8 ${sizes[8]} bytes, W4 ${sizes[4]} bytes, ratio ${(sizes[4]! / sizes[8]!).toFixed(3)}`);
    expect(sizes[4]! / sizes[8]!).toBeLessThan(0.56);
    expect(sizes[4]! / sizes[8]!).toBeGreaterThan(0.45);
    expect(sizes[8]! / floatBytes).toBeLessThan(0.3);
  });

  describe('fails cleanly', () => {
    const recipe = RECIPES['W8A8 symmetric']!;
    let file = '';
    const setup = async () => {
      if (file) return file;
      const model = await quantized(recipe);
      file = path.join(tmp, 'good.safetensors');
      saveQuantized(model, file, { recipe });
      return file;
    };
    /** Rewrites the good file with edited tensors / metadata. */
    const variant = async (name: string, edit: (t: Record<string, Tensor>, m: Record<string, string>) => void) => {
      const good = await setup();
      const t = loadSafetensors(good), m = { ...readSafetensorsHeader(good).metadata };
      edit(t, m);
      const out = path.join(tmp, `${name}.safetensors`);
      saveSafetensors(out, t, m);
      return out;
    };

    it('wrong format or version -> ArgumentError naming the key', async () => {
      const notQuant = await variant('plain', (_t, m) => { delete m['qdm.quant.format']; });
      expect(() => loadQuantized(notQuant, { model: new SmallNet() })).toThrow(ArgumentError);
      expect(() => loadQuantized(notQuant, { model: new SmallNet() })).toThrow(/qdm\.quant\.format/);
      const v2 = await variant('v2', (_t, m) => { m['qdm.quant.version'] = '2'; });
      expect(() => loadQuantized(v2, { model: new SmallNet() })).toThrow(/qdm\.quant\.version.*"2"/);
    });

    it('missing or mis-shaped tensors -> StateDictError naming the key; the model is left as it was', async () => {
      const missing = await variant('missing', (t) => { delete t['lin2.weight_codes']; });
      const model = new SmallNet();
      expect(() => loadQuantized(missing, { model })).toThrow(StateDictError);
      expect(() => loadQuantized(missing, { model })).toThrow(/lin2\.weight_codes/);
      const noBias = await variant('nobias', (t) => { delete t['out.bias']; });
      expect(() => loadQuantized(noBias, { model })).toThrow(/out\.bias/);
      expect(model.out).toBeInstanceOf(nn.Linear);  // rolled back
      expect(model.lin1).toBeInstanceOf(nn.Linear);
      const noDelta = await variant('nodelta', (t) => { delete t['lin1.weight_quantizer.delta']; });
      expect(() => loadQuantized(noDelta, { model })).toThrow(/lin1\.weight_quantizer\.delta/);
      expect(model.lin1).toBeInstanceOf(nn.Linear);
    });

    it('architecture mismatch -> StateDictError naming the layer', async () => {
      const good = await setup();
      expect(() => loadQuantized(good, { model: new SmallNet(1, 8) })).toThrow(/conv_in\.weight_codes.*weight shape/);
      class Other extends SmallNet { extra = this.registerModule('extra', new nn.Linear(4, 4)); }
      expect(() => loadQuantized(good, { model: new Other() })).toThrow(/missing keys.*extra\.weight/);
      expect(() => loadQuantized(good, { model: new SmallNet(1, 8) })).toThrow(StateDictError);
    });

    it('an already quantized model -> ArgumentError; a truncated file -> the safetensors reader error', async () => {
      const good = await setup();
      const q = await quantized(recipe);
      expect(() => loadQuantized(good, { model: q })).toThrow(/already quantized/);
      const bytes = fs.readFileSync(good);
      const cut = path.join(tmp, 'cut.safetensors');
      fs.writeFileSync(cut, bytes.subarray(0, bytes.length - 100));
      expect(() => loadQuantized(cut, { model: new SmallNet() })).toThrow(SafetensorsError);
    });

    it('a failed save leaves no file behind (atomic write)', async () => {
      const model = await quantized(recipe);
      const target = path.join(tmp, 'nope', 'x.safetensors');
      expect(() => saveQuantized(model, target, { recipe })).toThrow();
      expect(fs.existsSync(target)).toBe(false);
      expect(() => saveQuantized(new SmallNet(), path.join(tmp, 'float.safetensors'), { recipe })).toThrow(/no quantized layer/);
    });
  });
});

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const fixtures = process.env.QDM_FIXTURES ?? path.resolve(repoRoot, '../shared/fixtures');
const unetDir = path.join(fixtures, 'unet', 'ddpm-tiny');
const fixturesPresent = fs.existsSync(path.join(unetDir, 'config.json'));

describe('quantized checkpoint of a fixture U-Net', () => {
  it.skipIf(!fixturesPresent)('ddpm-tiny W8A8 / W4A8: bit-identical round trip into a model from loadModel; file sizes', async () => {
    const io = loadSafetensors(path.join(unetDir, 'io.safetensors'));
    const sample = io['input.sample']!, t = io['input.timestep']!;
    const sizes: string[] = [];
    for (const bits of [8, 4]) {
      const recipe: QuantRecipe = { weights: { bits, granularity: 'channel', symmetric: true }, activations: { bits: 8, granularity: 'tensor' }, calibrator: 'minmax' };
      const unet = await loadModel(unetDir);
      await quantize(unet, recipe, { calibration: [[sample, t]] });
      const file = path.join(tmp, `ddpm-w${bits}.safetensors`);
      saveQuantized(unet, file, { recipe, baseConfig: unet.config });
      const { model, config, integer } = loadQuantized(file, { model: await loadModel(unetDir), integer: true });
      expect(config).toEqual(unet.config);
      expect(integer!.fakeQuant).toEqual([]);
      toIntegerExecution(unet);
      const a = noGrad(() => unet.call(sample, t) as Tensor), b = noGrad(() => model.call(sample, t) as Tensor);
      expect(bytesOf(b).equals(bytesOf(a))).toBe(true);
      expect([...model.namedModules()].filter(([, m]) => m instanceof QuantLinear || m instanceof QuantConv2d).length).toBe(integer!.integer.length);
      sizes.push(`W${bits}A8 ${fs.statSync(file).size} bytes`);
    }
    const floatSize = fs.statSync(path.join(unetDir, 'diffusion_pytorch_model.safetensors')).size;
    console.log(`ddpm-tiny checkpoint sizes: fp32 ${floatSize} bytes, ${sizes.join(', ')}`);
  }, 120_000);
});
