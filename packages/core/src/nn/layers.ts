// The standard layers. Parameter names and shapes follow PyTorch, so diffusers checkpoints
// load unchanged; initialisation follows PyTorch's defaults (Kaiming-uniform with a = sqrt(5)).
import { ArgumentError } from '../errors.js';
import type { Tensor } from '../tensor.js';
import { rand, randn, ones, zeros } from '../ops/creation.js';
import { linear } from '../ops/matmul.js';
import * as E from '../ops/elementwise.js';
import { conv2d, groupNorm, layerNorm, dropout, type Pair } from '../ops/nn.js';
import { embedding } from '../ops/indexing.js';
import type { Generator } from '../random.js';
import { Module } from './module.js';

export interface InitOptions { generator?: Generator; bias?: boolean }

function uniform(shape: number[], bound: number, gen?: Generator): Tensor {
  return rand(shape, { low: -bound, high: bound, generator: gen });
}

export class Linear extends Module {
  readonly inFeatures: number;
  readonly outFeatures: number;
  weight: Tensor;
  bias: Tensor | null;
  constructor(inFeatures: number, outFeatures: number, opts: InitOptions = {}) {
    super();
    this.inFeatures = inFeatures;
    this.outFeatures = outFeatures;
    const bound = 1 / Math.sqrt(inFeatures);
    this.weight = this.registerParameter('weight', uniform([outFeatures, inFeatures], bound, opts.generator));
    this.bias = opts.bias === false ? null : this.registerParameter('bias', uniform([outFeatures], bound, opts.generator));
  }
  forward(x: Tensor): Tensor { return linear(x, this.weight, this.bias); }
}

const pair = (p: Pair): [number, number] => (Array.isArray(p) ? p : [p, p]);

export interface Conv2dInit extends InitOptions { stride?: Pair; padding?: Pair; dilation?: Pair; groups?: number }

export class Conv2d extends Module {
  readonly inChannels: number;
  readonly outChannels: number;
  readonly kernelSize: [number, number];
  readonly stride: [number, number];
  readonly padding: [number, number];
  readonly dilation: [number, number];
  readonly groups: number;
  weight: Tensor;
  bias: Tensor | null;
  constructor(inChannels: number, outChannels: number, kernelSize: Pair, opts: Conv2dInit = {}) {
    super();
    this.groups = opts.groups ?? 1;
    if (inChannels % this.groups || outChannels % this.groups) throw new ArgumentError(`Conv2d: channels ${inChannels}->${outChannels} not divisible by groups ${this.groups}`);
    this.inChannels = inChannels;
    this.outChannels = outChannels;
    this.kernelSize = pair(kernelSize);
    this.stride = pair(opts.stride ?? 1);
    this.padding = pair(opts.padding ?? 0);
    this.dilation = pair(opts.dilation ?? 1);
    const fanIn = (inChannels / this.groups) * this.kernelSize[0] * this.kernelSize[1];
    const bound = 1 / Math.sqrt(fanIn);
    this.weight = this.registerParameter('weight', uniform([outChannels, inChannels / this.groups, ...this.kernelSize], bound, opts.generator));
    this.bias = opts.bias === false ? null : this.registerParameter('bias', uniform([outChannels], bound, opts.generator));
  }
  forward(x: Tensor): Tensor {
    return conv2d(x, this.weight, this.bias, { stride: this.stride, padding: this.padding, dilation: this.dilation, groups: this.groups });
  }
}

export class GroupNorm extends Module {
  readonly numGroups: number;
  readonly numChannels: number;
  readonly eps: number;
  weight: Tensor | null;
  bias: Tensor | null;
  constructor(numGroups: number, numChannels: number, opts: { eps?: number; affine?: boolean } = {}) {
    super();
    if (numChannels % numGroups) throw new ArgumentError(`GroupNorm: ${numChannels} channels not divisible by ${numGroups} groups`);
    this.numGroups = numGroups;
    this.numChannels = numChannels;
    this.eps = opts.eps ?? 1e-5;
    const affine = opts.affine ?? true;
    this.weight = affine ? this.registerParameter('weight', ones([numChannels])) : null;
    this.bias = affine ? this.registerParameter('bias', zeros([numChannels])) : null;
  }
  forward(x: Tensor): Tensor { return groupNorm(x, this.numGroups, this.weight, this.bias, this.eps); }
}

export class LayerNorm extends Module {
  readonly normalizedShape: number[];
  readonly eps: number;
  weight: Tensor | null;
  bias: Tensor | null;
  constructor(normalizedShape: number | number[], opts: { eps?: number; elementwiseAffine?: boolean; bias?: boolean } = {}) {
    super();
    this.normalizedShape = Array.isArray(normalizedShape) ? normalizedShape : [normalizedShape];
    this.eps = opts.eps ?? 1e-5;
    const affine = opts.elementwiseAffine ?? true;
    this.weight = affine ? this.registerParameter('weight', ones(this.normalizedShape)) : null;
    this.bias = affine && opts.bias !== false ? this.registerParameter('bias', zeros(this.normalizedShape)) : null;
  }
  forward(x: Tensor): Tensor { return layerNorm(x, this.normalizedShape, this.weight, this.bias, this.eps); }
}

export class Embedding extends Module {
  weight: Tensor;
  constructor(numEmbeddings: number, dim: number, opts: InitOptions = {}) {
    super();
    this.weight = this.registerParameter('weight', randn([numEmbeddings, dim], { generator: opts.generator }));  // N(0, 1) as torch
  }
  forward(ids: Tensor): Tensor { return embedding(ids, this.weight); }
}

export class Dropout extends Module {
  readonly p: number;
  constructor(p = 0.5) { super(); if (p < 0 || p >= 1) throw new ArgumentError(`Dropout: p must be in [0, 1), got ${p}`); this.p = p; }
  forward(x: Tensor): Tensor { return this.p === 0 ? x : dropout(x, this.p, this.training); }
}

export class SiLU extends Module { forward(x: Tensor): Tensor { return E.silu(x); } }
export class GELU extends Module {
  constructor(readonly approximate: 'none' | 'tanh' = 'none') { super(); }
  forward(x: Tensor): Tensor { return E.gelu(x, this.approximate); }
}
export class ReLU extends Module { forward(x: Tensor): Tensor { return E.relu(x); } }
export class Tanh extends Module { forward(x: Tensor): Tensor { return E.tanh(x); } }
export class Identity extends Module { forward(x: Tensor): Tensor { return x; } }

/** Children named "0", "1", ...; items are read through the registry so replacement works. */
export class ModuleList<M extends Module = Module> extends Module {
  private count = 0;
  constructor(items: M[] = []) { super(); for (const m of items) this.push(m); }
  push(m: M): this { this.registerModule(String(this.count++), m); return this; }
  get length(): number { return this.count; }
  at(i: number): M { return this.child(String(i < 0 ? i + this.count : i)) as M; }
  *[Symbol.iterator](): Iterator<M> { for (let i = 0; i < this.count; ++i) yield this.at(i); }
  forward(..._args: unknown[]): unknown { throw new ArgumentError('ModuleList has no forward; iterate over it'); }
}

export class Sequential extends ModuleList {
  override forward(x: unknown): unknown { let h = x; for (const m of this) h = m.call(h); return h; }
}
