// Quantized attention products (Q-Diffusion's QuantQKMatMul / QuantSMVMatMul): per-tensor
// activation quantizers on Q and K (the operands of Q K^T), on V and, optionally, on the softmax
// output (the operands of P V). They sit on @qdm/core's Attention through its operand hook, as a
// child module `matmul_quantizer` (so their step sizes are ordinary state-dict entries:
// `<attention>.matmul_quantizer.act_q.delta`, ...). Q-Diffusion keeps the softmax output of Stable
// Diffusion at 16 bits (`--sm_abit 16`), hence probs are quantized only when asked for.
// Like the layers' activation quantizers they are calibrated by calibrateActivations (observe
// mode: record, pass through), temporal tables included; integer execution leaves these two
// products in floating point (fake quant).
import { ArgumentError, Attention, Module, Tensor, type AttentionOperandHook } from '@qdm/core';
import { ActivationQuantizer, type ActivationQuantizerOptions } from './quantizer.js';
import type { QuantSpec } from './spec.js';

export class AttentionQuantizer extends Module implements AttentionOperandHook {
  act_q: ActivationQuantizer;
  act_k: ActivationQuantizer;
  act_v: ActivationQuantizer;
  act_probs: ActivationQuantizer | null;
  /** Calibration: record the operands and pass them through unquantized. */
  observing = false;
  readonly probs: ((p: Tensor) => Tensor) | null;

  constructor(spec: QuantSpec, probsSpec: QuantSpec | null, opts: ActivationQuantizerOptions = {}) {
    super();
    this.act_q = this.registerModule('act_q', new ActivationQuantizer(spec, opts));
    this.act_k = this.registerModule('act_k', new ActivationQuantizer(spec, opts));
    this.act_v = this.registerModule('act_v', new ActivationQuantizer(spec, opts));
    this.act_probs = this.registerModule('act_probs', probsSpec ? new ActivationQuantizer(probsSpec, opts) : null);
    this.probs = this.act_probs ? (p: Tensor) => this.pass(this.act_probs!, p) : null;
    // Pass-through until calibrated (weight reconstruction may run before the calibration).
    for (const q of this.quantizers()) q.enabled = false;
  }

  private pass(q: ActivationQuantizer, t: Tensor): Tensor {
    if (this.observing) { q.observe(t); return t; }
    return q.enabled ? (q.call(t) as Tensor) : t;
  }
  query(t: Tensor): Tensor { return this.pass(this.act_q, t); }
  key(t: Tensor): Tensor { return this.pass(this.act_k, t); }
  value(t: Tensor): Tensor { return this.pass(this.act_v, t); }
  forward(): never { throw new ArgumentError('AttentionQuantizer is an operand hook of an Attention module, not a layer to call'); }

  quantizers(): ActivationQuantizer[] { return [this.act_q, this.act_k, this.act_v, ...(this.act_probs ? [this.act_probs] : [])]; }
}

export interface QuantizeAttentionOptions {
  /** Spec of the softmax output; null (default) keeps it in floating point. */
  probs?: QuantSpec | null;
  /** Attention module names left unquantized. */
  skip?: RegExp[];
  activationOptions?: ActivationQuantizerOptions;
}

/** Installs an AttentionQuantizer on every @qdm/core Attention module of model; returns their names. */
export function quantizeAttention(model: Module, spec: QuantSpec, opts: QuantizeAttentionOptions = {}): string[] {
  if (!spec || typeof spec !== 'object') throw new ArgumentError('quantizeAttention: spec (a QuantSpec) is required');
  const names: string[] = [];
  for (const [name, m] of [...model.namedModules()]) {
    if (!(m instanceof Attention) || opts.skip?.some((r) => r.test(name))) continue;
    if (m.operandHook) throw new ArgumentError(`quantizeAttention: ${name || 'the model'} already has attention operand quantizers`);
    const q = new AttentionQuantizer(spec, opts.probs ?? null, opts.activationOptions);
    m.registerModule('matmul_quantizer', q);
    m.operandHook = q;
    names.push(name);
  }
  return names;
}

/** Every AttentionQuantizer of model with its module name (`<attention>.matmul_quantizer`). */
export function attentionQuantizers(model: Module): Array<[string, AttentionQuantizer]> {
  return [...model.namedModules()].filter((e): e is [string, AttentionQuantizer] => e[1] instanceof AttentionQuantizer);
}
