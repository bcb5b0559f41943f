// The optimizer base: parameter groups, per-parameter state and its (de)serialization.
//
// Updates run in plain JS loops over the parameters' own Float32Array storage: a step writes
// into the tensor the Module holds (no new parameter tensors, no autograd nodes), and the math
// is the same few float operations per element that torch.optim performs, in the same order.
// State buffers (exp_avg etc.) are f32 Tensors kept out of tidy() scopes; the optimizer owns
// them until dispose(). Only f32 CPU parameters are supported for now: anything else fails
// with a typed error naming the parameter, instead of silently updating a converted copy.
import { ArgumentError, DeviceError, DTypeError, ShapeError } from '../errors.js';
import { noGrad } from '../autograd.js';
import { keep } from '../memory.js';
import { Tensor, shapeStr, type Shape } from '../tensor.js';
import { empty } from '../ops/util.js';

/** A set of parameters sharing hyperparameters (lr and the optimizer's own). */
export interface ParamGroup {
  params: Tensor[];
  lr: number;
  [hyper: string]: unknown;
}

/** A parameter group as given to a constructor: unspecified hyperparameters take the defaults. */
export type ParamGroupInit = { params: Iterable<Tensor>; lr?: number; [hyper: string]: unknown };

/** Per-parameter state: buffers (f32 tensors shaped like the parameter) and counters. */
export type ParamState = Record<string, Tensor | number>;

export interface OptimizerState {
  /** Keyed "groupIndex.paramIndex"; parameters that never had a gradient have no entry. */
  state: Record<string, ParamState>;
  /** Each group's hyperparameters, without its params. */
  paramGroups: Array<Record<string, unknown>>;
}

/** What a state entry must hold: a buffer shaped like the parameter, or a number. */
export type StateLayout = Record<string, 'tensor' | 'number'>;

const sameShape = (a: Shape, b: Shape) => a.length === b.length && a.every((d, i) => d === b[i]);

function checkF32Cpu(t: Tensor, what: string): void {
  t.assertLive();
  if (t.dtype !== 'f32') throw new DTypeError(`${what}: only f32 tensors are supported for now (got ${t.dtype} ${shapeStr(t.shape)}); keep master weights in f32`);
  if (t.device !== 'cpu') throw new DeviceError('QDM_BAD_DEVICE', `${what}: only CPU tensors are supported for now (got device ${t.device})`);
}

/** The parameter's elements as a Float32Array aliasing its storage (writes update the parameter). */
export function paramValues(p: Tensor, who: string): Float32Array {
  checkF32Cpu(p, `${who}: parameter ${p.name ?? shapeStr(p.shape)}`);
  if (!p.isContiguous()) throw new ArgumentError(`${who}: parameter ${shapeStr(p.shape)} is not contiguous; optimizers update parameters in place`);
  return (p.cpuData() as Float32Array).subarray(p.offset, p.offset + p.numel);
}

/**
 * The gradient's elements as a Float32Array aliasing its storage. A non-contiguous .grad (set by
 * hand) is replaced by a dense copy first, so in-place edits (clipping) reach the gradient.
 */
export function gradValues(p: Tensor, who: string): Float32Array {
  let g = p.grad!;
  checkF32Cpu(g, `${who}: gradient of parameter ${p.name ?? shapeStr(p.shape)}`);
  if (!sameShape(g.shape, p.shape)) throw new ShapeError(`${who}: gradient shape ${shapeStr(g.shape)} differs from parameter shape ${shapeStr(p.shape)}`);
  if (!g.isContiguous()) {
    const dense = keep(empty(g.shape, 'f32'));
    (dense.cpuData() as Float32Array).set(g.data() as Float32Array);
    g.dispose();
    p.grad = g = dense;
  }
  return (g.cpuData() as Float32Array).subarray(g.offset, g.offset + g.numel);
}

/** A new f32 buffer owned by the caller (survives tidy scopes), zero-filled or a copy of `init`. */
export function stateBuffer(shape: Shape, init?: ArrayLike<number>): Tensor {
  const t = keep(empty(shape, 'f32'));
  const d = t.cpuData() as Float32Array;
  if (init) d.set(init); else d.fill(0);
  return t;
}

/** The values of an f32 buffer (contiguous, owned by us). */
export function bufferValues(t: Tensor): Float32Array {
  return (t.cpuData() as Float32Array).subarray(t.offset, t.offset + t.numel);
}

function checkHyper(name: string, v: unknown, who: string, ok: (n: number) => boolean, range: string): void {
  if (typeof v !== 'number' || !Number.isFinite(v) || !ok(v)) throw new ArgumentError(`${who}: invalid ${name} ${String(v)} (expected ${range})`);
}

/** Validation helpers for subclasses' hyperparameters. */
export const hyper = {
  nonNegative(name: string, v: unknown, who: string) { checkHyper(name, v, who, (n) => n >= 0, 'a finite number >= 0'); },
  unitInterval(name: string, v: unknown, who: string) { checkHyper(name, v, who, (n) => n >= 0 && n < 1, 'a number in [0, 1)'); },
  boolean(name: string, v: unknown, who: string) { if (typeof v !== 'boolean') throw new ArgumentError(`${who}: ${name} must be a boolean (got ${String(v)})`); },
};

function isTensorList(params: Iterable<Tensor> | ParamGroupInit[]): params is Iterable<Tensor> {
  const first = (Array.isArray(params) ? params : [...params])[0];
  return first instanceof Tensor;
}

export abstract class Optimizer<Defaults extends { lr: number } = { lr: number }> {
  readonly defaults: Readonly<Defaults>;
  paramGroups: ParamGroup[] = [];
  /** State per parameter, created at its first update. */
  protected state = new Map<Tensor, ParamState>();
  /** The class name used in error messages. */
  protected get who(): string { return this.constructor.name; }

  constructor(params: Iterable<Tensor> | ParamGroupInit[], defaults: Defaults) {
    this.defaults = Object.freeze({ ...defaults });
    const list = [...params] as Array<Tensor | ParamGroupInit>;
    if (list.length === 0) throw new ArgumentError(`${new.target.name}: got an empty parameter list`);
    if (isTensorList(list as Tensor[])) this.addParamGroup({ params: list as Tensor[] });
    else for (const g of list as ParamGroupInit[]) this.addParamGroup(g);
  }

  /** Adds a group; hyperparameters it does not give come from the defaults. */
  addParamGroup(init: ParamGroupInit): void {
    if (!init || typeof init !== 'object' || !init.params) throw new ArgumentError(`${this.constructor.name}: a parameter group needs a 'params' list`);
    const params = [...init.params];
    const seen = new Set(this.paramGroups.flatMap((g) => g.params));
    for (const p of params) {
      if (!(p instanceof Tensor)) throw new ArgumentError(`${this.constructor.name}: parameters must be Tensors (got ${typeof p})`);
      if (seen.has(p)) throw new ArgumentError(`${this.constructor.name}: parameter ${p.name ?? shapeStr(p.shape)} appears in more than one place; each parameter may be given once`);
      if (!p.isLeaf) throw new ArgumentError(`${this.constructor.name}: cannot optimize a non-leaf tensor ${shapeStr(p.shape)} (it was computed by an op)`);
      if (p.dtype !== 'f32') throw new DTypeError(`${this.constructor.name}: parameter ${p.name ?? shapeStr(p.shape)} is ${p.dtype}; only f32 parameters are supported for now`);
      seen.add(p);
    }
    const group = { ...this.defaults, ...init, params } as ParamGroup;
    for (const k of Object.keys(group)) if (k !== 'params' && k !== 'initialLr' && !(k in this.defaults)) throw new ArgumentError(`${this.constructor.name}: unknown hyperparameter '${k}' in a parameter group (known: ${Object.keys(this.defaults).join(', ')})`);
    this.validateGroup(group);
    this.paramGroups.push(group);
  }

  /** Throws an ArgumentError for out-of-range hyperparameters. */
  protected abstract validateGroup(group: ParamGroup): void;
  /** The state entries a parameter of this group has once it was updated. */
  protected abstract stateLayout(group: ParamGroup): StateLayout;
  /** Updates one parameter in place from its gradient. `state` is undefined at the first update. */
  protected abstract updateParam(param: Float32Array, grad: Float32Array, state: ParamState | undefined, group: ParamGroup, p: Tensor): ParamState | undefined;

  /** One optimization step over every parameter that has a gradient. */
  step(): void {
    noGrad(() => {
      for (const group of this.paramGroups) {
        for (const p of group.params) {
          if (!p.grad) continue;
          const next = this.updateParam(paramValues(p, this.who), gradValues(p, this.who), this.state.get(p), group, p);
          if (next) this.state.set(p, next);
        }
      }
    });
  }

  /** Clears gradients: drops them (default, like torch's set_to_none) or zero-fills them in place. */
  zeroGrad(opts: { setToNone?: boolean } = {}): void {
    for (const g of this.paramGroups) for (const p of g.params) {
      if (!p.grad) continue;
      if (opts.setToNone ?? true) { p.grad.dispose(); p.grad = null; }
      else gradValues(p, this.who).fill(0);
    }
  }

  /** A snapshot: state buffers are copies, so training may go on while it is being saved. */
  stateDict(): OptimizerState {
    const state: Record<string, ParamState> = {};
    this.paramGroups.forEach((g, gi) => g.params.forEach((p, pi) => {
      const s = this.state.get(p);
      if (!s) return;
      const copy: ParamState = {};
      for (const [k, v] of Object.entries(s)) copy[k] = typeof v === 'number' ? v : stateBuffer(v.shape, bufferValues(v));
      state[`${gi}.${pi}`] = copy;
    }));
    const paramGroups = this.paramGroups.map(({ params: _params, ...h }) => structuredClone(h));
    return { state, paramGroups };
  }

  /** Restores a snapshot taken from an optimizer over the same parameter layout (values are copied). */
  loadStateDict(sd: OptimizerState): void {
    const who = `${this.who}.loadStateDict`;
    if (!sd || typeof sd !== 'object' || !sd.state || !Array.isArray(sd.paramGroups)) throw new ArgumentError(`${who}: expected {state, paramGroups}`);
    if (sd.paramGroups.length !== this.paramGroups.length) throw new ArgumentError(`${who}: the state has ${sd.paramGroups.length} parameter groups, this optimizer has ${this.paramGroups.length}`);
    // Hyperparameters first (a state's layout depends on them, e.g. amsgrad), validated on copies.
    const groups = this.paramGroups.map((g, gi) => {
      const h = sd.paramGroups[gi]!;
      if ('params' in h) throw new ArgumentError(`${who}: parameter group ${gi} carries 'params'; a state dict holds hyperparameters only`);
      const merged = { ...g, ...structuredClone(h), params: g.params } as ParamGroup;
      for (const k of Object.keys(merged)) if (k !== 'params' && k !== 'initialLr' && !(k in this.defaults)) throw new ArgumentError(`${who}: unknown hyperparameter '${k}' in parameter group ${gi}`);
      this.validateGroup(merged);
      return merged;
    });
    const next = new Map<Tensor, ParamState>();
    for (const [key, entry] of Object.entries(sd.state)) {
      const m = /^(\d+)\.(\d+)$/.exec(key);
      if (!m) throw new ArgumentError(`${who}: state key '${key}' is not "groupIndex.paramIndex"`);
      const gi = Number(m[1]), pi = Number(m[2]);
      const group = groups[gi];
      if (!group) throw new ArgumentError(`${who}: state key '${key}' names group ${gi}, but there are ${groups.length} groups`);
      const p = group.params[pi];
      if (!p) throw new ArgumentError(`${who}: state key '${key}' names parameter ${pi}, but group ${gi} has ${group.params.length} parameters`);
      const layout = this.stateLayout(group);
      const names = Object.keys(entry).sort(), expected = Object.keys(layout).sort();
      if (names.join() !== expected.join()) throw new ArgumentError(`${who}: state '${key}' has entries [${names.join(', ')}], expected [${expected.join(', ')}]`);
      const copy: ParamState = {};
      for (const name of expected) {
        const v = entry[name];
        if (layout[name] === 'number') {
          if (typeof v !== 'number' || !Number.isFinite(v)) throw new ArgumentError(`${who}: state '${key}.${name}' must be a finite number (got ${String(v)})`);
          copy[name] = v;
        } else {
          if (!(v instanceof Tensor)) throw new ArgumentError(`${who}: state '${key}.${name}' must be a Tensor`);
          if (!sameShape(v.shape, p.shape)) throw new ArgumentError(`${who}: state '${key}.${name}' has shape ${shapeStr(v.shape)}, but parameter ${gi}.${pi} has shape ${shapeStr(p.shape)}`);
          copy[name] = stateBuffer(v.shape, v.data() as Float32Array);
        }
      }
      next.set(p, copy);
    }
    this.disposeState();
    this.state = next;
    this.paramGroups = groups;
  }

  /** Frees the state buffers (the optimizer starts over if stepped again). */
  dispose(): void { this.disposeState(); }

  private disposeState(): void {
    for (const s of this.state.values()) for (const v of Object.values(s)) if (typeof v !== 'number') v.dispose();
    this.state.clear();
  }
}
