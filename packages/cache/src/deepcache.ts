// DeepCache on any diffusers-structured U-Net, as forward overrides: on a retrieval step every
// layer deeper than the chosen skip branch returns what it returned at the last full step, so
// only conv_in, the shallow down layers, the up layers from the branch on and conv_out run.
// Which steps are full comes from a policy: DeepCache's uniform or non-uniform schedule (with
// a timestep-gap guard), or an adaptive rule that watches how much the shallow branch feature
// moved since the last full step (first-block-cache / TeaCache style).
//
// The step index comes from the forward context that sample() sets, so caching follows the
// sampler's steps, not a count of calls; several calls within one step (e.g. unbatched
// classifier-free guidance) each get their own cache slot.
import { ArgumentError, Tensor, currentContext, keep, nn, sub, abs, mean, noGrad, type Module } from '@qdm/core';
import { uniformSchedule, nonUniformSchedule } from './schedule.js';
import { unetLayers, type UNetLayers } from './unet-layers.js';

export interface DeepCacheOptions {
  /** Deepest skip feature recomputed on a retrieval step (0 = conv_in's output); see branchFromHelperId/branchFromPipeline. */
  branch?: number;
  /** 'deepcache' (a schedule of full steps) or 'adaptive' (decided from the shallow feature's change). */
  policy?: 'deepcache' | 'adaptive';
  /** DeepCache: full step every N steps (1 disables caching). */
  interval?: number;
  /** DeepCache: 'uniform' ({0, N, 2N, ...}) or 'non-uniform' (denser around `center`, the reference's quadratic rule). */
  schedule?: 'uniform' | 'non-uniform';
  center?: number;
  power?: number;
  /** DeepCache: explicit full steps (overrides interval/schedule). */
  fullSteps?: number[];
  /** Compute fully when the timestep moved more than this since the last full step. */
  maxTimestepGap?: number;
  /** Adaptive: accumulated relative L1 change of the branch feature that forces a full step. */
  threshold?: number;
  /** Adaptive: at most this many retrieval steps in a row. */
  maxConsecutive?: number;
}

export interface StepRecord { stepIndex: number; timestep: number; mode: 'full' | 'retrieve'; layers: number; change?: number }
export interface CacheReport { steps: StepRecord[]; fullSteps: number[]; retrievedSteps: number[]; layersRun: number }

export interface CacheHandle {
  readonly options: Required<Pick<DeepCacheOptions, 'branch' | 'policy'>> & DeepCacheOptions;
  report(): CacheReport;
  /** Forgets cached features and the step log (sample() runs do this at step 0 themselves). */
  reset(): void;
  /** Restores the plain model. */
  remove(): void;
}

type Slot = { outputs: Map<Module, unknown>; branchFeature: Tensor | null; timestep: number; accumulated: number; run: number };

function keepAll(v: unknown): unknown {
  if (v instanceof Tensor) return keep(v);
  if (Array.isArray(v)) { v.forEach(keepAll); return v; }
  if (v && typeof v === 'object') { Object.values(v).forEach(keepAll); return v; }
  return v;
}
function disposeAll(v: unknown): void {
  if (v instanceof Tensor) v.dispose();
  else if (Array.isArray(v)) v.forEach(disposeAll);
  else if (v && typeof v === 'object') Object.values(v).forEach(disposeAll);
}

function relativeL1(a: Tensor, b: Tensor): number {
  return noGrad(() => {
    const d = mean(abs(sub(a, b))), n = mean(abs(b));
    const r = d.item() / Math.max(n.item(), 1e-12);
    d.dispose(); n.dispose();
    return r;
  });
}

/** Modules skipped on a retrieval step: whole blocks where possible, single layers in the branch's blocks. */
function deepModules(layers: UNetLayers, branch: number): Module[] {
  const out: Module[] = [];
  layers.downBlocks.forEach((block, i) => {
    const mine = layers.down.filter((d) => d.block === i);
    if (mine.length && mine.every((d) => d.skip > branch)) out.push(block);
    else for (const d of mine) if (d.skip > branch) out.push(...d.modules);
  });
  if (layers.mid) out.push(layers.mid);
  layers.upBlocks.forEach((block, k) => {
    const mine = layers.up.filter((u) => u.block === k);
    if (mine.every((u) => u.skip > branch)) out.push(block);
    else for (const u of mine) if (u.skip > branch) out.push(...u.modules);
  });
  return out;
}

/** Applies DeepCache (or the adaptive policy) to `unet`. Interval 1 reproduces the uncached model exactly. */
export function applyCache(unet: Module, options: DeepCacheOptions = {}): CacheHandle {
  const policy = options.policy ?? 'deepcache';
  if (policy !== 'deepcache' && policy !== 'adaptive') throw new ArgumentError(`applyCache: unknown policy '${String(policy)}'`);
  const branch = options.branch ?? 0;
  const interval = options.interval ?? 3;
  if (!Number.isInteger(interval) || interval < 1) throw new ArgumentError(`applyCache: interval must be a positive integer, got ${interval}`);
  const schedule = options.schedule ?? 'uniform';
  if (schedule !== 'uniform' && schedule !== 'non-uniform') throw new ArgumentError(`applyCache: unknown schedule '${String(schedule)}'`);
  const threshold = options.threshold ?? 0.15;
  const maxConsecutive = options.maxConsecutive ?? 4;
  const maxGap = options.maxTimestepGap ?? Infinity;
  const layers = unetLayers(unet);
  if (!Number.isInteger(branch) || branch < 0 || branch >= layers.numSkips) {
    throw new ArgumentError(`applyCache: branch must be an integer in [0, ${layers.numSkips - 1}] for this U-Net, got ${branch}`);
  }
  const deep = deepModules(layers, branch);
  // The module whose output is the branch feature: conv_in for branch 0, else that down layer's last module.
  const branchLayer = layers.down.find((d) => d.skip === branch);
  const branchModule = branchLayer ? branchLayer.modules[branchLayer.modules.length - 1]! : [...unet.children()].find(([k]) => k === 'conv_in')?.[1];
  if (!branchModule) throw new ArgumentError('applyCache: the U-Net has no conv_in');

  const slots: Slot[] = [];
  const steps: StepRecord[] = [];
  let fullSet: Set<number> | null = null;
  let fullSetFor = -1;
  let step = -1, slotIndex = 0, stepCall = 0;
  let mode: 'full' | 'retrieve' | 'probe' = 'full';
  let current: Slot | null = null;
  let record: StepRecord | null = null;
  let layersRun = 0;

  const fullStepsFor = (numSteps: number): Set<number> => {
    if (fullSet && fullSetFor === numSteps) return fullSet;
    const list = options.fullSteps ?? (schedule === 'uniform' ? uniformSchedule(numSteps, interval) : nonUniformSchedule(numSteps, interval, options.center ?? 15, options.power ?? 1.4).steps);
    fullSet = new Set(list); fullSetFor = numSteps;
    return fullSet;
  };
  const resetState = () => {
    for (const s of slots) { for (const v of s.outputs.values()) disposeAll(v); s.branchFeature?.dispose(); }
    slots.length = 0; steps.length = 0; layersRun = 0; step = -1;
  };

  const removers: Array<() => void> = [];
  removers.push(unet.registerForwardPreHook(() => {
    const ctx = currentContext();
    const idx = typeof ctx.stepIndex === 'number' ? ctx.stepIndex : undefined;
    const t = typeof ctx.timestep === 'number' ? ctx.timestep : NaN;
    if (idx === 0 && step !== 0 && step !== -1) resetState();  // a new sampling run
    if (idx !== step) { step = idx ?? -1; stepCall = 0; }
    slotIndex = stepCall++;
    current = slots[slotIndex] ?? null;
    const cached = current !== null && current.outputs.size > 0;
    if (idx === undefined || !cached) mode = 'full';
    else if (Math.abs(t - current!.timestep) > maxGap) mode = 'full';
    else if (policy === 'deepcache') mode = fullStepsFor(Number(ctx.numSteps ?? idx + 1)).has(idx) ? 'full' : 'retrieve';
    else mode = 'probe';
    record = { stepIndex: idx ?? -1, timestep: t, mode: mode === 'full' ? 'full' : 'retrieve', layers: 0 };
    steps.push(record);
  }));
  // The adaptive decision is taken when the branch feature exists, before any deep layer runs.
  removers.push(branchModule.registerForwardHook((_m, _a, out) => {
    const feature = out instanceof Tensor ? out : Array.isArray(out) && out[0] instanceof Tensor ? (out[0] as Tensor) : null;
    if (mode === 'probe' && current && current.branchFeature && feature) {
      const change = relativeL1(feature, current.branchFeature);
      current.accumulated += change;
      record!.change = change;
      mode = current.accumulated > threshold || current.run >= maxConsecutive ? 'full' : 'retrieve';
      record!.mode = mode === 'full' ? 'full' : 'retrieve';
    } else if (mode === 'probe') {
      mode = 'full';
      record!.mode = 'full';
    }
    if (!slots[slotIndex]) slots[slotIndex] = { outputs: new Map(), branchFeature: null, timestep: NaN, accumulated: 0, run: 0 };
    if (policy === 'adaptive' && mode === 'full' && feature) {
      if (!slots[slotIndex]) slots[slotIndex] = { outputs: new Map(), branchFeature: null, timestep: NaN, accumulated: 0, run: 0 };
      const s = slots[slotIndex]!;
      s.branchFeature?.dispose();
      s.branchFeature = keep(feature.clone());
    }
    return undefined;
  }));
  for (const m of deep) {
    removers.push(m.registerForwardOverride(() => (mode === 'retrieve' ? current!.outputs.get(m) : undefined)));
    removers.push(m.registerForwardHook((_m, _a, out) => {
      if (mode !== 'full') return undefined;
      const s = slots[slotIndex]!;
      const old = s.outputs.get(m);
      if (old !== undefined && old !== out) disposeAll(old);
      s.outputs.set(m, keepAll(out));
      return undefined;
    }));
  }
  // Bookkeeping after the whole forward: slot timestep, retrieval run length.
  removers.push(unet.registerForwardHook(() => {
    const s = slots[slotIndex];
    if (s && record) {
      if (record.mode === 'full') { s.timestep = record.timestep; s.accumulated = 0; s.run = 0; } else s.run++;
    }
    return undefined;
  }));
  // Count executed convolutions and linear layers: the cost actually paid per call.
  for (const [, m] of unet.namedModules()) {
    if (m instanceof nn.Conv2d || m instanceof nn.Linear) {
      removers.push(m.registerForwardHook(() => { if (record) record.layers++; layersRun++; return undefined; }));
    }
  }
  return {
    options: { ...options, branch, policy },
    report: () => ({
      steps: steps.map((s) => ({ ...s })),
      fullSteps: [...new Set(steps.filter((s) => s.mode === 'full').map((s) => s.stepIndex))],
      retrievedSteps: [...new Set(steps.filter((s) => s.mode === 'retrieve').map((s) => s.stepIndex))],
      layersRun,
    }),
    reset: resetState,
    remove: () => { for (const r of removers) r(); removers.length = 0; resetState(); },
  };
}
