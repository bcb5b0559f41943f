// Quantized checkpoints: one safetensors file (atomic write through core's io) holding a
// fake-quant model as integer codes plus everything needed to rebuild it.
//
// Keys keep the diffusers names. For every quantized layer `<layer>.weight` is replaced by
// `<layer>.weight_codes` (I8 / U8, or our i4 convention: U8 bytes with the logical shape in
// metadata; split convs also `<layer>.weight_codes_0` for W[:, C1:]); the quantizer state stays
// under its module names (`<layer>.weight_quantizer.delta`, `.zero_point`, separable
// `.delta_out` / `.delta_in`, `<layer>.act_quantizer.delta` / `.zero_point` with every temporal
// step entry); biases and all other parameters and buffers are stored as they are (f32 / f16).
// `__metadata__` holds `qdm.quant.format` = "qdm-quantized", `qdm.quant.version` = "1",
// `qdm.quant.recipe` (JSON, RegExps as {"$regexp": source, "flags"}), `qdm.quant.layers` (JSON:
// per layer the type, weight shape and dtype, weight and activation specs, split, code dtype and
// shift, flags) and `qdm.quant.config` (the model config, when given).
//
// Loading rebuilds each layer with toQuantLayer from the recorded specs and sets its weight to the
// dequantized codes (q - z)·Δ. Fake quant of that weight gives back exactly the same codes, so the
// loaded model reproduces the saved one bit for bit in fake quant and in integer execution, and
// saving it again writes the same bytes. Separable weights with several timestep experts have no
// single code tensor (codes follow each expert's scales): their float weight is stored instead.
import {
  ArgumentError, StateDictError, Tensor, cast, concat, loadSafetensors, nn, noGrad, readSafetensorsHeader, saveSafetensors, shapeStr, slice,
  type DType, type Module,
} from '@qdm/core';
import { dequantizeCodes, packTensor, type CodeDType, type FakeQuantParams } from './kernels.js';
import { QuantConv2d, QuantLinear, toQuantLayer, type QuantLayer } from './layers.js';
import type { QuantRecipe } from './ptq.js';
import { SeparableScales, type ActivationQuantizer, type AnyWeightQuantizer } from './quantizer.js';
import type { QuantSpec, ResolvedQuantSpec } from './spec.js';
import { toIntegerExecution, type IntegerExecutionOptions, type IntegerExecutionReport } from './integer.js';
import { attentionQuantizers, quantizeAttention } from './attention.js';

export const QUANTIZED_FORMAT = 'qdm-quantized';
export const QUANTIZED_FORMAT_VERSION = '1';
const KEY = { format: 'qdm.quant.format', version: 'qdm.quant.version', recipe: 'qdm.quant.recipe', layers: 'qdm.quant.layers', config: 'qdm.quant.config', attention: 'qdm.quant.attention' } as const;

export interface CodesRecord { key: string; dtype: CodeDType; shift: number }

/** What `qdm.quant.layers` records per quantized layer. */
export interface QuantLayerRecord {
  type: 'Linear' | 'Conv2d';
  weightShape: number[];
  weightDtype: DType;
  weights: QuantSpec;
  activations: QuantSpec | null;
  split: number;
  /** The code tensors (one, or two for split convs); null: the float weight is stored. */
  codes: CodesRecord[] | null;
  quantWeights: boolean;
  quantActivations: boolean;
  /** enabled flag of each activation quantizer (calibration disables unreached ones). */
  actEnabled: boolean[];
  missingStep: 'error' | 'first';
}

export interface SaveQuantizedOptions {
  /** The recipe the model was quantized with (stored as JSON). */
  recipe: QuantRecipe;
  /** The float model's config (e.g. diffusers config.json), stored so a loader can rebuild the architecture. */
  baseConfig?: Record<string, unknown>;
}

export interface LoadQuantizedOptions {
  /** A freshly constructed float model of the same architecture (loadModel, or a model built from the config). */
  model: Module;
  /** Also switch the loaded model to integer execution (true or its options). Default false. */
  integer?: boolean | IntegerExecutionOptions;
}

export interface LoadQuantizedResult<M extends Module> {
  model: M;
  recipe: QuantRecipe;
  config: Record<string, unknown> | null;
  layers: Record<string, QuantLayerRecord>;
  /** When opts.integer was given. */
  integer?: IntegerExecutionReport;
}

const isQuantLayer = (m: Module): m is QuantLayer => m instanceof QuantLinear || m instanceof QuantConv2d;

const specOf = (s: ResolvedQuantSpec): QuantSpec => ({ bits: s.bits, signed: s.signed, symmetric: s.symmetric, granularity: s.granularity, groupSize: s.groupSize, channelAxis: s.channelAxis, timestepGroups: s.timestepGroups });

function recipeToJson(recipe: QuantRecipe): string {
  return JSON.stringify(recipe, (_k, v: unknown) => (v instanceof RegExp ? { $regexp: v.source, flags: v.flags } : v));
}
function recipeFromJson(text: string): QuantRecipe {
  return JSON.parse(text, (_k, v: unknown) => {
    if (v && typeof v === 'object' && typeof (v as { $regexp?: unknown }).$regexp === 'string') return new RegExp((v as { $regexp: string }).$regexp, (v as { flags?: string }).flags ?? '');
    return v;
  }) as QuantRecipe;
}

/** The (sub)weights of a layer with their quantizers: one, or two for a split conv. */
function weightParts(layer: QuantLayer): Array<{ weight: Tensor; wq: AnyWeightQuantizer; suffix: string }> {
  if (layer instanceof QuantConv2d && layer.split) {
    return [
      { weight: slice(layer.weight, 1, 0, layer.split), wq: layer.weight_quantizer, suffix: '' },
      { weight: slice(layer.weight, 1, layer.split), wq: layer.weight_quantizer_0!, suffix: '_0' },
    ];
  }
  return [{ weight: layer.weight, wq: layer.weight_quantizer, suffix: '' }];
}

/** Quantizer parameters that need no forward context (separable: one expert only). */
const hasCodes = (wq: AnyWeightQuantizer) => !(wq instanceof SeparableScales) || wq.experts === 1;

/** Writes model (fake-quant, possibly in integer execution) to one safetensors file, atomically. */
export function saveQuantized(model: Module, path: string, opts: SaveQuantizedOptions): void {
  if (!opts || !opts.recipe || typeof opts.recipe !== 'object') throw new ArgumentError('saveQuantized: opts.recipe (the QuantRecipe used) is required');
  if (opts.baseConfig !== undefined && (opts.baseConfig === null || typeof opts.baseConfig !== 'object')) throw new ArgumentError('saveQuantized: opts.baseConfig must be an object');
  const layers: Record<string, QuantLayerRecord> = {};
  const quantized = [...model.namedModules()].filter((e): e is [string, QuantLayer] => isQuantLayer(e[1]));
  if (quantized.length === 0) throw new ArgumentError('saveQuantized: the model has no quantized layer (run quantize() first)');
  noGrad(() => {
    const sd = model.stateDict();
    const owned: Tensor[] = [];
    try {
      for (const [name, layer] of quantized) {
        const parts = weightParts(layer);
        const coded = parts.every((p) => hasCodes(p.wq));
        const codes: CodesRecord[] = [];
        if (coded) {
          sd.delete(`${name}.weight`);
          for (const p of parts) {
            const packed = packTensor(p.weight, p.wq.params());
            owned.push(packed.codes, packed.zeroPoint);
            const key = `${name}.weight_codes${p.suffix}`;
            sd.set(key, packed.codes);
            codes.push({ key, dtype: packed.codes.dtype as CodeDType, shift: packed.shift });
          }
        }
        const acts: Array<ActivationQuantizer | null> = layer instanceof QuantConv2d && layer.split ? [layer.act_quantizer, layer.act_quantizer_0] : [layer.act_quantizer];
        layers[name] = {
          type: layer instanceof QuantLinear ? 'Linear' : 'Conv2d',
          weightShape: [...layer.weight.shape],
          weightDtype: layer.weight.dtype,
          weights: specOf(layer.weight_quantizer.spec),
          activations: layer.act_quantizer ? specOf(layer.act_quantizer.spec) : null,
          split: layer instanceof QuantConv2d ? layer.split : 0,
          codes: coded ? codes : null,
          quantWeights: layer.quantWeights,
          quantActivations: layer.quantActivations,
          actEnabled: acts.filter((a): a is ActivationQuantizer => a !== null).map((a) => a.enabled),
          missingStep: layer.act_quantizer?.missingStep ?? 'error',
        };
      }
      const meta: Record<string, string> = {
        [KEY.format]: QUANTIZED_FORMAT,
        [KEY.version]: QUANTIZED_FORMAT_VERSION,
        [KEY.recipe]: recipeToJson(opts.recipe),
        [KEY.layers]: JSON.stringify(layers),
      };
      if (opts.baseConfig) meta[KEY.config] = JSON.stringify(opts.baseConfig);
      // Attention operand quantizers (their tables are ordinary state-dict entries): the spec is in
      // the recipe; record which ones are enabled (calibrated).
      const att = attentionQuantizers(model);
      if (att.length) meta[KEY.attention] = JSON.stringify(Object.fromEntries(att.map(([n, a]) => [n, a.quantizers().map((q) => q.enabled)])));
      saveSafetensors(path, sd, meta);
    } finally {
      for (const t of owned) if (!t.isDisposed) t.dispose();
    }
  });
}

function parseJson<T>(path: string, meta: Record<string, string>, key: string): T {
  const text = meta[key];
  if (text === undefined) throw new ArgumentError(`loadQuantized(${path}): metadata key '${key}' is missing`);
  try { return (key === KEY.recipe ? recipeFromJson(text) : JSON.parse(text)) as T; } catch (e) {
    throw new ArgumentError(`loadQuantized(${path}): metadata '${key}' is not valid JSON (${(e as Error).message})`);
  }
}

const sameShape = (a: readonly number[], b: readonly number[]) => a.length === b.length && a.every((d, i) => d === b[i]);

/**
 * Rebuilds a quantized model saved by saveQuantized into opts.model (a fresh float model of the
 * same architecture, changed in place). Wrong format / version, missing tensors, shape and
 * architecture mismatches throw ArgumentError / StateDictError naming the key, and leave the
 * model's modules as they were; a truncated or malformed file throws the safetensors reader's error.
 */
export function loadQuantized<M extends Module>(path: string, opts: LoadQuantizedOptions & { model: M }): LoadQuantizedResult<M> {
  if (!opts || !opts.model || typeof opts.model.namedModules !== 'function') throw new ArgumentError('loadQuantized: opts.model (a float model of the saved architecture) is required');
  const model = opts.model;
  const header = readSafetensorsHeader(path);
  const meta = header.metadata;
  if (meta[KEY.format] !== QUANTIZED_FORMAT) throw new ArgumentError(`loadQuantized(${path}): metadata '${KEY.format}' is ${meta[KEY.format] === undefined ? 'missing' : `'${meta[KEY.format]}'`}, expected '${QUANTIZED_FORMAT}' (not a quantized checkpoint)`);
  if (meta[KEY.version] !== QUANTIZED_FORMAT_VERSION) throw new ArgumentError(`loadQuantized(${path}): metadata '${KEY.version}' is ${JSON.stringify(meta[KEY.version])}, this reader supports version ${QUANTIZED_FORMAT_VERSION}`);
  const recipe = parseJson<QuantRecipe>(path, meta, KEY.recipe);
  const layers = parseJson<Record<string, QuantLayerRecord>>(path, meta, KEY.layers);
  const config = meta[KEY.config] === undefined ? null : parseJson<Record<string, unknown>>(path, meta, KEY.config);
  const attentionRecord = meta[KEY.attention] === undefined ? null : parseJson<Record<string, boolean[]>>(path, meta, KEY.attention);
  const mismatch = (key: string, problem: string, kind: 'missing' | 'unexpected' | 'mismatched' = 'mismatched') =>
    new StateDictError(`loadQuantized(${path}): '${key}': ${problem}`, { missing: kind === 'missing' ? [key] : [], unexpected: kind === 'unexpected' ? [key] : [], mismatched: kind === 'mismatched' ? [key] : [] });

  // Plan and check every layer before the model is touched.
  const built = new Map<string, QuantLayer>();
  const originals = new Map<string, Module>();
  for (const [name, rec] of Object.entries(layers)) {
    let m: Module;
    try { m = model.getSubmodule(name); } catch { throw mismatch(`${name}.weight_codes`, `the model has no layer '${name}' (architecture mismatch)`, 'unexpected'); }
    if (isQuantLayer(m)) throw new ArgumentError(`loadQuantized(${path}): layer '${name}' of the model is already quantized; pass a freshly built float model`);
    const isLinear = m instanceof nn.Linear;
    if (!(isLinear || m instanceof nn.Conv2d) || (rec.type === 'Linear') !== isLinear) throw mismatch(`${name}.weight_codes`, `the file has a ${rec.type}, the model a ${m.constructor.name} (architecture mismatch)`);
    const w = (m as nn.Linear | nn.Conv2d).weight;
    if (!sameShape(w.shape, rec.weightShape)) throw mismatch(`${name}.weight_codes`, `weight shape ${shapeStr(rec.weightShape)} in the file, ${shapeStr(w.shape)} in the model`);
    if (rec.codes) {
      for (const [i, c] of rec.codes.entries()) {
        const e = header.entries.get(c.key);
        if (!e) throw mismatch(c.key, 'tensor missing from the file', 'missing');
        const expect = rec.split ? [rec.weightShape[0]!, i === 0 ? rec.split : rec.weightShape[1]! - rec.split, ...rec.weightShape.slice(2)] : rec.weightShape;
        if (!sameShape(e.shape, expect) || e.dtype !== c.dtype) throw mismatch(c.key, `expected ${c.dtype} ${shapeStr(expect)}, the file has ${e.dtype} ${shapeStr(e.shape)}`);
      }
    } else if (!header.entries.has(`${name}.weight`)) throw mismatch(`${name}.weight`, 'tensor missing from the file', 'missing');
    let layer: QuantLayer;
    try {
      layer = toQuantLayer(m, { weights: rec.weights, activations: rec.activations, split: rec.split || undefined, weightInit: 'minmax', activationOptions: { missingStep: rec.missingStep } });
    } catch (e) {
      if (e instanceof ArgumentError) throw new ArgumentError(`loadQuantized(${path}): layer '${name}': ${e.message}`);
      throw e;
    }
    built.set(name, layer);
    originals.set(name, m);
  }

  const file = loadSafetensors(path);
  const sd = new Map(Object.entries(file));
  const temps: Tensor[] = [];
  try {
    noGrad(() => {
      for (const [name, rec] of Object.entries(layers)) {
        if (!rec.codes) continue;
        const layer = built.get(name)!;
        // The quantizer state first: the weight is decoded with it.
        const prefixes = ['weight_quantizer', ...(rec.split ? ['weight_quantizer_0'] : [])];
        for (const pre of prefixes) {
          const sub = new Map<string, Tensor>();
          for (const [k, t] of sd) if (k.startsWith(`${name}.${pre}.`)) sub.set(k.slice(name.length + pre.length + 2), t);
          try { (layer.child(pre) as Module).loadStateDict(sub, { strict: true }); } catch (e) {
            if (e instanceof StateDictError) {
              const full = (ks: string[]) => ks.map((k) => `${name}.${pre}.${k}`);
              const what = [['missing', full(e.missing)], ['unexpected', full(e.unexpected)], ['mis-shaped', full(e.mismatched)]].filter(([, ks]) => ks!.length).map(([w, ks]) => `${w} ${(ks as string[]).join(', ')}`);
              throw new StateDictError(`loadQuantized(${path}): quantizer state of '${name}': ${what.join('; ')} (${e.message})`, { missing: full(e.missing), unexpected: full(e.unexpected), mismatched: full(e.mismatched) });
            }
            throw e;
          }
        }
        const parts = weightParts(layer);
        const decoded = rec.codes.map((c, i) => {
          const p: FakeQuantParams = parts[i]!.wq.params();
          const zeroPoint = cast(p.zeroPoint, 'f32').sub(c.shift);
          temps.push(zeroPoint);
          const w = dequantizeCodes(sd.get(c.key)!, { ...p, zeroPoint });
          temps.push(w);
          return w;
        });
        let weight = decoded.length === 1 ? decoded[0]! : concat(decoded, 1);
        if (weight.dtype !== rec.weightDtype) weight = cast(weight, rec.weightDtype);
        temps.push(weight);
        for (const c of rec.codes) sd.delete(c.key);
        sd.set(`${name}.weight`, weight);
      }
    });
    model.replaceModules((n) => built.has(n), (n) => built.get(n)!);
    if (attentionRecord && recipe.attention) quantizeAttention(model, recipe.attention, { probs: recipe.attentionProbs ?? null });
    try {
      model.loadStateDict(sd, { strict: true });
    } catch (e) {
      model.replaceModules((n) => originals.has(n), (n) => originals.get(n)!);
      if (e instanceof StateDictError) throw new StateDictError(`loadQuantized(${path}): ${e.message}`, { missing: e.missing, unexpected: e.unexpected, mismatched: e.mismatched });
      throw e;
    }
  } finally {
    for (const t of [...Object.values(file), ...temps]) if (!t.isDisposed) t.dispose();
  }
  for (const [name, rec] of Object.entries(layers)) {
    const layer = built.get(name)!;
    layer.quantWeights = rec.quantWeights;
    layer.quantActivations = rec.quantActivations;
    const acts = layer instanceof QuantConv2d && layer.split ? [layer.act_quantizer, layer.act_quantizer_0] : [layer.act_quantizer];
    acts.filter((a): a is ActivationQuantizer => a !== null).forEach((a, i) => { a.enabled = rec.actEnabled[i] ?? true; });
  }
  for (const [name, a] of attentionQuantizers(model)) {
    const flags = attentionRecord?.[name] ?? [];
    a.quantizers().forEach((q, i) => { q.enabled = flags[i] ?? true; });
  }
  const result: LoadQuantizedResult<M> = { model, recipe, config, layers };
  if (opts.integer) result.integer = toIntegerExecution(model, opts.integer === true ? {} : opts.integer);
  return result;
}
