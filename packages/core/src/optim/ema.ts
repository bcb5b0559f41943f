// Exponential moving average of parameters (diffusers' EMAModel): shadow = shadow - (1 - decay)
// (shadow - param), with diffusers' step gating and decay ramps:
//   step = max(0, updates - updateAfterStep - 1); decay = 0 while step <= 0 (the shadow copies);
//   warmup: decay = min(maxDecay, (1 + step) / (10 + step))   (diffusers' default ramp), or with
//   `power` set, 1 - (1 + step / invGamma)^-power (diffusers' use_ema_warmup);
//   no warmup: the constant decay.
// Shadows are f32 buffers owned by the EMA; parameters without requiresGrad are copied, not
// averaged, as diffusers does. store()/restore() swap the averaged weights in for evaluation.
import { ArgumentError } from '../errors.js';
import { noGrad } from '../autograd.js';
import { Tensor, shapeStr } from '../tensor.js';
import { bufferValues, hyper, paramValues, stateBuffer } from './optimizer.js';

export interface EMAOptions {
  /** The decay the average settles at (diffusers' max decay). Default 0.9999. */
  decay?: number;
  /** Ramp the decay up from 0 (see the file comment). Default false. */
  warmup?: boolean;
  /** With warmup: use the power ramp 1 - (1 + step/invGamma)^-power instead of (1+step)/(10+step). */
  power?: number;
  invGamma?: number;
  /** The lower bound on the decay once the gating step has passed. Default 0. */
  minDecay?: number;
  /** Updates before this count only copy the parameters. Default 0. */
  updateAfterStep?: number;
}

export interface EMAState {
  decay: number; minDecay: number; warmup: boolean; power: number | null; invGamma: number;
  updateAfterStep: number; optimizationStep: number; shadow: Tensor[];
}

export class EMA {
  readonly params: Tensor[];
  decay: number;
  minDecay: number;
  warmup: boolean;
  power: number | null;
  invGamma: number;
  updateAfterStep: number;
  /** Number of update() calls so far. */
  optimizationStep = 0;
  private shadow: Tensor[];
  private stored: Float32Array[] | null = null;

  constructor(params: Iterable<Tensor>, opts: EMAOptions = {}) {
    this.params = [...params];
    if (this.params.length === 0) throw new ArgumentError('EMA: got an empty parameter list');
    this.decay = opts.decay ?? 0.9999;
    this.minDecay = opts.minDecay ?? 0;
    this.warmup = opts.warmup ?? false;
    this.power = opts.power ?? null;
    this.invGamma = opts.invGamma ?? 1;
    this.updateAfterStep = opts.updateAfterStep ?? 0;
    hyper.unitInterval('decay', this.decay, 'EMA');
    hyper.unitInterval('minDecay', this.minDecay, 'EMA');
    hyper.boolean('warmup', this.warmup, 'EMA');
    if (this.power !== null) hyper.nonNegative('power', this.power, 'EMA');
    if (!(this.invGamma > 0)) throw new ArgumentError(`EMA: invGamma must be > 0 (got ${String(this.invGamma)})`);
    if (!Number.isInteger(this.updateAfterStep) || this.updateAfterStep < 0) throw new ArgumentError(`EMA: updateAfterStep must be an integer >= 0 (got ${String(this.updateAfterStep)})`);
    this.shadow = this.params.map((p) => stateBuffer(p.shape, paramValues(p, 'EMA')));
  }

  /** The decay the next update() uses (diffusers' get_decay for optimizationStep + 1). */
  currentDecay(optimizationStep = this.optimizationStep + 1): number {
    const step = Math.max(0, optimizationStep - this.updateAfterStep - 1);
    if (step <= 0) return 0;
    let d = !this.warmup ? this.decay
      : this.power !== null ? 1 - (1 + step / this.invGamma) ** -this.power
        : (1 + step) / (10 + step);
    d = Math.min(d, this.decay);
    return Math.max(d, this.minDecay);
  }

  /** Moves the average toward the current parameters (call after optimizer.step()). */
  update(): void {
    const decay = this.currentDecay();
    this.optimizationStep += 1;
    const oneMinus = 1 - decay;
    noGrad(() => this.params.forEach((p, k) => {
      const w = paramValues(p, 'EMA.update'), s = bufferValues(this.shadow[k]!);
      if (w.length !== s.length) throw new ArgumentError(`EMA.update: parameter ${k} now has shape ${shapeStr(p.shape)}, the average ${shapeStr(this.shadow[k]!.shape)}`);
      if (!p.requiresGrad) { s.set(w); return; }
      for (let i = 0; i < s.length; ++i) s[i] = s[i]! - oneMinus * (s[i]! - w[i]!);
    }));
  }

  /** Writes the averaged values into `params` (default: the tracked parameters). */
  copyTo(params: Iterable<Tensor> = this.params): void {
    const list = this.matching(params, 'copyTo');
    list.forEach((p, k) => paramValues(p, 'EMA.copyTo').set(bufferValues(this.shadow[k]!)));
  }

  /** Saves copies of `params` so restore() can put them back (e.g. around an EMA evaluation). */
  store(params: Iterable<Tensor> = this.params): void {
    this.stored = this.matching(params, 'store').map((p) => Float32Array.from(paramValues(p, 'EMA.store')));
  }

  /** Writes the values saved by store() back into `params`, and forgets them. */
  restore(params: Iterable<Tensor> = this.params): void {
    if (!this.stored) throw new ArgumentError('EMA.restore: nothing stored (call store() first)');
    const list = this.matching(params, 'restore');
    const stored = this.stored;
    list.forEach((p, k) => paramValues(p, 'EMA.restore').set(stored[k]!));
    this.stored = null;
  }

  /** The averaged values as tensors (views of the EMA's own buffers; do not dispose). */
  get averages(): readonly Tensor[] { return this.shadow; }

  stateDict(): EMAState {
    return {
      decay: this.decay, minDecay: this.minDecay, warmup: this.warmup, power: this.power, invGamma: this.invGamma,
      updateAfterStep: this.updateAfterStep, optimizationStep: this.optimizationStep,
      shadow: this.shadow.map((s) => stateBuffer(s.shape, bufferValues(s))),
    };
  }

  loadStateDict(sd: EMAState): void {
    if (!sd || !Array.isArray(sd.shadow)) throw new ArgumentError('EMA.loadStateDict: expected an EMA state with a shadow list');
    if (sd.shadow.length !== this.params.length) throw new ArgumentError(`EMA.loadStateDict: the state averages ${sd.shadow.length} parameters, this EMA tracks ${this.params.length}`);
    sd.shadow.forEach((t, k) => {
      const p = this.params[k]!;
      if (!(t instanceof Tensor) || t.shape.length !== p.shape.length || t.shape.some((d, i) => d !== p.shape[i])) {
        throw new ArgumentError(`EMA.loadStateDict: shadow ${k} has shape ${t instanceof Tensor ? shapeStr(t.shape) : typeof t}, parameter ${k} has shape ${shapeStr(p.shape)}`);
      }
    });
    if (!Number.isInteger(sd.optimizationStep) || sd.optimizationStep < 0) throw new ArgumentError(`EMA.loadStateDict: optimizationStep must be an integer >= 0 (got ${String(sd.optimizationStep)})`);
    hyper.unitInterval('decay', sd.decay, 'EMA.loadStateDict');
    hyper.unitInterval('minDecay', sd.minDecay, 'EMA.loadStateDict');
    const next = sd.shadow.map((t) => stateBuffer(t.shape, t.data() as Float32Array));
    for (const s of this.shadow) s.dispose();
    this.shadow = next;
    Object.assign(this, { decay: sd.decay, minDecay: sd.minDecay, warmup: sd.warmup, power: sd.power, invGamma: sd.invGamma, updateAfterStep: sd.updateAfterStep, optimizationStep: sd.optimizationStep });
  }

  /** Frees the averaged buffers. */
  dispose(): void { for (const s of this.shadow) s.dispose(); this.shadow = []; }

  private matching(params: Iterable<Tensor>, who: string): Tensor[] {
    const list = [...params];
    if (list.length !== this.shadow.length) throw new ArgumentError(`EMA.${who}: got ${list.length} parameters, the EMA tracks ${this.shadow.length}`);
    list.forEach((p, k) => {
      if (p.numel !== this.shadow[k]!.numel) throw new ArgumentError(`EMA.${who}: parameter ${k} has shape ${shapeStr(p.shape)}, the average ${shapeStr(this.shadow[k]!.shape)}`);
    });
    return list;
  }
}
