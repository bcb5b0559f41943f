// Weight reconstruction with learned rounding (AdaRound; BRECQ when the units are blocks), the
// optional last stage of Q-Diffusion-style PTQ (METHODS.md 3.1). Units are reconstructed in
// forward order; for each, the full-precision unit's output on calibration inputs is the target:
//   min_V  ||f_fp(x) - f_q(x; V)||² / n  +  λ Σ(1 - |2h(V) - 1|^β)
// with Adam, λ = 0.01, β annealed 20 -> 2 after a warm-up of 20 % of the iterations without the
// regulariser. A unit is a single quantized layer ('layer') or, for 'block', each ResNet /
// attention / transformer block of a diffusers U-Net (every quantized layer outside one is its own
// unit), whose layers' rounding is learned jointly against the block output.
//
// Inputs x are recorded once, from the model with every quantizer off (the full-precision
// inputs, BRECQ's default); activation quantizers stay off during reconstruction (weights first,
// as Q-Diffusion does), and are back on afterwards. To bound memory, each unit keeps at most
// `maxCalls` calls spread over the calibration run and `maxRows` batch rows of each.
// After a unit converges, its layers' weights are replaced by the hard-rounded weights, which the
// layer's (unchanged) fake quantizer maps to themselves: integer execution and checkpoints need
// no knowledge of AdaRound.
import { ArgumentError, Module, Tensor, copyInto, enableGrad, mseLoss, noGrad, optim, slice, tidy, keep, withContext, currentContext, type ForwardContext, add, affine } from '@qdm/core';
import { AdaRoundWeight } from './adaround.js';
import type { CalibrationInput } from './calibrate.js';
import { QuantConv2d, isQuantLayer, type QuantLayer } from './layers.js';
import { WeightQuantizer } from './quantizer.js';

export interface ReconstructionOptions {
  /** 'layer' (AdaRound) or 'block' (BRECQ). Default 'layer'. */
  granularity?: 'layer' | 'block';
  /** Optimisation steps per unit. Default 20000 (the reference); small models converge in far fewer. */
  iters?: number;
  /** Adam learning rate of V. Default 1e-3 (torch's Adam default, as the reference). */
  lr?: number;
  /** Regulariser weight λ. Default 0.01. */
  lambda?: number;
  /** Share of the iterations before the regulariser starts. Default 0.2. */
  warmup?: number;
  betaStart?: number;
  betaEnd?: number;
  /** Recorded calls per unit (spread over the calibration run). Default 16. */
  maxCalls?: number;
  /** Batch rows kept of each recorded call. Default 8. */
  maxRows?: number;
  /** Unit name patterns for 'block' (default: the ResNet/attention blocks of diffusers U-Nets). */
  blocks?: RegExp;
  onProgress?(info: { unit: string; index: number; units: number; iter: number; loss: number }): void;
}

export interface UnitReport { unit: string; layers: string[]; mseNearest: number; mseLearned: number; flipped: number }
export interface ReconstructionReport { units: UnitReport[]; skipped: Array<{ name: string; reason: string }> }

const OPTION_KEYS = new Set(['granularity', 'iters', 'lr', 'lambda', 'warmup', 'betaStart', 'betaEnd', 'maxCalls', 'maxRows', 'blocks', 'onProgress']);
const DEFAULT_BLOCKS = /(^|\.)(down_blocks|up_blocks)\.\d+\.(resnets|attentions)\.\d+$|(^|\.)mid_block\.(resnets|attentions)\.\d+$/;

export function checkReconstructionOptions(o: ReconstructionOptions, where = 'reconstruction'): Required<Omit<ReconstructionOptions, 'onProgress' | 'blocks'>> & Pick<ReconstructionOptions, 'onProgress' | 'blocks'> {
  if (o === null || typeof o !== 'object') throw new ArgumentError(`${where}: expected an options object`);
  for (const k of Object.keys(o)) if (!OPTION_KEYS.has(k)) throw new ArgumentError(`${where}: unknown field '${k}'`);
  const r = {
    granularity: o.granularity ?? 'layer', iters: o.iters ?? 20000, lr: o.lr ?? 1e-3, lambda: o.lambda ?? 0.01, warmup: o.warmup ?? 0.2,
    betaStart: o.betaStart ?? 20, betaEnd: o.betaEnd ?? 2, maxCalls: o.maxCalls ?? 16, maxRows: o.maxRows ?? 8, blocks: o.blocks, onProgress: o.onProgress,
  };
  if (r.granularity !== 'layer' && r.granularity !== 'block') throw new ArgumentError(`${where}.granularity must be 'layer' or 'block', got ${String(o.granularity)}`);
  const posInt = (k: 'iters' | 'maxCalls' | 'maxRows') => { if (!Number.isInteger(r[k]) || r[k] < 1) throw new ArgumentError(`${where}.${k} must be a positive integer, got ${String(r[k])}`); };
  posInt('iters'); posInt('maxCalls'); posInt('maxRows');
  const pos = (k: 'lr' | 'lambda' | 'betaStart' | 'betaEnd') => { if (!(Number.isFinite(r[k]) && r[k] > 0) && !(k === 'lambda' && r[k] === 0)) throw new ArgumentError(`${where}.${k} must be a positive number, got ${String(r[k])}`); };
  pos('lr'); pos('lambda'); pos('betaStart'); pos('betaEnd');
  if (!(r.warmup >= 0 && r.warmup < 1)) throw new ArgumentError(`${where}.warmup must lie in [0, 1), got ${String(o.warmup)}`);
  if (r.blocks !== undefined && !(r.blocks instanceof RegExp)) throw new ArgumentError(`${where}.blocks must be a RegExp`);
  return r;
}

interface Unit { name: string; module: Module; layers: Array<[string, QuantLayer]>; calls: Array<{ args: unknown[]; context: ForwardContext }>; seen: number }

/** β for iteration i: none during warm-up (returns null), then linear from betaStart to betaEnd. */
export function annealedBeta(i: number, iters: number, warmup: number, start: number, end: number): number | null {
  const w = Math.floor(warmup * iters);
  if (i < w) return null;
  const t = iters - w <= 1 ? 1 : (i - w) / (iters - w - 1);
  return start + (end - start) * t;
}

function reconstructable(layer: QuantLayer): string | null {
  if (layer instanceof QuantConv2d && layer.split) return 'split shortcut conv (two weight quantizers)';
  if (!(layer.weight_quantizer instanceof WeightQuantizer)) return 'separable scales (TuneQDM) are trained, not rounded';
  const s = layer.weight_quantizer.spec;
  if (s.granularity === 'group' || (s.granularity === 'channel' && s.channelAxis !== 0)) return `granularity '${s.granularity}' axis ${s.channelAxis}`;
  return null;
}

/** Rows [0, n) of every tensor argument whose batch matches the first argument's. */
function keepRows(args: unknown[], n: number): unknown[] {
  const first = args[0];
  const batch = first instanceof Tensor ? first.shape[0]! : 0;
  const take = (v: unknown): unknown => {
    if (v instanceof Tensor) return keep(v.ndim > 0 && v.shape[0] === batch && batch > n ? slice(v, 0, 0, n).contiguous() : v.clone());
    if (Array.isArray(v)) return v.map(take);
    if (v && typeof v === 'object' && !(v instanceof Module)) return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, take(x)]));
    return v;
  };
  return args.map(take);
}
function disposeDeep(v: unknown): void {
  if (v instanceof Tensor) v.dispose();
  else if (Array.isArray(v)) v.forEach(disposeDeep);
  else if (v && typeof v === 'object' && !(v instanceof Module)) Object.values(v).forEach(disposeDeep);
}
const outputOf = (o: unknown): Tensor => (o instanceof Tensor ? o : (o as { sample: Tensor }).sample);

async function runCalibration(model: Module, calibration: CalibrationInput): Promise<void> {
  if (typeof calibration === 'function') { await calibration(model); return; }
  for (const entry of calibration) {
    const { args, context } = Array.isArray(entry) ? { args: entry, context: undefined } : entry;
    noGrad(() => tidy(() => { withContext(context ?? {}, () => model.call(...args)); }));
  }
}

/**
 * Learns the rounding of every quantized layer's weights (see the file comment). Call after
 * quantize() (weights initialised, activations calibrated); the calibration input is the same kind
 * quantize() takes. Returns per-unit output MSE with nearest and with learned rounding.
 */
export async function reconstructWeights(model: Module, calibration: CalibrationInput, options: ReconstructionOptions = {}): Promise<ReconstructionReport> {
  const o = checkReconstructionOptions(options);
  const skipped: Array<{ name: string; reason: string }> = [];
  const layers: Array<[string, QuantLayer]> = [];
  for (const [name, m] of model.namedModules()) {
    if (!isQuantLayer(m)) continue;
    const why = reconstructable(m);
    if (why) skipped.push({ name, reason: why }); else layers.push([name, m]);
  }
  if (!layers.length) return { units: [], skipped };

  // Units in forward order of their first layer.
  const units: Unit[] = [];
  const inUnit = new Set<string>();
  if (o.granularity === 'block') {
    const pattern = o.blocks ?? DEFAULT_BLOCKS;
    for (const [name, m] of model.namedModules()) {
      if (!name || !pattern.test(name)) continue;
      const own = layers.filter(([ln]) => ln.startsWith(`${name}.`) && !inUnit.has(ln));
      if (!own.length) continue;
      own.forEach(([ln]) => inUnit.add(ln));
      units.push({ name, module: m, layers: own, calls: [], seen: 0 });
    }
  }
  for (const [name, l] of layers) if (!inUnit.has(name)) units.push({ name, module: l, layers: [[name, l]], calls: [], seen: 0 });
  const order = new Map(layers.map(([n], i) => [n, i]));
  units.sort((a, b) => order.get(a.layers[0]![0])! - order.get(b.layers[0]![0])!);

  // Record every unit's inputs with all quantization off (the full-precision model's inputs).
  const all = [...model.namedModules()].filter((e): e is [string, QuantLayer] => isQuantLayer(e[1])).map(([, l]) => l);
  const saved = all.map((l) => [l.quantWeights, l.quantActivations] as const);
  all.forEach((l) => { l.quantWeights = false; l.quantActivations = false; });
  let calls = 0;
  const counter = model.registerForwardPreHook(() => { calls++; });
  // First pass: count calls, so that the kept ones can be spread over the run.
  await runCalibration(model, calibration);
  counter();
  const stride = Math.max(1, Math.ceil(calls / o.maxCalls));
  let call = -1;
  const tick = model.registerForwardPreHook(() => { call++; });
  const removers = units.map((u) => u.module.registerForwardPreHook((_m, args) => {
    if (call % stride !== 0 || u.calls.length >= o.maxCalls) return;
    u.calls.push({ args: keepRows(args as unknown[], o.maxRows), context: { ...currentContext() } });
  }));
  try { await runCalibration(model, calibration); } finally { tick(); removers.forEach((r) => r()); }

  const reports: UnitReport[] = [];
  try {
    for (const [ui, u] of units.entries()) {
      if (!u.calls.length) { skipped.push({ name: u.name, reason: 'never called during calibration' }); continue; }
      // Targets: the full-precision unit's outputs.
      const targets = u.calls.map((c) => noGrad(() => tidy(() => keep(withContext(c.context, () => outputOf(u.module.call(...c.args)).clone())))));
      const rounds = u.layers.map(([, l]) => new AdaRoundWeight(l.weight, l.weight_quantizer as WeightQuantizer));
      const evalMse = (hard: boolean | 'nearest'): number => noGrad(() => tidy(() => {
        u.layers.forEach(([, l], i) => {
          l.quantWeights = hard === 'nearest';
          if (hard !== 'nearest') (l as unknown as { effectiveWeight: () => Tensor }).effectiveWeight = () => rounds[i]!.weight(true);
        });
        let s = 0;
        u.calls.forEach((c, k) => { s += mseLoss(outputOf(withContext(c.context, () => u.module.call(...c.args))), targets[k]!).item(); });
        u.layers.forEach(([, l]) => { delete (l as unknown as { effectiveWeight?: unknown }).effectiveWeight; l.quantWeights = false; });
        return s / u.calls.length;
      }));
      const mseNearest = evalMse('nearest');
      const opt = new optim.Adam(rounds.map((r) => r.v), { lr: o.lr });
      u.layers.forEach(([, l], i) => { (l as unknown as { effectiveWeight: () => Tensor }).effectiveWeight = () => rounds[i]!.weight(false); });
      try {
        for (let it = 0; it < o.iters; it++) {
          const beta = annealedBeta(it, o.iters, o.warmup, o.betaStart, o.betaEnd);
          const k = it % u.calls.length;
          const c = u.calls[k]!;
          const loss = tidy(() => enableGrad(() => {
            const out = outputOf(withContext(c.context, () => u.module.call(...c.args)));
            let l = mseLoss(out, targets[k]!);
            if (beta !== null && o.lambda > 0) for (const r of rounds) l = add(l, affine(r.regularizer(beta), o.lambda, 0));
            l.backward();
            return keep(l);
          }));
          opt.step();
          opt.zeroGrad();
          if (o.onProgress && (it % 100 === 0 || it === o.iters - 1)) o.onProgress({ unit: u.name, index: ui, units: units.length, iter: it, loss: loss.item() });
          loss.dispose();
        }
      } finally {
        u.layers.forEach(([, l]) => { delete (l as unknown as { effectiveWeight?: unknown }).effectiveWeight; });
      }
      const mseLearned = evalMse(true);
      let flipped = 0, total = 0;
      u.layers.forEach(([, l], i) => {
        const n = l.weight.numel;
        flipped += rounds[i]!.flippedFraction(l.weight) * n; total += n;
        const hard = noGrad(() => rounds[i]!.weight(true));
        copyInto(l.weight, hard);
        hard.dispose();
        rounds[i]!.dispose();
      });
      targets.forEach((t) => t.dispose());
      reports.push({ unit: u.name, layers: u.layers.map(([n]) => n), mseNearest, mseLearned, flipped: flipped / total });
    }
  } finally {
    all.forEach((l, i) => { l.quantWeights = saved[i]![0]; l.quantActivations = saved[i]![1]; });
    for (const u of units) for (const c of u.calls) disposeDeep(c.args);
  }
  return { units: reports, skipped };
}
