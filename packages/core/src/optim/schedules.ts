// Learning-rate schedules as multipliers of each group's initial lr (torch's LambdaLR), with the
// curves of diffusers' get_scheduler: constant, constant_with_warmup (linearWarmup), linear,
// cosine (half a cycle by default) and a step decay (torch's StepLR).
//
// As in torch, constructing an LRScheduler applies schedule(0) at once, and each step() after
// optimizer.step() advances one step. The initial lr is kept in each group as `initialLr`.
import { ArgumentError } from '../errors.js';
import type { Optimizer } from './optimizer.js';

export type Schedule = (step: number) => number;

function checkCount(name: string, v: number, who: string, min = 0): void {
  if (!Number.isInteger(v) || v < min) throw new ArgumentError(`schedules.${who}: ${name} must be an integer >= ${min} (got ${String(v)})`);
}

const warmupFactor = (step: number, warmup: number) => step / Math.max(1, warmup);

export const schedules = {
  /** Always 1. */
  constant(): Schedule { return () => 1; },

  /** Linear ramp from 0 over `warmup` steps, then 1 (diffusers' constant_with_warmup). */
  linearWarmup(warmup: number): Schedule {
    checkCount('warmup', warmup, 'linearWarmup');
    return (step) => (step < warmup ? warmupFactor(step, warmup) : 1);
  },

  /** Warmup, then a linear decay reaching 0 at `total` (diffusers' linear). */
  linearWithWarmup(warmup: number, total: number): Schedule {
    checkCount('warmup', warmup, 'linearWithWarmup');
    checkCount('total', total, 'linearWithWarmup');
    return (step) => (step < warmup ? warmupFactor(step, warmup) : Math.max(0, (total - step) / Math.max(1, total - warmup)));
  },

  /**
   * Warmup, then a cosine from 1 down to `minRatio` at `total` (diffusers' cosine for
   * minRatio 0 and numCycles 0.5).
   */
  cosineWithWarmup(warmup: number, total: number, minRatio = 0, numCycles = 0.5): Schedule {
    checkCount('warmup', warmup, 'cosineWithWarmup');
    checkCount('total', total, 'cosineWithWarmup');
    if (!(minRatio >= 0 && minRatio <= 1)) throw new ArgumentError(`schedules.cosineWithWarmup: minRatio must be in [0, 1] (got ${String(minRatio)})`);
    return (step) => {
      if (step < warmup) return warmupFactor(step, warmup);
      const progress = (step - warmup) / Math.max(1, total - warmup);
      const cosine = Math.max(0, 0.5 * (1 + Math.cos(Math.PI * numCycles * 2 * progress)));
      return minRatio + (1 - minRatio) * cosine;
    };
  },

  /** gamma^floor(step / every) (torch's StepLR). */
  stepDecay(every: number, gamma: number): Schedule {
    checkCount('every', every, 'stepDecay', 1);
    if (!(gamma >= 0 && Number.isFinite(gamma))) throw new ArgumentError(`schedules.stepDecay: gamma must be a finite number >= 0 (got ${String(gamma)})`);
    return (step) => gamma ** Math.floor(step / every);
  },
};

export interface LRSchedulerState { lastStep: number; baseLrs: number[] }

export class LRScheduler {
  readonly optimizer: Optimizer;
  readonly schedule: Schedule;
  private baseLrs: number[];
  private lastStep = 0;

  constructor(optimizer: Optimizer, schedule: Schedule) {
    if (typeof schedule !== 'function') throw new ArgumentError('LRScheduler: schedule must be a function (step) => multiplier');
    this.optimizer = optimizer;
    this.schedule = schedule;
    for (const g of optimizer.paramGroups) if (g.initialLr === undefined) g.initialLr = g.lr;
    this.baseLrs = optimizer.paramGroups.map((g) => g.initialLr as number);
    this.apply();
  }

  /** Advances one step and sets each group's lr. */
  step(): void { this.lastStep += 1; this.apply(); }

  /** The lr of each group as last set. */
  get lastLr(): number[] { return this.optimizer.paramGroups.map((g) => g.lr); }

  /** Steps taken so far. */
  get stepCount(): number { return this.lastStep; }

  stateDict(): LRSchedulerState { return { lastStep: this.lastStep, baseLrs: [...this.baseLrs] }; }

  loadStateDict(s: LRSchedulerState): void {
    if (!s || !Number.isInteger(s.lastStep) || s.lastStep < 0) throw new ArgumentError(`LRScheduler.loadStateDict: lastStep must be an integer >= 0 (got ${String(s?.lastStep)})`);
    if (!Array.isArray(s.baseLrs) || s.baseLrs.length !== this.optimizer.paramGroups.length) throw new ArgumentError(`LRScheduler.loadStateDict: ${s.baseLrs?.length} base lrs for ${this.optimizer.paramGroups.length} parameter groups`);
    this.lastStep = s.lastStep;
    this.baseLrs = [...s.baseLrs];
    this.optimizer.paramGroups.forEach((g, i) => { g.initialLr = this.baseLrs[i]; });
    this.apply();
  }

  private apply(): void {
    const f = this.schedule(this.lastStep);
    if (typeof f !== 'number' || !Number.isFinite(f) || f < 0) throw new ArgumentError(`LRScheduler: the schedule returned ${String(f)} at step ${this.lastStep} (expected a finite multiplier >= 0)`);
    this.optimizer.paramGroups.forEach((g, i) => { g.lr = this.baseLrs[i]! * f; });
  }
}
