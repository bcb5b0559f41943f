// Module: named parameters, buffers and submodules in registration order, state dicts with
// diffusers/PyTorch key names, device/dtype moves, train/eval, forward hooks, and replacement
// of submodules by name pattern (how quantization and LoRA swap layers).
import { StateDictError, ArgumentError } from '../errors.js';
import type { DType } from '../dtype.js';
import type { Device } from '../memory.js';
import { Tensor, shapeStr } from '../tensor.js';
import { to as moveTo } from '../ops/shape.js';
import { castRaw } from '../ops/creation.js';
import { kernel } from '../backend/index.js';
import { noGrad } from '../autograd.js';

export type ForwardPreHook = (module: Module, args: unknown[]) => unknown[] | void;
export type ForwardHook = (module: Module, args: unknown[], output: unknown) => unknown | void;
/** Returns an output to use instead of running forward, or undefined to run it (caching policies). */
export type ForwardOverride = (module: Module, args: unknown[]) => unknown;

export interface LoadResult { missing: string[]; unexpected: string[]; mismatched: string[] }

export abstract class Module {
  training = true;
  private readonly _params = new Map<string, Tensor | null>();
  private readonly _buffers = new Map<string, Tensor | null>();
  private readonly _nonPersistent = new Set<string>();
  private readonly _modules = new Map<string, Module | null>();
  private readonly _preHooks: ForwardPreHook[] = [];
  private readonly _hooks: ForwardHook[] = [];
  private readonly _overrides: ForwardOverride[] = [];

  abstract forward(...args: any[]): any; // eslint-disable-line @typescript-eslint/no-explicit-any

  /** Runs the forward with hooks. Model code calls children through call(), never forward(). */
  call(...args: any[]): any { // eslint-disable-line @typescript-eslint/no-explicit-any
    let a = args;
    for (const h of this._preHooks) { const r = h(this, a); if (r) a = r; }
    let out: unknown;
    for (const o of this._overrides) { out = o(this, a); if (out !== undefined) break; }
    if (out === undefined) out = this.forward(...a);
    for (const h of this._hooks) { const r = h(this, a, out); if (r !== undefined) out = r; }
    return out;
  }

  /**
   * Adds an override consulted before forward: when it returns a value, that value is the
   * module's output and forward does not run (post-hooks still see it). Returns a remover.
   */
  registerForwardOverride(o: ForwardOverride): () => void { this._overrides.push(o); return () => { const i = this._overrides.indexOf(o); if (i >= 0) this._overrides.splice(i, 1); }; }
  /** Adds a hook run before forward (may replace the arguments). Returns a remover. */
  registerForwardPreHook(h: ForwardPreHook): () => void { this._preHooks.push(h); return () => { const i = this._preHooks.indexOf(h); if (i >= 0) this._preHooks.splice(i, 1); }; }
  /** Adds a hook run after forward (may replace the output). Returns a remover. */
  registerForwardHook(h: ForwardHook): () => void { this._hooks.push(h); return () => { const i = this._hooks.indexOf(h); if (i >= 0) this._hooks.splice(i, 1); }; }

  registerParameter(name: string, t: Tensor | null): Tensor {
    if (t && !t.requiresGrad && t.dtype !== 'i64' && t.dtype !== 'i32') t.requiresGrad = true;
    this._params.set(name, t);
    return t as Tensor;
  }
  registerBuffer(name: string, t: Tensor | null, opts: { persistent?: boolean } = {}): Tensor {
    this._buffers.set(name, t);
    if (opts.persistent === false) this._nonPersistent.add(name);
    return t as Tensor;
  }
  registerModule<M extends Module | null>(name: string, m: M): M {
    this._modules.set(name, m);
    return m;
  }

  param(name: string): Tensor | null { return this._params.get(name) ?? null; }
  buffer(name: string): Tensor | null { return this._buffers.get(name) ?? null; }
  child(name: string): Module | null { return this._modules.get(name) ?? null; }

  /** Replaces a parameter/buffer tensor in place of the old one (fields pointing to it follow). */
  setTensor(name: string, t: Tensor): void {
    const old = this._params.has(name) ? this._params.get(name) : this._buffers.get(name);
    if (this._params.has(name)) this._params.set(name, t);
    else if (this._buffers.has(name)) this._buffers.set(name, t);
    else throw new ArgumentError(`${this.constructor.name} has no parameter or buffer '${name}'`);
    this.redirectFields(old, t);
  }

  /** Replaces child `name` (fields that pointed to the old child are updated too). */
  setModule(name: string, m: Module): void {
    if (!this._modules.has(name)) throw new ArgumentError(`${this.constructor.name} has no submodule '${name}'`);
    const old = this._modules.get(name);
    this._modules.set(name, m);
    this.redirectFields(old, m);
  }

  private redirectFields(old: unknown, next: unknown): void {
    if (!old) return;
    const self = this as unknown as Record<string, unknown>;
    for (const k of Object.keys(self)) {
      const v = self[k];
      if (v === old) self[k] = next;
      else if (Array.isArray(v)) { const i = v.indexOf(old); if (i >= 0) v[i] = next; }
    }
  }

  *children(): Generator<[string, Module]> { for (const [k, m] of this._modules) if (m) yield [k, m]; }

  *namedModules(prefix = ''): Generator<[string, Module]> {
    yield [prefix, this];
    for (const [k, m] of this._modules) if (m) yield* m.namedModules(prefix ? `${prefix}.${k}` : k);
  }

  *namedParameters(prefix = ''): Generator<[string, Tensor]> {
    for (const [name, m] of this.namedModules(prefix)) {
      for (const [k, t] of m._params) if (t) yield [name ? `${name}.${k}` : k, t];
    }
  }
  parameters(): Tensor[] { return [...this.namedParameters()].map(([, t]) => t); }

  *namedBuffers(prefix = ''): Generator<[string, Tensor]> {
    for (const [name, m] of this.namedModules(prefix)) {
      for (const [k, t] of m._buffers) if (t) yield [name ? `${name}.${k}` : k, t];
    }
  }

  numParameters(): number { let n = 0; for (const p of this.parameters()) n += p.numel; return n; }

  /** Parameters and persistent buffers by their dotted names (the checkpoint's keys). */
  stateDict(): Map<string, Tensor> {
    const out = new Map<string, Tensor>();
    for (const [name, m] of this.namedModules()) {
      const pre = name ? `${name}.` : '';
      for (const [k, t] of m._params) if (t) out.set(pre + k, t);
      for (const [k, t] of m._buffers) if (t && !m._nonPersistent.has(k)) out.set(pre + k, t);
    }
    return out;
  }

  /**
   * Copies tensors into this module's parameters and buffers (converting dtype, keeping each
   * parameter's device and dtype). Strict by default: any missing, unexpected or mis-shaped key
   * throws a StateDictError listing them all, and nothing is modified.
   */
  loadStateDict(sd: Map<string, Tensor> | Record<string, Tensor>, opts: { strict?: boolean; assign?: boolean } = {}): LoadResult {
    const strict = opts.strict ?? true;
    const src = sd instanceof Map ? sd : new Map(Object.entries(sd));
    const own = this.stateDict();
    const missing: string[] = [], unexpected: string[] = [], mismatched: string[] = [];
    for (const k of own.keys()) if (!src.has(k)) missing.push(k);
    for (const [k, t] of src) {
      const mine = own.get(k);
      if (!mine) { unexpected.push(k); continue; }
      if (mine.shape.length !== t.shape.length || mine.shape.some((d, i) => d !== t.shape[i])) mismatched.push(`${k}: expected ${shapeStr(mine.shape)}, got ${shapeStr(t.shape)}`);
    }
    if (strict && (missing.length || unexpected.length || mismatched.length)) {
      const parts: string[] = [];
      if (missing.length) parts.push(`missing keys (${missing.length}): ${missing.slice(0, 20).join(', ')}${missing.length > 20 ? ', ...' : ''}`);
      if (unexpected.length) parts.push(`unexpected keys (${unexpected.length}): ${unexpected.slice(0, 20).join(', ')}${unexpected.length > 20 ? ', ...' : ''}`);
      if (mismatched.length) parts.push(`shape mismatches (${mismatched.length}): ${mismatched.slice(0, 20).join('; ')}`);
      throw new StateDictError(`loadStateDict (${this.constructor.name}): ${parts.join(' | ')}`, { missing, unexpected, mismatched });
    }
    if (opts.assign) {
      this.assignTensors(src, new Set(mismatched.map((m) => m.split(':')[0]!)));
      return { missing, unexpected, mismatched: mismatched.map((m) => m.split(':')[0]!) };
    }
    noGrad(() => {
      for (const [k, t] of src) {
        const mine = own.get(k);
        if (!mine || mismatched.some((m) => m.startsWith(`${k}:`))) continue;
        let v = t.dtype === mine.dtype ? t : castRaw(t, mine.dtype);
        if (v.device !== mine.device) v = moveTo(v, mine.device);
        kernel('copyCast', v, mine);
        if (v !== t) v.dispose();
      }
    });
    return { missing, unexpected, mismatched: mismatched.map((m) => m.split(':')[0]!) };
  }

  /**
   * Makes the given tensors the module's own (no copy; dtype and device follow the source).
   * This is how a model built with shapes only (withMetaTensors) receives its weights.
   */
  private assignTensors(src: Map<string, Tensor>, skip: Set<string>): void {
    for (const [name, m] of this.namedModules()) {
      const pre = name ? `${name}.` : '';
      for (const map of [m._params, m._buffers]) {
        for (const [k, old] of map) {
          const t = src.get(pre + k);
          if (!old || !t || skip.has(pre + k)) continue;
          const mine = t.detach();
          mine.requiresGrad = map === m._params && old.requiresGrad;
          map.set(k, mine);
          m.redirectFields(old, mine);
          old.dispose();
        }
      }
    }
  }

  /** Moves every parameter and buffer (in place: the module keeps its identity). */
  to(target: Device | 'auto' | DType | { device?: Device | 'auto'; dtype?: DType }): this {
    noGrad(() => {
      for (const [, m] of this.namedModules()) {
        for (const map of [m._params, m._buffers]) {
          for (const [k, t] of map) {
            if (!t) continue;
            // integer buffers keep their dtype when only a float dtype is asked for
            const floatOnly = typeof target === 'string' && target !== 'cpu' && target !== 'cuda' && target !== 'auto';
            if (floatOnly && !['f32', 'f16', 'bf16'].includes(t.dtype)) continue;
            const moved = moveTo(t, target);
            if (moved === t) continue;
            moved.gradFn = null;
            if (map === m._params) moved.requiresGrad = t.requiresGrad;
            map.set(k, moved);
            m.redirectFields(t, moved);
            t.dispose();
          }
        }
      }
    });
    return this;
  }

  train(mode = true): this { for (const [, m] of this.namedModules()) m.training = mode; return this; }
  eval(): this { return this.train(false); }

  /** Calls fn on every module, children first. */
  apply(fn: (m: Module, name: string) => void): this {
    const all = [...this.namedModules()].reverse();
    for (const [name, m] of all) fn(m, name);
    return this;
  }

  /** The submodule at a dotted path ('' is this module). */
  getSubmodule(path: string): Module {
    let m: Module = this;
    if (!path) return m;
    for (const part of path.split('.')) {
      const c = m._modules.get(part);
      if (!c) throw new ArgumentError(`no submodule '${path}' in ${this.constructor.name}`);
      m = c;
    }
    return m;
  }

  /**
   * Replaces every submodule whose dotted name matches (a RegExp, a glob-like string with *,
   * or a predicate) by factory(name, module). Returns the names replaced. Matching is
   * top-down; a replaced module's children are not visited.
   */
  replaceModules(match: RegExp | string | ((name: string, m: Module) => boolean), factory: (name: string, m: Module) => Module): string[] {
    const test = typeof match === 'function' ? match
      : match instanceof RegExp ? (n: string) => match.test(n)
      : (n: string) => new RegExp(`^${match.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*')}$`).test(n);
    const replaced: string[] = [];
    const visit = (m: Module, prefix: string) => {
      for (const [k, c] of [...m._modules]) {
        if (!c) continue;
        const name = prefix ? `${prefix}.${k}` : k;
        if (test(name, c)) { m.setModule(k, factory(name, c)); replaced.push(name); }
        else visit(c, name);
      }
    };
    visit(this, '');
    return replaced;
  }

  zeroGrad(): void { for (const p of this.parameters()) if (p.grad) { p.grad.dispose(); p.grad = null; } }

  /** Frees every parameter and buffer. */
  dispose(): void { for (const [, m] of this.namedModules()) { for (const t of m._params.values()) t?.dispose(); for (const t of m._buffers.values()) t?.dispose(); } }
}
