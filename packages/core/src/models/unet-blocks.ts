// The U-Net blocks of diffusers, by their diffusers names and with their parameter names
// (resnets.N, attentions.N, downsamplers.0, upsamplers.0). Each down block returns its output and
// the states it leaves for the skip connections; each up block consumes as many skips as it
// has resnets, from the end. The three flavours differ only in what follows each resnet: nothing,
// spatial self-attention (`Attention` with group norm and residual), or a `Transformer2DModel`
// with cross-attention, so one base class per direction holds the loop.
import { ArgumentError, ShapeError } from '../errors.js';
import { Tensor, shapeStr } from '../tensor.js';
import { concat } from '../ops/indexing.js';
import { Module } from '../nn/module.js';
import { ModuleList } from '../nn/layers.js';
import { ResnetBlock2D, Downsample2D, Upsample2D, type TimeEmbeddingNorm } from './resnet.js';
import { Attention, Transformer2DModel } from './attention.js';
import type { ActivationName } from './config.js';

export const DOWN_BLOCK_TYPES = ['DownBlock2D', 'AttnDownBlock2D', 'CrossAttnDownBlock2D'] as const;
export const UP_BLOCK_TYPES = ['UpBlock2D', 'AttnUpBlock2D', 'CrossAttnUpBlock2D'] as const;
export const MID_BLOCK_TYPES = ['UNetMidBlock2D', 'UNetMidBlock2DCrossAttn'] as const;

/** Everything a block needs from the model config (already resolved per block). */
export interface BlockArgs {
  numLayers: number;
  inChannels: number;
  outChannels: number;
  /** Up blocks: channels of the hidden state coming from the block below. */
  prevOutputChannels?: number;
  tembChannels: number | null;
  /** Down blocks: add a downsampler; up blocks: add an upsampler. */
  addSample: boolean;
  resnetEps: number;
  actFn: ActivationName;
  resnetGroups: number;
  dropout: number;
  timeEmbeddingNorm: TimeEmbeddingNorm;
  outputScaleFactor: number;
  skipTimeAct: boolean;
  downsamplePadding: number;
  /** Spatial attention blocks: channels per head (heads = outChannels / this). */
  attentionHeadDim: number;
  /** Cross-attention blocks: number of heads (head dim = outChannels / this). */
  numAttentionHeads: number;
  crossAttentionDim: number | null;
  /** Transformer layers after each resnet: one count for all, or one per resnet. */
  transformerLayersPerBlock: number | number[];
  useLinearProjection: boolean;
  onlyCrossAttention: boolean;
  upcastAttention: boolean;
}

function resnet(a: BlockArgs, inChannels: number, outChannels: number, outputScaleFactor = a.outputScaleFactor): ResnetBlock2D {
  return new ResnetBlock2D(inChannels, {
    outChannels, tembChannels: a.tembChannels, eps: a.resnetEps, groups: a.resnetGroups, dropout: a.dropout,
    timeEmbeddingNorm: a.timeEmbeddingNorm, nonLinearity: a.actFn, outputScaleFactor, skipTimeAct: a.skipTimeAct,
  });
}

function spatialAttention(a: BlockArgs, channels: number, groups: number | null, rescale = a.outputScaleFactor): Attention {
  const heads = Math.floor(channels / a.attentionHeadDim);
  if (heads < 1) throw new ArgumentError(`attention_head_dim ${a.attentionHeadDim} is larger than the block's ${channels} channels`);
  return new Attention(channels, {
    heads, dimHead: a.attentionHeadDim, rescaleOutputFactor: rescale, eps: a.resnetEps, normNumGroups: groups,
    residualConnection: true, bias: true, upcastSoftmax: true,
  });
}

function layersFor(a: BlockArgs, n: number): number[] {
  const t = a.transformerLayersPerBlock;
  if (typeof t === 'number') return new Array<number>(n).fill(t);
  if (t.length !== n) throw new ArgumentError(`transformer_layers_per_block ${JSON.stringify(t)} must have one entry per layer (${n})`);
  return t;
}

function transformer(a: BlockArgs, channels: number, layers: number): Transformer2DModel {
  if (a.crossAttentionDim === null) throw new ArgumentError('cross-attention blocks need cross_attention_dim');
  if (channels % a.numAttentionHeads !== 0) throw new ArgumentError(`${channels} channels cannot be split into ${a.numAttentionHeads} attention heads`);
  return new Transformer2DModel(a.numAttentionHeads, channels / a.numAttentionHeads, channels, {
    numLayers: layers, crossAttentionDim: a.crossAttentionDim, normNumGroups: a.resnetGroups,
    useLinearProjection: a.useLinearProjection, onlyCrossAttention: a.onlyCrossAttention, upcastAttention: a.upcastAttention, dropout: a.dropout,
  });
}

// ---- down blocks -------------------------------------------------------------------------

export interface DownBlockOutput { hidden: Tensor; states: Tensor[] }

export abstract class UNetDownBlock extends Module {
  abstract readonly hasCrossAttention: boolean;
  resnets: ModuleList<ResnetBlock2D>;
  attentions: ModuleList | null = null;
  downsamplers: ModuleList<Downsample2D> | null;
  constructor(a: BlockArgs) {
    super();
    const rs: ResnetBlock2D[] = [];
    for (let i = 0; i < a.numLayers; ++i) rs.push(resnet(a, i === 0 ? a.inChannels : a.outChannels, a.outChannels));
    this.resnets = this.registerModule('resnets', new ModuleList(rs));
    this.downsamplers = null;
  }
  protected addDownsampler(a: BlockArgs): void {
    if (a.addSample) {
      this.downsamplers = this.registerModule('downsamplers', new ModuleList([new Downsample2D(a.outChannels, { useConv: true, outChannels: a.outChannels, padding: a.downsamplePadding })]));
    }
  }
  forward(hidden: Tensor, temb: Tensor | null, encoderHiddenStates?: Tensor | null): DownBlockOutput {
    const states: Tensor[] = [];
    let h = hidden;
    for (let i = 0; i < this.resnets.length; ++i) {
      h = this.resnets.at(i).call(h, temb);
      if (this.attentions) h = this.attentions.at(i).call(h, encoderHiddenStates) as Tensor;
      states.push(h);
    }
    if (this.downsamplers) for (const d of this.downsamplers) { h = d.call(h); states.push(h); }
    return { hidden: h, states };
  }
}

export class DownBlock2D extends UNetDownBlock {
  readonly hasCrossAttention = false;
  constructor(a: BlockArgs) { super(a); this.addDownsampler(a); }
}

export class AttnDownBlock2D extends UNetDownBlock {
  readonly hasCrossAttention = false;
  constructor(a: BlockArgs) {
    super(a);
    const at: Attention[] = [];
    for (let i = 0; i < a.numLayers; ++i) at.push(spatialAttention(a, a.outChannels, a.resnetGroups));
    this.attentions = this.registerModule('attentions', new ModuleList(at));
    this.addDownsampler(a);
  }
  override forward(hidden: Tensor, temb: Tensor | null): DownBlockOutput { return super.forward(hidden, temb, null); }
}

export class CrossAttnDownBlock2D extends UNetDownBlock {
  readonly hasCrossAttention = true;
  constructor(a: BlockArgs) {
    super(a);
    const layers = layersFor(a, a.numLayers);
    this.attentions = this.registerModule('attentions', new ModuleList(layers.map((n) => transformer(a, a.outChannels, n))));
    this.addDownsampler(a);
  }
}

// ---- up blocks ---------------------------------------------------------------------------

export abstract class UNetUpBlock extends Module {
  abstract readonly hasCrossAttention: boolean;
  resnets: ModuleList<ResnetBlock2D>;
  attentions: ModuleList | null = null;
  upsamplers: ModuleList<Upsample2D> | null = null;
  constructor(a: BlockArgs) {
    super();
    const prev = a.prevOutputChannels ?? a.outChannels;
    const rs: ResnetBlock2D[] = [];
    for (let i = 0; i < a.numLayers; ++i) {
      const skipChannels = i === a.numLayers - 1 ? a.inChannels : a.outChannels;
      const resIn = i === 0 ? prev : a.outChannels;
      rs.push(resnet(a, resIn + skipChannels, a.outChannels));
    }
    this.resnets = this.registerModule('resnets', new ModuleList(rs));
  }
  protected addUpsampler(a: BlockArgs): void {
    if (a.addSample) this.upsamplers = this.registerModule('upsamplers', new ModuleList([new Upsample2D(a.outChannels, { useConv: true, outChannels: a.outChannels })]));
  }
  /**
   * `skips` are this block's skip states in the order the down path produced them (one per
   * resnet); they are consumed from the end. `upsampleSize` is the target of the upsampler.
   */
  forward(hidden: Tensor, skips: Tensor[], temb: Tensor | null, encoderHiddenStates?: Tensor | null, upsampleSize?: [number, number] | null): Tensor {
    if (skips.length !== this.resnets.length) throw new ArgumentError(`${this.constructor.name}: needs ${this.resnets.length} skip states, got ${skips.length}`);
    let h = hidden;
    for (let i = 0; i < this.resnets.length; ++i) {
      const skip = skips[skips.length - 1 - i]!;
      if (skip.ndim !== 4 || skip.shape[0] !== h.shape[0] || skip.shape[2] !== h.shape[2] || skip.shape[3] !== h.shape[3]) {
        throw new ShapeError(`${this.constructor.name}: skip state ${shapeStr(skip.shape)} does not match hidden state ${shapeStr(h.shape)}`);
      }
      h = this.resnets.at(i).call(concat([h, skip], 1), temb);
      if (this.attentions) h = this.attentions.at(i).call(h, encoderHiddenStates) as Tensor;
    }
    if (this.upsamplers) for (const u of this.upsamplers) h = u.call(h, upsampleSize ?? null);
    return h;
  }
}

export class UpBlock2D extends UNetUpBlock {
  readonly hasCrossAttention = false;
  constructor(a: BlockArgs) { super(a); this.addUpsampler(a); }
}

export class AttnUpBlock2D extends UNetUpBlock {
  readonly hasCrossAttention = false;
  constructor(a: BlockArgs) {
    super(a);
    const at: Attention[] = [];
    for (let i = 0; i < a.numLayers; ++i) at.push(spatialAttention(a, a.outChannels, a.resnetGroups));
    this.attentions = this.registerModule('attentions', new ModuleList(at));
    this.addUpsampler(a);
  }
  override forward(hidden: Tensor, skips: Tensor[], temb: Tensor | null, _ehs?: Tensor | null, upsampleSize?: [number, number] | null): Tensor {
    return super.forward(hidden, skips, temb, null, upsampleSize);
  }
}

export class CrossAttnUpBlock2D extends UNetUpBlock {
  readonly hasCrossAttention = true;
  constructor(a: BlockArgs) {
    super(a);
    const layers = layersFor(a, a.numLayers);
    this.attentions = this.registerModule('attentions', new ModuleList(layers.map((n) => transformer(a, a.outChannels, n))));
    this.addUpsampler(a);
  }
}

// ---- mid blocks --------------------------------------------------------------------------

export interface MidBlockArgs extends Omit<BlockArgs, 'outChannels' | 'addSample' | 'prevOutputChannels' | 'downsamplePadding'> {
  /** Group count of the spatial attention's norm (null: no norm). */
  attnGroups?: number | null;
  addAttention?: boolean;
}

/** resnet, then (attention, resnet) per layer; spatial attention (UNet2DModel) or none. */
export class UNetMidBlock2D extends Module {
  readonly hasCrossAttention = false;
  resnets: ModuleList<ResnetBlock2D>;
  attentions: ModuleList<Attention> | null;
  constructor(a: MidBlockArgs) {
    super();
    const c = a.inChannels;
    const blockArgs = { ...a, outChannels: c, addSample: false, downsamplePadding: 1 } as BlockArgs;
    const rs = [resnet(blockArgs, c, c)];
    const at: Attention[] = [];
    const addAttention = a.addAttention ?? true;
    const attnGroups = a.attnGroups === undefined ? (a.timeEmbeddingNorm === 'default' ? a.resnetGroups : null) : a.attnGroups;
    for (let i = 0; i < a.numLayers; ++i) {
      if (addAttention) at.push(spatialAttention(blockArgs, c, attnGroups));
      rs.push(resnet(blockArgs, c, c));
    }
    this.resnets = this.registerModule('resnets', new ModuleList(rs));
    // Without attention diffusers' list holds Nones, which own no parameters: register nothing.
    this.attentions = addAttention && at.length ? this.registerModule('attentions', new ModuleList(at)) : null;
  }
  forward(hidden: Tensor, temb: Tensor | null): Tensor {
    let h = this.resnets.at(0).call(hidden, temb);
    for (let i = 1; i < this.resnets.length; ++i) {
      if (this.attentions) h = this.attentions.at(i - 1).call(h);
      h = this.resnets.at(i).call(h, temb);
    }
    return h;
  }
}

/** resnet, then (transformer, resnet) per layer (UNet2DConditionModel's default mid block). */
export class UNetMidBlock2DCrossAttn extends Module {
  readonly hasCrossAttention = true;
  resnets: ModuleList<ResnetBlock2D>;
  attentions: ModuleList<Transformer2DModel>;
  constructor(a: MidBlockArgs) {
    super();
    const c = a.inChannels;
    const blockArgs = { ...a, outChannels: c, addSample: false, downsamplePadding: 1, onlyCrossAttention: false } as BlockArgs;
    const layers = layersFor(blockArgs, a.numLayers);
    const rs = [resnet(blockArgs, c, c)];
    const at: Transformer2DModel[] = [];
    for (let i = 0; i < a.numLayers; ++i) {
      at.push(transformer(blockArgs, c, layers[i]!));
      rs.push(resnet(blockArgs, c, c));
    }
    this.resnets = this.registerModule('resnets', new ModuleList(rs));
    this.attentions = this.registerModule('attentions', new ModuleList(at));
  }
  forward(hidden: Tensor, temb: Tensor | null, encoderHiddenStates?: Tensor | null): Tensor {
    let h = this.resnets.at(0).call(hidden, temb);
    for (let i = 1; i < this.resnets.length; ++i) {
      h = this.attentions.at(i - 1).call(h, encoderHiddenStates);
      h = this.resnets.at(i).call(h, temb);
    }
    return h;
  }
}

export type MidBlock = UNetMidBlock2D | UNetMidBlock2DCrossAttn;

export function makeDownBlock(type: string, a: BlockArgs): UNetDownBlock {
  switch (type) {
    case 'DownBlock2D': return new DownBlock2D(a);
    case 'AttnDownBlock2D': return new AttnDownBlock2D(a);
    case 'CrossAttnDownBlock2D': return new CrossAttnDownBlock2D(a);
    default: throw new ArgumentError(`unsupported down block type '${type}' (supported: ${DOWN_BLOCK_TYPES.join(', ')})`);
  }
}

export function makeUpBlock(type: string, a: BlockArgs): UNetUpBlock {
  switch (type) {
    case 'UpBlock2D': return new UpBlock2D(a);
    case 'AttnUpBlock2D': return new AttnUpBlock2D(a);
    case 'CrossAttnUpBlock2D': return new CrossAttnUpBlock2D(a);
    default: throw new ArgumentError(`unsupported up block type '${type}' (supported: ${UP_BLOCK_TYPES.join(', ')})`);
  }
}
