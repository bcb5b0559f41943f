// Post-training quantization: quantize(model, recipe, { calibration }) swaps every nn.Linear /
// nn.Conv2d for its fake-quant counterpart (weights and bias adopted, so state-dict keys keep
// their names), initialises the weight quantizers from the weights, then calibrates the
// activation quantizers. The whole plan (specs, overrides, layer shapes) is built and checked
// before the model is touched, so a bad recipe leaves the model as it was.
//
// Spec resolution per layer: recipe.weights / recipe.activations, then first/last layer bits
// (firstLastBits, default 8, EfficientDM's W8A8 for conv_in / conv_out), then the first
// override whose pattern matches the layer name (explicit overrides win).
import { ArgumentError, Module, nn } from '@qdm/core';
import { checkReconstructionOptions, reconstruct, type ReconstructionOptions, type ReconstructionProgress, type ReconstructionReport } from './reconstruct.js';
import { quantizeAttention } from './attention.js';
import { calibrateActivations, type CalibrationInput } from './calibrate.js';
import { toQuantLayer, type QuantLayer } from './layers.js';
import { CALIBRATORS, type Calibrator, type WeightInit } from './quantizer.js';
import { resolveSpec, type QuantSpec } from './spec.js';

export interface QuantOverride {
  pattern: RegExp;
  /** Fields replacing the recipe's weight spec for matching layers. */
  weights?: Partial<QuantSpec>;
  /** Fields replacing the activation spec; null keeps the layer's activations in full precision. */
  activations?: Partial<QuantSpec> | null;
}

export interface QuantRecipe {
  weights: QuantSpec;
  /** Activation spec (per tensor); null / undefined: weight-only quantization. */
  activations?: QuantSpec | null;
  /** Bits of the first and last Linear/Conv2d (registration order); null: no exception. Default 8. */
  firstLastBits?: number | null;
  /** Layer names left in full precision. */
  skip?: RegExp[];
  overrides?: QuantOverride[];
  /** Activation calibrator. Default 'mse' (EfficientDM). */
  calibrator?: Calibrator;
  /** Percentile calibrator's kept fraction. Default 0.9999. */
  percentile?: number;
  /** Weight quantizer init. Default 'minmax' (EfficientDM's naive PTQ 'max'). */
  weightInit?: WeightInit;
  /**
   * Q-Diffusion's split shortcut quantization: true finds the diffusers up-path shortcut convs
   * (`up_blocks.*.resnets.*.conv_shortcut`, see shortcutSplits); a record maps layer names to C1.
   * Default false.
   */
  splitShortcut?: boolean | Record<string, number>;
  /**
   * 'nearest' (default) or 'adaround': learn each weight's rounding by layer / block
   * reconstruction against the full-precision model on the calibration set (Q-Diffusion's
   * AdaRound / BRECQ stage, see reconstruct.ts), before the activations are calibrated.
   */
  rounding?: 'nearest' | 'adaround';
  /**
   * Reconstruction options (rounding 'adaround' only); every field left out takes the reference
   * value of RECONSTRUCTION_DEFAULTS: granularity 'block', iters 20000, batch 32, lr 1e-3,
   * lambda 0.01, warmup 0.2, betaStart 20, betaEnd 2, learnActivations false (5000 iters, lr 4e-4, p 2.4).
   */
  reconstruction?: ReconstructionOptions;
  /**
   * Quantize the operands of the attention products (Q, K, V per tensor; Q-Diffusion's
   * QuantQKMatMul / QuantSMVMatMul) with this activation spec; null / undefined: floating point.
   */
  attention?: QuantSpec | null;
  /** The softmax output's spec (with `attention`); null / undefined keeps it in floating point (Q-Diffusion's SD default). */
  attentionProbs?: QuantSpec | null;
}

export interface QuantizeOptions {
  calibration?: CalibrationInput;
  /** Progress of the reconstruction (rounding 'adaround'), e.g. for a CLI. */
  onProgress?: (p: ReconstructionProgress) => void;
}

export interface QuantizedLayerInfo { name: string; type: 'Linear' | 'Conv2d'; weightBits: number; actBits: number | null; granularity: string; split?: number }

export interface QuantizeSummary {
  layers: QuantizedLayerInfo[];
  /** Layer counts per configuration, e.g. { W4A8: 10, W8A8: 2 } (A16 = full-precision activations). */
  byBits: Record<string, number>;
  skipped: string[];
  firstLast: string[];
  /** Layers with activation quantizers that calibration never reached (left in full precision). */
  uncalibrated: string[];
  /** With rounding 'adaround': per unit, the reconstruction loss with nearest and with learned rounding. */
  reconstruction?: ReconstructionReport;
}

const RECIPE_KEYS = new Set(['weights', 'activations', 'firstLastBits', 'skip', 'overrides', 'calibrator', 'percentile', 'weightInit', 'splitShortcut', 'rounding', 'reconstruction', 'attention', 'attentionProbs']);

/**
 * C1 of each up-path ResNet shortcut conv of a diffusers-layout U-Net: the resnet's input is
 * concat[h, skip]; for resnet 0 of a block h has inChannels - outChannels channels (its skip has
 * outChannels when the block has two or more resnets, as diffusers' layers_per_block + 1 always
 * gives), for the others h is the previous resnet's output (outChannels).
 */
export function shortcutSplits(model: Module): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [name, m] of model.namedModules()) {
    const hit = /^(.*\.)?up_blocks\.(\d+)\.resnets\.(\d+)$/.exec(name);
    if (!hit) continue;
    const conv = m.child('conv_shortcut');
    const r = m as unknown as { inChannels?: unknown; outChannels?: unknown };
    if (!(conv instanceof nn.Conv2d) || typeof r.inChannels !== 'number' || typeof r.outChannels !== 'number') continue;
    const j = Number(hit[3]);
    const siblings = model.getSubmodule(name.slice(0, name.lastIndexOf('.'))) as unknown as { length?: number };
    const c1 = j > 0 ? r.outChannels : (siblings.length ?? 0) >= 2 ? r.inChannels - r.outChannels : 0;
    if (c1 > 0 && c1 < conv.inChannels) out[`${name}.conv_shortcut`] = c1;
  }
  return out;
}

function checkRecipe(recipe: QuantRecipe): void {
  if (!recipe || typeof recipe !== 'object') throw new ArgumentError('quantize: recipe must be an object');
  for (const k of Object.keys(recipe)) if (!RECIPE_KEYS.has(k)) throw new ArgumentError(`quantize: recipe.${k} is not a recipe field (expected ${[...RECIPE_KEYS].join(', ')})`);
  if (!recipe.weights) throw new ArgumentError('quantize: recipe.weights (a QuantSpec) is required');
  if (recipe.rounding !== undefined && recipe.rounding !== 'nearest' && recipe.rounding !== 'adaround') throw new ArgumentError(`recipe.rounding: expected 'nearest' or 'adaround', got ${String(recipe.rounding)}`);
  if (recipe.reconstruction !== undefined) {
    if (recipe.rounding !== 'adaround') throw new ArgumentError("recipe.reconstruction: applies with rounding: 'adaround' only");
    const r = checkReconstructionOptions(recipe.reconstruction, 'recipe.reconstruction');
    if (r.learnActivations && !recipe.activations && !recipe.overrides?.some((o) => o.activations)) throw new ArgumentError('recipe.reconstruction.learnActivations: the recipe quantizes no activations');
  }
  if (recipe.rounding === 'adaround' && recipe.weights.granularity !== 'tensor' && recipe.weights.granularity !== 'channel') throw new ArgumentError(`recipe.rounding: 'adaround' rounds per tensor or per channel weights, got granularity '${recipe.weights.granularity}'`);
  resolveSpec(recipe.weights, 'recipe.weights');
  if (recipe.activations) {
    const a = resolveSpec(recipe.activations, 'recipe.activations');
    if (a.granularity !== 'tensor') throw new ArgumentError(`recipe.activations.granularity: activations are quantized per tensor, got '${a.granularity}'`);
  }
  for (const key of ['attention', 'attentionProbs'] as const) {
    const sp = recipe[key];
    if (sp === undefined || sp === null) continue;
    if (resolveSpec(sp, `recipe.${key}`).granularity !== 'tensor') throw new ArgumentError(`recipe.${key}.granularity: attention operands are quantized per tensor, got '${sp.granularity}'`);
  }
  if (recipe.attentionProbs && !recipe.attention) throw new ArgumentError('recipe.attentionProbs applies with recipe.attention');
  const fl = recipe.firstLastBits;
  if (fl !== undefined && fl !== null && (!Number.isInteger(fl) || fl < 2 || fl > 8)) throw new ArgumentError(`recipe.firstLastBits: expected an integer in 2..8 or null, got ${String(fl)}`);
  if (recipe.skip !== undefined && (!Array.isArray(recipe.skip) || !recipe.skip.every((r) => r instanceof RegExp))) throw new ArgumentError('recipe.skip: expected an array of RegExp');
  if (recipe.overrides !== undefined) {
    if (!Array.isArray(recipe.overrides)) throw new ArgumentError('recipe.overrides: expected an array of { pattern, weights?, activations? }');
    recipe.overrides.forEach((o, i) => {
      if (!o || !(o.pattern instanceof RegExp)) throw new ArgumentError(`recipe.overrides[${i}].pattern: expected a RegExp`);
      for (const k of Object.keys(o)) if (!['pattern', 'weights', 'activations'].includes(k)) throw new ArgumentError(`recipe.overrides[${i}].${k} is not an override field`);
    });
  }
  if (recipe.calibrator !== undefined && !CALIBRATORS.includes(recipe.calibrator)) throw new ArgumentError(`recipe.calibrator: expected one of ${CALIBRATORS.join(', ')}, got ${String(recipe.calibrator)}`);
  if (recipe.percentile !== undefined && !(recipe.percentile > 0.5 && recipe.percentile <= 1)) throw new ArgumentError(`recipe.percentile: expected a number in (0.5, 1], got ${String(recipe.percentile)}`);
  if (recipe.weightInit !== undefined && !['minmax', 'mse'].includes(recipe.weightInit)) throw new ArgumentError(`recipe.weightInit: expected 'minmax' or 'mse', got ${String(recipe.weightInit)}`);
  const sp = recipe.splitShortcut;
  if (sp !== undefined && typeof sp !== 'boolean') {
    if (!sp || typeof sp !== 'object' || Array.isArray(sp)) throw new ArgumentError('recipe.splitShortcut: expected a boolean or a record of layer name -> C1');
    for (const [k, v] of Object.entries(sp)) if (!Number.isInteger(v) || v < 1) throw new ArgumentError(`recipe.splitShortcut['${k}']: expected a positive integer channel count, got ${String(v)}`);
  }
}

/** Replaces the layers and initialises the weight quantizers; activation quantizers are left uncalibrated. */
export function quantizeModules(model: Module, recipe: QuantRecipe): Omit<QuantizeSummary, 'uncalibrated'> {
  checkRecipe(recipe);
  const targets = [...model.namedModules()].filter(([name, m]) => name !== '' && (m instanceof nn.Linear || m instanceof nn.Conv2d));
  if (targets.length === 0) throw new ArgumentError('quantize: the model has no nn.Linear or nn.Conv2d layer to quantize');
  const firstLastBits = recipe.firstLastBits === undefined ? 8 : recipe.firstLastBits;
  const ends = new Set(firstLastBits === null ? [] : [targets[0]![0], targets[targets.length - 1]![0]]);
  const skipped: string[] = [], firstLast: string[] = [];
  const built = new Map<string, QuantLayer>();
  const splits: Record<string, number> = recipe.splitShortcut === true ? shortcutSplits(model) : recipe.splitShortcut ? { ...recipe.splitShortcut } : {};
  const targetNames = new Set(targets.map(([n]) => n));
  for (const n of Object.keys(splits)) {
    if (!targetNames.has(n) || !(model.getSubmodule(n) instanceof nn.Conv2d)) throw new ArgumentError(`recipe.splitShortcut: '${n}' is not a Conv2d of the model`);
  }
  const layers: QuantizedLayerInfo[] = [];
  for (const [name, m] of targets) {
    if (recipe.skip?.some((r) => r.test(name))) { skipped.push(name); continue; }
    let weights: QuantSpec = { ...recipe.weights };
    let activations: QuantSpec | null = recipe.activations ? { ...recipe.activations } : null;
    if (ends.has(name)) {
      weights = { ...weights, bits: firstLastBits! };
      if (activations) activations = { ...activations, bits: firstLastBits! };
      firstLast.push(name);
    }
    const o = recipe.overrides?.find((ov) => ov.pattern.test(name));
    if (o) {
      if (o.weights) weights = { ...weights, ...o.weights };
      if (o.activations === null) activations = null;
      else if (o.activations) activations = { ...(activations ?? recipe.activations ?? { bits: 8, granularity: 'tensor' }), ...o.activations };
    }
    const where = o ? `recipe.overrides[${recipe.overrides!.indexOf(o)}] for '${name}'` : `layer '${name}'`;
    resolveSpec(weights, `${where} weights`);
    if (activations && resolveSpec(activations, `${where} activations`).granularity !== 'tensor') throw new ArgumentError(`${where} activations.granularity: activations are quantized per tensor`);
    let layer: QuantLayer;
    try {
      layer = toQuantLayer(m, { weights, activations, weightInit: recipe.weightInit, activationOptions: { calibrator: recipe.calibrator, percentile: recipe.percentile }, split: splits[name] });
    } catch (e) {
      if (e instanceof ArgumentError) throw new ArgumentError(`${where}: ${e.message}`);
      throw e;
    }
    built.set(name, layer);
    layers.push({ name, type: m instanceof nn.Linear ? 'Linear' : 'Conv2d', weightBits: weights.bits, actBits: activations ? activations.bits : null, granularity: weights.granularity, ...(splits[name] ? { split: splits[name] } : {}) });
  }
  model.replaceModules((name) => built.has(name), (name) => built.get(name)!);
  const byBits: Record<string, number> = {};
  for (const l of layers) { const k = `W${l.weightBits}A${l.actBits ?? 16}`; byBits[k] = (byBits[k] ?? 0) + 1; }
  return { layers, byBits, skipped, firstLast };
}

/**
 * Quantizes model in place (fake quant) and calibrates its activation quantizers. Returns the
 * model and a summary. calibration is required when the recipe quantizes activations.
 */
export async function quantize<M extends Module>(model: M, recipe: QuantRecipe, opts: QuantizeOptions = {}): Promise<{ model: M; summary: QuantizeSummary }> {
  checkRecipe(recipe);
  const needsCalibration = !!recipe.activations || !!recipe.overrides?.some((o) => o.activations) || !!recipe.attention;
  if (needsCalibration && opts.calibration === undefined) throw new ArgumentError('quantize: options.calibration is required when the recipe quantizes activations');
  if (opts.calibration !== undefined && !Array.isArray(opts.calibration) && typeof opts.calibration !== 'function') throw new ArgumentError('quantize: options.calibration must be an array of argument lists or a function running the model');
  if (recipe.rounding === 'adaround' && opts.calibration === undefined) throw new ArgumentError("quantize: rounding 'adaround' needs options.calibration (the inputs the rounding is learned on)");
  const plan = quantizeModules(model, recipe);
  if (recipe.attention) quantizeAttention(model, recipe.attention, { probs: recipe.attentionProbs ?? null, activationOptions: { calibrator: recipe.calibrator, percentile: recipe.percentile } });
  if (recipe.rounding === 'adaround') {
    // Weights first, then the activation ranges on the weight-quantized model (Q-Diffusion's
    // order), then optionally the activation step sizes: reconstruct() runs all three.
    const reconstruction = await reconstruct(model, opts.calibration!, recipe.reconstruction ?? {}, { onProgress: opts.onProgress, calibrateActivations: needsCalibration });
    return { model, summary: { ...plan, uncalibrated: reconstruction.activationCalibration?.uncalibrated ?? [], reconstruction } };
  }
  const report = needsCalibration ? await calibrateActivations(model, opts.calibration!) : { uncalibrated: [] };
  return { model, summary: { ...plan, uncalibrated: report.uncalibrated } };
}
