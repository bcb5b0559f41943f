// Layer / block reconstruction with learned rounding: AdaRound per layer, BRECQ per block, as
// Q-Diffusion runs it (METHODS.md 3.1). Units are reconstructed one at a time in forward order;
// for each unit the target is the full-precision unit's output on the calibration set, and
//   min_V  Lp(f_fp(x_fp), f_q(x_q; V))  +  λ Σ_layers Σ(1 - |2h(V) - 1|^β)
// with Adam (lr 1e-3, torch's default, as the reference), λ = 0.01, p = 2, batches of 32 rows
// drawn at random from the unit's recorded data, β annealed linearly 20 -> 2 after a warm-up of
// 20 % of the iterations during which the regulariser is off (BRECQ's LinearTempDecay / loss_start).
// Lp is BRECQ's lp_loss: |a - b|^p summed over dim 1 (channels), averaged over the rest.
//
// Inputs x_q: by default the inputs the unit receives inside the weight-quantized model (earlier
// units already at their learned rounding, activations in full precision), as Q-Diffusion calls
// BRECQ's reconstruction with asym = True; the targets come from the full-precision model.
// `inputs: 'fp'` uses the full-precision inputs instead (BRECQ's asym = False).
//
// Units ('block'): each ResnetBlock2D, Transformer2DModel and Attention (outside a transformer)
// of a diffusers U-Net, or the modules whose names match `blocks`; every quantized layer outside
// a block (conv_in, time embedding linears, down/up-sampler convs, conv_out) is a unit of its
// own, as Q-Diffusion does for layers that are not in a BaseQuantBlock. 'layer': every layer.
//
// Memory: a unit's recorded inputs and outputs exist only while that unit is reconstructed; each
// recording pass stops the model right after the unit (BRECQ's StopForwardException); every
// iteration runs in tidy(). Learned rounding stays an override of the weight quantizer (frozen
// hard codes) until every unit is done, so later units' full-precision targets still see the
// float weights; then finalize() writes the grid values into the weights.
//
// Optionally (learnActivations), the activation quantizers (calibrated first, on the
// weight-quantized model) have their step sizes learned per unit the same way: 5,000 iterations,
// Adam lr 4e-4 with cosine annealing to 0, Lp p = 2.4, inputs from the weight- and
// activation-quantized model (Q-Diffusion's second reconstruction pass).
import {
  ArgumentError, Attention, Module, ResnetBlock2D, Tensor, Transformer2DModel, abs, concat, enableGrad, indexSelect, keep, mean, noGrad, optim,
  pow, slice, square, sub, sum, tensor, tidy, withContext, currentContext, type ForwardContext, add, mul, mulberry32,
} from '@qdm/core';
import { AdaRoundQuantizer } from './adaround.js';
import { calibrateActivations, type CalibrationBatch, type CalibrationInput, type CalibrationReport } from './calibrate.js';
import { QuantConv2d, isQuantLayer, type QuantLayer } from './layers.js';
import { WeightQuantizer, type ActivationQuantizer } from './quantizer.js';

export type ReconstructionGranularity = 'layer' | 'block';

export interface ReconstructionOptions {
  /** 'layer' (AdaRound) or 'block' (BRECQ, Q-Diffusion's choice). Default 'block'. */
  granularity?: ReconstructionGranularity;
  /** Iterations per unit. Default 20000 (Q-Diffusion). */
  iters?: number;
  /** Rows per iteration, drawn at random from the unit's recorded calibration data. Default 32. */
  batch?: number;
  /** Adam learning rate of V. Default 1e-3 (torch's Adam default, which the reference uses). */
  lr?: number;
  /** Weight λ of the rounding regulariser. Default 0.01. */
  lambda?: number;
  /** Share of the iterations without the regulariser, before β starts to decay. Default 0.2. */
  warmup?: number;
  /** β at the end of the warm-up. Default 20. */
  betaStart?: number;
  /** β at the last iteration. Default 2. */
  betaEnd?: number;
  /** Exponent of the reconstruction loss for the weights. Default 2. */
  p?: number;
  /** Unit inputs from the quantized model ('quantized', Q-Diffusion's asym = True) or the full-precision one. Default 'quantized'. */
  inputs?: 'quantized' | 'fp';
  /** Also learn Δ of the weight quantizers with V. Default false. */
  learnStepSize?: boolean;
  /** 'block': module names that form a unit (outermost match wins); default the U-Net block classes. */
  blocks?: RegExp | RegExp[];
  /** Learn the activation step sizes afterwards (LSQ by reconstruction). Default false. */
  learnActivations?: boolean;
  /** Iterations per unit of the activation pass. Default 5000. */
  actIters?: number;
  /** Adam learning rate of the activation pass (cosine-annealed to 0). Default 4e-4. */
  actLr?: number;
  /** Exponent of the activation pass's loss. Default 2.4. */
  actP?: number;
  /** Seed of the batch sampling. Default 0. */
  seed?: number;
}

export interface ReconstructionProgress {
  phase: 'weights' | 'activations';
  unit: string;
  /** Index of the unit in forward order, and the number of units. */
  index: number;
  units: number;
  iter: number;
  /** Total loss of the iteration (reconstruction + λ·regulariser). */
  loss: number;
  /** Reconstruction part of the loss. */
  recLoss: number;
}

export interface ReconstructRunOptions {
  onProgress?: (p: ReconstructionProgress) => void;
  /** Report every n iterations (and the last). Default 100. */
  progressEvery?: number;
  /**
   * Calibrate the activation quantizers after the weights (calibrateActivations on the
   * weight-quantized model). Default: when the model has activation quantizers. learnActivations
   * needs it.
   */
  calibrateActivations?: boolean;
}

export interface UnitReport {
  unit: string;
  kind: 'layer' | 'block';
  layers: string[];
  /** Lp reconstruction loss on the unit's calibration data with nearest rounding and after learning. */
  lossNearest: number;
  lossLearned: number;
  /** Share of weight elements rounded the other way than nearest. */
  flipped: number;
  /** Activation pass: loss before and after learning the step sizes (absent without learnActivations). */
  actLossBefore?: number;
  actLossAfter?: number;
}

export interface ReconstructionReport {
  units: UnitReport[];
  /** Layers or units left out, with the reason. */
  skipped: Array<{ name: string; reason: string }>;
  /** The activation calibration run between the passes (when calibrateActivations was on). */
  activationCalibration?: CalibrationReport;
}

export type ResolvedReconstruction = Required<Omit<ReconstructionOptions, 'blocks'>> & { blocks: RegExp[] | null };

/** The reference values (Q-Diffusion / BRECQ), used for every field left out. */
export const RECONSTRUCTION_DEFAULTS: Readonly<Omit<ResolvedReconstruction, 'blocks'>> = Object.freeze({
  granularity: 'block', iters: 20000, batch: 32, lr: 1e-3, lambda: 0.01, warmup: 0.2, betaStart: 20, betaEnd: 2, p: 2,
  inputs: 'quantized', learnStepSize: false, learnActivations: false, actIters: 5000, actLr: 4e-4, actP: 2.4, seed: 0,
});

const OPTION_KEYS = new Set([...Object.keys(RECONSTRUCTION_DEFAULTS), 'blocks']);

/** Validates reconstruction options (ArgumentError naming the field) and fills the defaults. */
export function checkReconstructionOptions(o: ReconstructionOptions | undefined, where = 'reconstruction'): ResolvedReconstruction {
  if (o === undefined) o = {};
  if (o === null || typeof o !== 'object' || Array.isArray(o)) throw new ArgumentError(`${where}: expected an options object`);
  for (const k of Object.keys(o)) if (!OPTION_KEYS.has(k)) throw new ArgumentError(`${where}.${k} is not a reconstruction field (expected ${[...OPTION_KEYS].join(', ')})`);
  const r = { ...RECONSTRUCTION_DEFAULTS, ...Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) } as ResolvedReconstruction & { blocks?: unknown };
  if (r.granularity !== 'layer' && r.granularity !== 'block') throw new ArgumentError(`${where}.granularity: expected 'layer' or 'block', got ${String(r.granularity)}`);
  if (r.inputs !== 'quantized' && r.inputs !== 'fp') throw new ArgumentError(`${where}.inputs: expected 'quantized' or 'fp', got ${String(r.inputs)}`);
  for (const k of ['iters', 'batch', 'actIters'] as const) if (!Number.isInteger(r[k]) || r[k] < 1) throw new ArgumentError(`${where}.${k}: expected a positive integer, got ${String(r[k])}`);
  if (!Number.isInteger(r.seed)) throw new ArgumentError(`${where}.seed: expected an integer, got ${String(r.seed)}`);
  for (const k of ['lr', 'actLr', 'betaStart', 'betaEnd', 'p', 'actP'] as const) if (typeof r[k] !== 'number' || !Number.isFinite(r[k]) || r[k] <= 0) throw new ArgumentError(`${where}.${k}: expected a positive number, got ${String(r[k])}`);
  if (typeof r.lambda !== 'number' || !Number.isFinite(r.lambda) || r.lambda < 0) throw new ArgumentError(`${where}.lambda: expected a number >= 0, got ${String(r.lambda)}`);
  if (typeof r.warmup !== 'number' || !(r.warmup >= 0 && r.warmup < 1)) throw new ArgumentError(`${where}.warmup: expected a number in [0, 1), got ${String(r.warmup)}`);
  for (const k of ['learnStepSize', 'learnActivations'] as const) if (typeof r[k] !== 'boolean') throw new ArgumentError(`${where}.${k}: expected a boolean, got ${String(r[k])}`);
  let blocks: RegExp[] | null = null;
  if (o.blocks !== undefined) {
    blocks = Array.isArray(o.blocks) ? o.blocks : [o.blocks];
    if (!blocks.every((b) => b instanceof RegExp)) throw new ArgumentError(`${where}.blocks: expected a RegExp or an array of RegExp`);
  }
  return { ...r, blocks };
}

/**
 * β and whether the regulariser is on at iteration i (0-based) of `iters`, as BRECQ's
 * LinearTempDecay with its 1-based counter t = i + 1: off while t < warmup·iters, then
 * β = end + (start - end)·max(0, 1 - (t - warmup·iters)/(iters - warmup·iters)).
 * Returns null during the warm-up.
 */
export function annealedBeta(i: number, iters: number, warmup: number, start: number, end: number): number | null {
  const t = i + 1, w = warmup * iters;
  if (t < w) return null;
  const rel = iters - w <= 0 ? 1 : (t - w) / (iters - w);
  return end + (start - end) * Math.max(0, 1 - rel);
}

/** BRECQ's lp_loss: |a - b|^p summed over dim 1, averaged over the other dims. */
export function lpLoss(pred: Tensor, target: Tensor, p: number): Tensor {
  const d = sub(pred, target);
  const e = p === 2 ? square(d) : pow(abs(d), p);
  return e.ndim >= 2 ? mean(sum(e, 1)) : mean(e);
}

// ---- units ------------------------------------------------------------------------------------

export interface ReconstructionUnit { name: string; kind: 'layer' | 'block'; module: Module; layers: Array<[string, QuantLayer]> }

const isDefaultBlock = (m: Module) => m instanceof ResnetBlock2D || m instanceof Transformer2DModel || m instanceof Attention;

/** The units of a quantized model in registration order (reconstruct() runs them in forward order). */
export function reconstructionUnits(model: Module, granularity: ReconstructionGranularity, blocks: RegExp[] | null = null): ReconstructionUnit[] {
  const mods = [...model.namedModules()];
  const layers = mods.filter((e): e is [string, QuantLayer] => isQuantLayer(e[1]));
  const units: ReconstructionUnit[] = [];
  const covered = new Set<string>();
  if (granularity === 'block') {
    const blockNames: string[] = [];
    for (const [name, m] of mods) {
      if (!name || isQuantLayer(m)) continue;
      if (blockNames.some((b) => name.startsWith(`${b}.`))) continue; // inside an outer block
      if (blocks ? blocks.some((r) => r.test(name)) : isDefaultBlock(m)) blockNames.push(name);
    }
    const byName = new Map(mods);
    for (const b of blockNames) {
      const own = layers.filter(([ln]) => ln.startsWith(`${b}.`));
      if (!own.length) continue;
      own.forEach(([ln]) => covered.add(ln));
      units.push({ name: b, kind: 'block', module: byName.get(b)!, layers: own });
    }
  }
  for (const [name, l] of layers) if (!covered.has(name)) units.push({ name, kind: 'layer', module: l, layers: [[name, l]] });
  const order = new Map(layers.map(([n], i) => [n, i]));
  return units.sort((a, b) => order.get(a.layers[0]![0])! - order.get(b.layers[0]![0])!);
}

/** The (weight quantizer, weight part) pairs of a layer: one, or two for a split conv. */
function weightParts(l: QuantLayer): Array<[WeightQuantizer, Tensor]> | string {
  if (!(l.weight_quantizer instanceof WeightQuantizer)) return 'separable scales (TuneQDM) are trained, not rounded';
  const s = l.weight_quantizer.spec;
  if (s.granularity !== 'tensor' && s.granularity !== 'channel') return `granularity '${s.granularity}' (AdaRound rounds per tensor or per channel)`;
  if (l.weight.dtype !== 'f32' || l.weight.device !== 'cpu') return `weight is ${l.weight.dtype} on ${l.weight.device} (reconstruction runs on f32 CPU weights)`;
  if (l instanceof QuantConv2d && l.split) {
    if (!(l.weight_quantizer_0 instanceof WeightQuantizer)) return 'split conv without a second weight quantizer';
    return [[l.weight_quantizer, slice(l.weight, 1, 0, l.split)], [l.weight_quantizer_0, slice(l.weight, 1, l.split)]];
  }
  return [[l.weight_quantizer, l.weight]];
}

// ---- calibration data -------------------------------------------------------------------------

interface Batch { args: unknown[]; context: ForwardContext | undefined }

function mapDeep(v: unknown, fn: (t: Tensor) => unknown): unknown {
  if (v instanceof Tensor) return fn(v);
  if (Array.isArray(v)) return v.map((x) => mapDeep(x, fn));
  if (v && typeof v === 'object' && Object.getPrototypeOf(v) === Object.prototype) return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, mapDeep(x, fn)]));
  return v;
}
function leaves(v: unknown, out: Tensor[] = []): Tensor[] { mapDeep(v, (t) => { out.push(t); return t; }); return out; }
function disposeDeep(v: unknown): void { for (const t of leaves(v)) if (!t.isDisposed) t.dispose(); }
const snapshot = (v: unknown) => noGrad(() => mapDeep(v, (t) => keep(t.detach().clone())));

function toBatches(calibration: CalibrationBatch[]): Batch[] {
  return calibration.map((entry, i) => {
    const { args, context } = Array.isArray(entry) ? { args: entry, context: undefined } : (entry ?? {}) as { args?: unknown[]; context?: ForwardContext };
    if (!Array.isArray(args)) throw new ArgumentError(`reconstruct: calibration[${i}] must be an argument list or { args, context }`);
    return { args, context };
  });
}

/**
 * Records the model's own inputs (and forward context) while a calibration function runs it, so
 * the reconstruction can replay them: Q-Diffusion's calibration set of U-Net inputs from
 * full-precision sampling. Run with quantization off.
 */
export async function captureModelInputs(model: Module, run: (model: Module) => unknown): Promise<CalibrationBatch[]> {
  const out: CalibrationBatch[] = [];
  const remove = model.registerForwardPreHook((_m, args) => { out.push({ args: snapshot(args) as unknown[], context: { ...currentContext() } }); });
  try { await noGrad(() => run(model)); } finally { remove(); }
  return out;
}

class StopForward extends Error {}

interface Recording { context: ForwardContext | undefined; args?: unknown[]; out?: unknown }

/** Runs the calibration batches, recording the unit's first call of each (arguments and/or output), stopping after it. */
function recordUnit(model: Module, unit: Module, batches: Batch[], want: { args: boolean; out: boolean }): Recording[] {
  const recs: Recording[] = [];
  let cur: Recording | null = null;
  const removePre = unit.registerForwardPreHook((_m, args) => { if (cur && want.args && !cur.args) cur.args = snapshot(args) as unknown[]; });
  const removePost = unit.registerForwardHook((_m, _a, out) => {
    if (!cur) return;
    if (want.out) cur.out = snapshot(out);
    recs.push(cur);
    cur = null;
    throw new StopForward();
  });
  try {
    for (const b of batches) {
      cur = { context: b.context };
      try { noGrad(() => tidy(() => { (b.context ? withContext(b.context, () => model.call(...b.args)) : model.call(...b.args)); })); } catch (e) { if (!(e instanceof StopForward)) throw e; }
      cur = null;
    }
  } finally { removePre(); removePost(); }
  return recs;
}

/** A unit's calibration data: rows of one forward context concatenated along dim 0. */
interface Dataset { context: ForwardContext | undefined; rows: number; args: unknown[]; perRow: boolean[]; targets: Tensor[] }

function rowsOf(args: unknown[]): number {
  const first = leaves(args)[0];
  return first && first.ndim > 0 ? first.shape[0]! : 1;
}

/** Groups recordings by context and leaf shapes, concatenating the per-row tensors (those whose dim 0 is the batch). */
function buildDatasets(inputs: Recording[], outputs: Recording[]): Dataset[] {
  if (inputs.length !== outputs.length) throw new ArgumentError(`reconstruct: the unit was reached in ${outputs.length} full-precision runs but ${inputs.length} quantized runs (does the model's control flow depend on quantization?)`);
  const groups = new Map<string, Array<{ args: unknown[]; out: Tensor[]; context: ForwardContext | undefined }>>();
  inputs.forEach((r, i) => {
    const args = r.args!, out = leaves(outputs[i]!.out);
    const n = rowsOf(args);
    // Same context, same non-tensor arguments (e.g. a number timestep), same per-row shapes.
    const shapeKey = (t: Tensor) => `${t.dtype}[${(t.ndim > 0 && t.shape[0] === n ? ['*', ...t.shape.slice(1)] : t.shape).join(',')}]`;
    const sig = JSON.stringify([r.context ?? null, mapDeep(args, shapeKey), out.map(shapeKey)]);
    const g = groups.get(sig) ?? [];
    g.push({ args, out, context: r.context });
    groups.set(sig, g);
  });
  const sets: Dataset[] = [];
  for (const g of groups.values()) {
    const first = g[0]!;
    const n0 = rowsOf(first.args);
    const firstLeaves = leaves(first.args);
    const perRow = firstLeaves.map((t) => t.ndim > 0 && t.shape[0] === n0);
    const cols = g.map((e) => leaves(e.args));
    let k = 0;
    const args = noGrad(() => mapDeep(first.args, (t) => {
      const j = k++;
      if (g.length === 1) return t;
      return keep(perRow[j] ? concat(cols.map((c) => c[j]!), 0) : t.clone());
    })) as unknown[];
    const targets = first.out.map((_, j) => (g.length === 1 ? first.out[j]! : keep(noGrad(() => concat(g.map((e) => e.out[j]!), 0)))));
    if (g.length > 1) { for (const e of g) { disposeDeep(e.args); e.out.forEach((t) => t.dispose()); } }
    sets.push({ context: first.context, rows: g.reduce((s, e) => s + rowsOf(e.args), 0), args, perRow, targets });
  }
  return sets;
}

function disposeDataset(d: Dataset): void { disposeDeep(d.args); d.targets.forEach((t) => { if (!t.isDisposed) t.dispose(); }); }

/** A random batch: a dataset chosen in proportion to its rows, then up to `batch` distinct rows of it (torch.randperm(n)[:batch]). */
function drawBatch(sets: Dataset[], batch: number, rand: () => number): { set: Dataset; rows: number[] } {
  const total = sets.reduce((s, d) => s + d.rows, 0);
  let u = rand() * total, set = sets[sets.length - 1]!;
  for (const d of sets) { if (u < d.rows) { set = d; break; } u -= d.rows; }
  const idx = Array.from({ length: set.rows }, (_, i) => i);
  const take = Math.min(batch, set.rows);
  for (let i = 0; i < take; i++) { const j = i + Math.floor(rand() * (set.rows - i)); [idx[i], idx[j]] = [idx[j]!, idx[i]!]; }
  return { set, rows: idx.slice(0, take) };
}

/** The unit's loss on the given rows (all when rows is null). */
function unitLoss(unit: Module, set: Dataset, rows: number[] | null, p: number): Tensor {
  const index = rows ? tensor(rows, { dtype: 'i64' }) : null;
  let k = 0;
  const args = mapDeep(set.args, (t) => { const j = k++; return index && set.perRow[j] ? indexSelect(t, 0, index) : t; }) as unknown[];
  const out = leaves(set.context ? withContext(set.context, () => unit.call(...args)) : unit.call(...args));
  const tgt = set.targets.map((t) => (index ? indexSelect(t, 0, index) : t));
  if (out.length !== tgt.length) throw new ArgumentError(`reconstruct: the unit returned ${out.length} tensors, the full-precision run ${tgt.length}`);
  let loss: Tensor | null = null;
  out.forEach((o, j) => { const l = lpLoss(o, tgt[j]!, p); loss = loss ? add(loss, l) : l; });
  return loss!;
}

/** Mean loss over all rows (in chunks of `batch`), weighted by rows. */
function evalLoss(unit: Module, sets: Dataset[], batch: number, p: number): number {
  let s = 0, n = 0;
  for (const set of sets) {
    for (let start = 0; start < set.rows; start += batch) {
      const rows = Array.from({ length: Math.min(batch, set.rows - start) }, (_, i) => start + i);
      s += noGrad(() => tidy(() => unitLoss(unit, set, rows, p).item())) * rows.length;
      n += rows.length;
    }
  }
  return n ? s / n : 0;
}

// ---- the passes -------------------------------------------------------------------------------

type Switches = Array<[QuantLayer, boolean, boolean]>;
const setAll = (layers: QuantLayer[], w: boolean, a: boolean) => layers.forEach((l) => { l.quantWeights = w; l.quantActivations = a; });

interface PassContext {
  model: Module;
  batches: Batch[];
  all: QuantLayer[];
  o: ResolvedReconstruction;
  run: ReconstructRunOptions;
}

/** FP targets and the inputs the unit sees (quantized model with weights, and activations when actQuant). */
function unitData(c: PassContext, unit: Module, actQuant: boolean): Dataset[] {
  setAll(c.all, false, false);
  const fpInputs = c.o.inputs === 'fp';
  const fp = recordUnit(c.model, unit, c.batches, { args: fpInputs, out: true });
  let q = fp;
  if (!fpInputs) {
    setAll(c.all, true, actQuant);
    q = recordUnit(c.model, unit, c.batches, { args: true, out: false });
  }
  return buildDatasets(q, fp);
}

/** Runs fn with only `train` requiring gradients among the unit's parameters. */
function withTrainable<T>(unit: Module, train: Tensor[], fn: () => T): T {
  const params = unit.parameters();
  const saved = params.map((t) => t.requiresGrad);
  params.forEach((t) => { t.requiresGrad = false; });
  train.forEach((t) => { t.requiresGrad = true; });
  try { return fn(); } finally { params.forEach((t, i) => { t.requiresGrad = saved[i]!; }); }
}

/**
 * Learns one unit's rounding. Its AdaRound overrides stay installed (frozen codes) for the later
 * units' quantized inputs; their removers are pushed to `installed`.
 */
function reconstructUnitWeights(c: PassContext, u: ReconstructionUnit, index: number, count: number, rounds: AdaRoundQuantizer[], rand: () => number, installed: Array<() => void>): UnitReport {
  const { o } = c;
  const sets = unitData(c, u.module, false);
  try {
    setAll(u.layers.map(([, l]) => l), true, false);
    const lossNearest = evalLoss(u.module, sets, o.batch, o.p);
    const removers = rounds.map((r) => r.install());
    installed.push(...removers);
    {
      const train = [...rounds.map((r) => r.alpha!), ...(o.learnStepSize ? [...new Set(rounds.map((r) => r.base.delta))] : [])];
      const opt = new optim.Adam(train, { lr: o.lr });
      try {
        withTrainable(u.module, train, () => {
          for (let it = 0; it < o.iters; it++) {
            const beta = annealedBeta(it, o.iters, o.warmup, o.betaStart, o.betaEnd);
            const { set, rows } = drawBatch(sets, o.batch, rand);
            const [total, rec] = tidy(() => enableGrad(() => {
              const recLoss = unitLoss(u.module, set, rows, o.p);
              let loss = recLoss;
              if (beta !== null && o.lambda > 0) for (const r of rounds) loss = add(loss, mul(r.roundingLoss(beta), o.lambda));
              loss.backward();
              return [loss.item(), recLoss.item()];
            }));
            opt.step();
            opt.zeroGrad();
            if (c.run.onProgress && (it % (c.run.progressEvery ?? 100) === 0 || it === o.iters - 1)) c.run.onProgress({ phase: 'weights', unit: u.name, index, units: count, iter: it, loss: total!, recLoss: rec! });
          }
        });
      } finally { opt.dispose(); }
      rounds.forEach((r) => { r.state = 'hard'; });
      const lossLearned = evalLoss(u.module, sets, o.batch, o.p);
      const n = rounds.reduce((s, r) => s + r.weight.numel, 0);
      const flipped = rounds.reduce((s, r) => s + r.flippedFraction() * r.weight.numel, 0) / Math.max(1, n);
      rounds.forEach((r) => r.freeze());
      return { unit: u.name, kind: u.kind, layers: u.layers.map(([ln]) => ln), lossNearest, lossLearned, flipped };
    }
  } finally { sets.forEach(disposeDataset); }
}

function reconstructUnitActivations(c: PassContext, u: ReconstructionUnit, index: number, count: number, rand: () => number, report: UnitReport | undefined): void {
  const { o } = c;
  const qs: ActivationQuantizer[] = u.layers.flatMap(([, l]) => l.actQuantizers()).filter((q) => q.enabled);
  if (!qs.length) return;
  const sets = unitData(c, u.module, true);
  try {
    setAll(u.layers.map(([, l]) => l), true, true);
    const before = evalLoss(u.module, sets, o.batch, o.actP);
    const train = qs.map((q) => q.delta);
    const opt = new optim.Adam(train, { lr: o.actLr });
    const T = o.actIters;
    const sched = new optim.LRScheduler(opt, (step) => 0.5 * (1 + Math.cos((Math.PI * Math.min(step, T)) / T)));
    try {
      withTrainable(u.module, train, () => {
        for (let it = 0; it < T; it++) {
          const { set, rows } = drawBatch(sets, o.batch, rand);
          const loss = tidy(() => enableGrad(() => { const l = unitLoss(u.module, set, rows, o.actP); l.backward(); return l.item(); }));
          opt.step();
          opt.zeroGrad();
          sched.step();
          // A step size must stay positive.
          for (const q of qs) { const d = q.delta.cpuData() as Float32Array; for (let i = q.delta.offset; i < q.delta.offset + q.delta.numel; i++) if (!(d[i]! > 1e-8)) d[i] = 1e-8; }
          if (c.run.onProgress && (it % (c.run.progressEvery ?? 100) === 0 || it === T - 1)) c.run.onProgress({ phase: 'activations', unit: u.name, index, units: count, iter: it, loss, recLoss: loss });
        }
      });
    } finally { opt.dispose(); }
    const after = evalLoss(u.module, sets, o.batch, o.actP);
    if (report) { report.actLossBefore = before; report.actLossAfter = after; }
  } finally { sets.forEach(disposeDataset); }
}

/** Unit order of first use on one calibration batch (units never reached are dropped and reported). */
function forwardOrder(model: Module, units: ReconstructionUnit[], batch: Batch): { ordered: ReconstructionUnit[]; unreached: ReconstructionUnit[] } {
  const seen: ReconstructionUnit[] = [];
  const removers = units.map((u) => u.module.registerForwardPreHook(() => { if (!seen.includes(u)) seen.push(u); }));
  try { noGrad(() => tidy(() => { (batch.context ? withContext(batch.context, () => model.call(...batch.args)) : model.call(...batch.args)); })); } finally { removers.forEach((r) => r()); }
  return { ordered: seen, unreached: units.filter((u) => !seen.includes(u)) };
}

/**
 * Learns the rounding of every quantized layer's weights (and optionally the activation step
 * sizes) by layer or block reconstruction; see the file comment. Call on a model prepared by
 * quantizeModules() / quantize() (weight quantizers initialised). `calibration`: argument lists
 * for model.call (optionally with a forward context), or a function running the model (its model
 * inputs are captured once with quantization off and replayed). Leaves every layer with
 * quantWeights on, its weight holding the learned grid values, and activation switches restored.
 */
export async function reconstruct(model: Module, calibration: CalibrationInput, options: ReconstructionOptions = {}, run: ReconstructRunOptions = {}): Promise<ReconstructionReport> {
  const o = checkReconstructionOptions(options);
  if (!Array.isArray(calibration) && typeof calibration !== 'function') throw new ArgumentError('reconstruct: calibration must be an array of argument lists or a function running the model');
  const all = [...model.namedModules()].filter((e): e is [string, QuantLayer] => isQuantLayer(e[1])).map(([, l]) => l);
  if (!all.length) throw new ArgumentError('reconstruct: the model has no quantized layer (run quantizeModules or quantize first)');
  for (const l of all) if (l.integerForward) throw new ArgumentError('reconstruct: a layer runs on integer execution; reconstruct the fake-quant model before toIntegerExecution');
  if (o.learnActivations && (run.calibrateActivations === false || !all.some((l) => l.actQuantizers().length > 0))) throw new ArgumentError('reconstruct: learnActivations needs activation quantizers that are calibrated here (a recipe with activations, calibrateActivations not off)');
  const saved: Switches = all.map((l) => [l, l.quantWeights, l.quantActivations]);
  const skipped: Array<{ name: string; reason: string }> = [];
  const rounds = new Map<ReconstructionUnit, AdaRoundQuantizer[]>();
  let captured: CalibrationBatch[] | null = null;
  const reports: UnitReport[] = [];
  let activationCalibration: CalibrationReport | undefined;
  const installed: Array<() => void> = [];
  try {
    if (typeof calibration === 'function') { setAll(all, false, false); captured = await captureModelInputs(model, calibration); }
    const batches = toBatches(captured ?? (calibration as CalibrationBatch[]));
    if (!batches.length) throw new ArgumentError('reconstruct: the calibration set is empty');

    const units: ReconstructionUnit[] = [];
    for (const u of reconstructionUnits(model, o.granularity, o.blocks)) {
      const keepLayers = u.layers.filter(([ln, l]) => { const parts = weightParts(l); if (typeof parts === 'string') { skipped.push({ name: ln, reason: parts }); return false; } return true; });
      if (keepLayers.length) units.push({ ...u, layers: keepLayers });
    }
    setAll(all, false, false);
    const { ordered, unreached } = forwardOrder(model, units, batches[0]!);
    for (const u of unreached) skipped.push({ name: u.name, reason: 'not reached by the first calibration batch' });
    const c: PassContext = { model, batches, all, o, run };
    const rand = mulberry32(o.seed);  // the batch sampler: seeded, so runs are reproducible

    for (const [i, u] of ordered.entries()) {
      const rs = u.layers.flatMap(([, l]) => (weightParts(l) as Array<[WeightQuantizer, Tensor]>).map(([q, w]) => new AdaRoundQuantizer(q, w, { learnStepSize: o.learnStepSize })));
      rounds.set(u, rs);
      reports.push(reconstructUnitWeights(c, u, i, ordered.length, rs, rand, installed));
    }
    // From here on every unit's weight quantizer returns its frozen codes.
    {
      const hasActs = all.some((l) => l.actQuantizers().length > 0);
      if (run.calibrateActivations ?? hasActs) {
        setAll(all, true, false);
        activationCalibration = await calibrateActivations(model, batches.map((b) => ({ args: b.args, context: b.context })));
      }
      if (o.learnActivations) {
        if (!activationCalibration) throw new ArgumentError('reconstruct: learnActivations needs calibrated activation quantizers (calibrateActivations must not be off)');
        for (const [i, u] of ordered.entries()) reconstructUnitActivations(c, u, i, ordered.length, rand, reports[i]);
      }
    }
  } finally {
    installed.forEach((rm) => rm());
    // Finished units get their learned rounding written into the weights; unfinished ones keep nearest rounding.
    for (const rs of rounds.values()) for (const r of rs) { if (r.state === 'frozen') r.finalize(); else r.dispose(); }
    for (const [l, w, a] of saved) { l.quantWeights = w; l.quantActivations = a; }
    if (captured) for (const b of captured) disposeDeep(Array.isArray(b) ? b : b.args);
  }
  return { units: reports, skipped, ...(activationCalibration ? { activationCalibration } : {}) };
}

/** The weight pass only (no activation calibration or learning): reconstruct with learnActivations off. */
export async function reconstructWeights(model: Module, calibration: CalibrationInput, options: ReconstructionOptions = {}, run: ReconstructRunOptions = {}): Promise<ReconstructionReport> {
  return reconstruct(model, calibration, { ...options, learnActivations: false }, { ...run, calibrateActivations: false });
}
