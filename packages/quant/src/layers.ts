// Fake-quant layers. QuantLinear / QuantConv2d adopt the original layer's weight and bias
// tensors under the same names, so `<layer>.weight` / `<layer>.bias` keys stay diffusers
// compatible; the quantizers are submodules (`weight_quantizer`, `act_quantizer`). Forward:
// activation fake-quant -> weight fake-quant -> the float op from @qdm/core, so gradients reach
// the weight (STE), the step sizes (LSQ) and the input. `quantWeights` / `quantActivations`
// switch either side off (calibration runs with activations in full precision).
//
// Split quantization (Q-Diffusion 3.3): a conv whose input is concat[h (C1 channels), skip] gets
// two activation quantizers (x[:, :C1] -> act_quantizer, x[:, C1:] -> act_quantizer_0) and two
// per-output-channel weight quantizers (W[:, :C1] -> weight_quantizer, W[:, C1:] ->
// weight_quantizer_0), because the two parts have very different ranges.
import { ArgumentError, Module, Tensor, concat, conv2d, linear, nn, slice } from '@qdm/core';
import { ActivationQuantizer, createWeightQuantizer, type ActivationQuantizerOptions, type AnyWeightQuantizer, type WeightInit } from './quantizer.js';
import type { QuantSpec } from './spec.js';

export interface QuantLayerOptions {
  weights: QuantSpec;
  /** null / undefined: activations stay in full precision. */
  activations?: QuantSpec | null;
  weightInit?: WeightInit;
  activationOptions?: ActivationQuantizerOptions;
  /** QuantConv2d only: C1, the channel count of the first part of a concatenated input (split quantization). */
  split?: number;
}

abstract class QuantLayerBase extends Module {
  weight: Tensor;
  bias: Tensor | null;
  weight_quantizer: AnyWeightQuantizer;
  act_quantizer: ActivationQuantizer | null;
  quantWeights = true;
  quantActivations = true;
  readonly weightBits: number;
  readonly actBits: number | null;
  /**
   * Integer execution (integer.ts sets it via toIntegerExecution): runs the layer on the packed
   * integer GEMM; returns null to fall back to fake quant (e.g. when gradients are needed).
   */
  integerForward: ((x: Tensor) => Tensor | null) | null = null;

  /** `quantizedPart`: the slice of the weight the (first) weight quantizer covers (the whole weight unless split). */
  constructor(weight: Tensor, bias: Tensor | null, opts: QuantLayerOptions, quantizedPart: Tensor = weight) {
    super();
    if (!opts || !opts.weights) throw new ArgumentError(`${new.target.name}: options.weights (a QuantSpec) is required`);
    this.weight = this.registerParameter('weight', weight);
    this.bias = this.registerParameter('bias', bias);
    this.weight_quantizer = this.registerModule('weight_quantizer', createWeightQuantizer(opts.weights, quantizedPart, { init: opts.weightInit }));
    this.act_quantizer = this.registerModule('act_quantizer', opts.activations ? new ActivationQuantizer(opts.activations, opts.activationOptions) : null);
    this.weightBits = opts.weights.bits;
    this.actBits = opts.activations ? opts.activations.bits : null;
  }

  protected quantInput(x: Tensor): Tensor {
    return this.act_quantizer && this.quantActivations ? this.act_quantizer.call(x) : x;
  }
  /** Every activation quantizer of the layer. */
  actQuantizers(): ActivationQuantizer[] { return this.act_quantizer ? [this.act_quantizer] : []; }
  /** Calibration: records the input with the activation quantizer(s) it feeds. */
  observeInput(x: Tensor): void { this.act_quantizer?.observe(x); }
  /** The weight as the forward uses it (fake-quantized unless quantWeights is off). */
  effectiveWeight(): Tensor { return this.quantWeights ? this.weight_quantizer.call(this.weight) : this.weight; }
}

export class QuantLinear extends QuantLayerBase {
  readonly inFeatures: number;
  readonly outFeatures: number;
  constructor(source: nn.Linear, opts: QuantLayerOptions) {
    super(source.weight, source.bias, opts);
    this.inFeatures = source.inFeatures;
    this.outFeatures = source.outFeatures;
    this.training = source.training;
  }
  forward(x: Tensor): Tensor {
    const y = this.integerForward?.(x);
    if (y) return y;
    return linear(this.quantInput(x), this.effectiveWeight(), this.bias);
  }
}

export class QuantConv2d extends QuantLayerBase {
  readonly inChannels: number;
  readonly outChannels: number;
  readonly kernelSize: [number, number];
  readonly stride: [number, number];
  readonly padding: [number, number];
  readonly dilation: [number, number];
  readonly groups: number;
  /** Split point C1 (0: no split). */
  readonly split: number;
  weight_quantizer_0: AnyWeightQuantizer | null = null;
  act_quantizer_0: ActivationQuantizer | null = null;
  constructor(source: nn.Conv2d, opts: QuantLayerOptions) {
    const split = opts?.split ?? 0;
    if (split !== 0 && (!Number.isInteger(split) || split < 1 || split >= source.inChannels || source.groups !== 1)) {
      throw new ArgumentError(`QuantConv2d: split must be an integer in 1..${source.inChannels - 1} on a conv with groups = 1, got ${String(opts.split)} (groups ${source.groups})`);
    }
    const first = split ? slice(source.weight, 1, 0, split) : source.weight;
    super(source.weight, source.bias, opts, first);
    this.split = split;
    if (split) {
      this.weight_quantizer_0 = this.registerModule('weight_quantizer_0', createWeightQuantizer(opts.weights, slice(source.weight, 1, split), { init: opts.weightInit }));
      this.act_quantizer_0 = this.registerModule('act_quantizer_0', opts.activations ? new ActivationQuantizer(opts.activations, opts.activationOptions) : null);
    }
    this.inChannels = source.inChannels;
    this.outChannels = source.outChannels;
    this.kernelSize = source.kernelSize;
    this.stride = source.stride;
    this.padding = source.padding;
    this.dilation = source.dilation;
    this.groups = source.groups;
    this.training = source.training;
  }
  override actQuantizers(): ActivationQuantizer[] { return [...super.actQuantizers(), ...(this.act_quantizer_0 ? [this.act_quantizer_0] : [])]; }
  override observeInput(x: Tensor): void {
    if (!this.split) return super.observeInput(x);
    this.act_quantizer?.observe(slice(x, 1, 0, this.split));
    this.act_quantizer_0?.observe(slice(x, 1, this.split));
  }
  protected override quantInput(x: Tensor): Tensor {
    if (!this.split || !this.act_quantizer || !this.quantActivations) return super.quantInput(x);
    return concat([this.act_quantizer.call(slice(x, 1, 0, this.split)), this.act_quantizer_0!.call(slice(x, 1, this.split))], 1);
  }
  override effectiveWeight(): Tensor {
    if (!this.split || !this.quantWeights) return super.effectiveWeight();
    return concat([this.weight_quantizer.call(slice(this.weight, 1, 0, this.split)), this.weight_quantizer_0!.call(slice(this.weight, 1, this.split))], 1);
  }
  forward(x: Tensor): Tensor {
    const y = this.integerForward?.(x);
    if (y) return y;
    return conv2d(this.quantInput(x), this.effectiveWeight(), this.bias, { stride: this.stride, padding: this.padding, dilation: this.dilation, groups: this.groups });
  }
}

export type QuantLayer = QuantLinear | QuantConv2d;

export function isQuantLayer(m: Module): m is QuantLayer { return m instanceof QuantLinear || m instanceof QuantConv2d; }

/** The fake-quant counterpart of an nn.Linear or nn.Conv2d. */
export function toQuantLayer(m: Module, opts: QuantLayerOptions): QuantLayer {
  if (m instanceof nn.Linear) {
    if (opts.split) throw new ArgumentError('toQuantLayer: split quantization applies to Conv2d layers only');
    return new QuantLinear(m, opts);
  }
  if (m instanceof nn.Conv2d) return new QuantConv2d(m, opts);
  throw new ArgumentError(`toQuantLayer: only nn.Linear and nn.Conv2d are quantized, got ${m.constructor.name}`);
}
