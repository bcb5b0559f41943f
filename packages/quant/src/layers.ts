// Fake-quant layers. QuantLinear / QuantConv2d adopt the original layer's weight and bias
// tensors under the same names, so `<layer>.weight` / `<layer>.bias` keys stay diffusers
// compatible; the quantizers are submodules (`weight_quantizer`, `act_quantizer`). Forward:
// activation fake-quant -> weight fake-quant -> the float op from @qdm/core, so gradients reach
// the weight (STE), the step sizes (LSQ) and the input. `quantWeights` / `quantActivations`
// switch either side off (calibration runs with activations in full precision).
import { ArgumentError, Module, Tensor, conv2d, linear, nn } from '@qdm/core';
import { ActivationQuantizer, createWeightQuantizer, type ActivationQuantizerOptions, type AnyWeightQuantizer, type WeightInit } from './quantizer.js';
import type { QuantSpec } from './spec.js';

export interface QuantLayerOptions {
  weights: QuantSpec;
  /** null / undefined: activations stay in full precision. */
  activations?: QuantSpec | null;
  weightInit?: WeightInit;
  activationOptions?: ActivationQuantizerOptions;
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

  constructor(weight: Tensor, bias: Tensor | null, opts: QuantLayerOptions) {
    super();
    if (!opts || !opts.weights) throw new ArgumentError(`${new.target.name}: options.weights (a QuantSpec) is required`);
    this.weight = this.registerParameter('weight', weight);
    this.bias = this.registerParameter('bias', bias);
    this.weight_quantizer = this.registerModule('weight_quantizer', createWeightQuantizer(opts.weights, weight, { init: opts.weightInit }));
    this.act_quantizer = this.registerModule('act_quantizer', opts.activations ? new ActivationQuantizer(opts.activations, opts.activationOptions) : null);
    this.weightBits = opts.weights.bits;
    this.actBits = opts.activations ? opts.activations.bits : null;
  }

  protected quantInput(x: Tensor): Tensor {
    return this.act_quantizer && this.quantActivations ? this.act_quantizer.call(x) : x;
  }
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
  forward(x: Tensor): Tensor { return linear(this.quantInput(x), this.effectiveWeight(), this.bias); }
}

export class QuantConv2d extends QuantLayerBase {
  readonly inChannels: number;
  readonly outChannels: number;
  readonly kernelSize: [number, number];
  readonly stride: [number, number];
  readonly padding: [number, number];
  readonly dilation: [number, number];
  readonly groups: number;
  constructor(source: nn.Conv2d, opts: QuantLayerOptions) {
    super(source.weight, source.bias, opts);
    this.inChannels = source.inChannels;
    this.outChannels = source.outChannels;
    this.kernelSize = source.kernelSize;
    this.stride = source.stride;
    this.padding = source.padding;
    this.dilation = source.dilation;
    this.groups = source.groups;
    this.training = source.training;
  }
  forward(x: Tensor): Tensor {
    return conv2d(this.quantInput(x), this.effectiveWeight(), this.bias, { stride: this.stride, padding: this.padding, dilation: this.dilation, groups: this.groups });
  }
}

export type QuantLayer = QuantLinear | QuantConv2d;

export function isQuantLayer(m: Module): m is QuantLayer { return m instanceof QuantLinear || m instanceof QuantConv2d; }

/** The fake-quant counterpart of an nn.Linear or nn.Conv2d. */
export function toQuantLayer(m: Module, opts: QuantLayerOptions): QuantLayer {
  if (m instanceof nn.Linear) return new QuantLinear(m, opts);
  if (m instanceof nn.Conv2d) return new QuantConv2d(m, opts);
  throw new ArgumentError(`toQuantLayer: only nn.Linear and nn.Conv2d are quantized, got ${m.constructor.name}`);
}
