// diffusers' UNet2DModel (unconditional / class-conditional DDPM-style U-Net) and the base class
// both U-Nets share. The forward is a composition of public steps (prepare, runDownBlock, runMid,
// runUpBlock, finish) over a UNetState, so caching policies (DeepCache) can run, skip or replay
// single blocks, and timestep-aware layers see a fixed order of calls. Module field names are
// diffusers' attribute names, so state dict keys are diffusers' keys.
import { ArgumentError, ShapeError } from '../errors.js';
import { Tensor, shapeStr } from '../tensor.js';
import { add, affine } from '../ops/elementwise.js';
import { cast } from '../ops/shape.js';
import { Module } from '../nn/module.js';
import { Conv2d, Embedding, GroupNorm, Identity, ModuleList } from '../nn/layers.js';
import { ACTIVATIONS, ConfigReader, resolveConfig, UNET_2D_DEFAULTS, type ActivationName, type RawConfig } from './config.js';
import { Activation, TimestepEmbedding, Timesteps, deviceSinusoidalEmbedding, timestepValues, type TimestepInput } from './embeddings.js';
import {
  DOWN_BLOCK_TYPES, UP_BLOCK_TYPES, makeDownBlock, makeUpBlock, UNetMidBlock2D,
  type BlockArgs, type MidBlock, type UNetDownBlock, type UNetUpBlock,
} from './unet-blocks.js';
import type { TimeEmbeddingNorm } from './resnet.js';

/** Conditioning inputs (diffusers' keyword arguments, camelCased). */
export interface UNetConditioning {
  classLabels?: Tensor;
  encoderHiddenStates?: Tensor;
  /** LCM guidance-scale embedding input ([B, time_cond_proj_dim]). */
  timestepCond?: Tensor;
  /** SDXL micro-conditioning: pooled text embeddings [B, D] and time ids [B, n]. */
  addedCondKwargs?: { textEmbeds: Tensor; timeIds: Tensor };
}

/** The state carried between the pieces of a structured forward. */
export interface UNetState {
  /** The time (+ class / added) embedding every resnet receives. */
  emb: Tensor;
  /** The current feature map. */
  hidden: Tensor;
  /** Skip states in production order: conv_in's output, then each down block's states. */
  skips: Tensor[];
  encoderHiddenStates?: Tensor;
  /**
   * Optional override of the output size of up block i's upsampler. When absent it is the size of
   * the last skip state left after the block took its own (diffusers' `upsample_size`), so odd
   * input sizes round-trip.
   */
  upsampleSizes?: ([number, number] | undefined)[];
}

/** What both U-Nets have in common: blocks, the structured forward, conv_in/out. */
export abstract class UNetBase extends Module {
  readonly config: RawConfig;
  conv_in!: Conv2d;
  down_blocks!: ModuleList<UNetDownBlock>;
  mid_block!: MidBlock | null;
  up_blocks!: ModuleList<UNetUpBlock>;
  conv_norm_out!: GroupNorm | null;
  conv_act!: Activation | null;
  conv_out!: Conv2d;
  protected readonly inChannels: number;
  protected readonly centerInputSample: boolean;

  protected constructor(config: RawConfig) {
    super();
    this.config = config;
    this.inChannels = config.in_channels as number;
    this.centerInputSample = config.center_input_sample as boolean;
  }

  /** Whether the model needs encoder hidden states (any cross-attention block). */
  get hasCrossAttention(): boolean {
    return [...this.down_blocks, ...this.up_blocks].some((b) => b.hasCrossAttention) || !!this.mid_block?.hasCrossAttention;
  }

  /** Time, class and added-condition embeddings for a batch of `batch` samples like `sample`. */
  protected abstract embed(sample: Tensor, timestep: TimestepInput, cond: UNetConditioning): Tensor;

  forward(sample: Tensor, timestep: TimestepInput, cond: UNetConditioning = {}): Tensor {
    const state = this.prepare(sample, timestep, cond);
    for (let i = 0; i < this.down_blocks.length; ++i) this.runDownBlock(state, i);
    this.runMid(state);
    for (let i = 0; i < this.up_blocks.length; ++i) this.runUpBlock(state, i);
    return this.finish(state);
  }

  /** Embeddings and conv_in; the state's skips start with conv_in's output. */
  prepare(sample: Tensor, timestep: TimestepInput, cond: UNetConditioning = {}): UNetState {
    const name = this.constructor.name;
    if (!(sample instanceof Tensor) || sample.ndim !== 4 || sample.shape[1] !== this.inChannels) {
      throw new ShapeError(`${name}: sample must be [B, ${this.inChannels}, H, W], got ${sample instanceof Tensor ? shapeStr(sample.shape) : typeof sample}`);
    }
    const ehs = cond.encoderHiddenStates;
    if (this.hasCrossAttention) {
      if (!ehs) throw new ArgumentError(`${name}: encoderHiddenStates is required (the model has cross-attention blocks)`);
      if (ehs.ndim !== 3 || ehs.shape[0] !== sample.shape[0]) throw new ShapeError(`${name}: encoderHiddenStates ${shapeStr(ehs.shape)} must be [${sample.shape[0]}, L, D]`);
    } else if (ehs) throw new ArgumentError(`${name}: encoderHiddenStates was given but the model has no cross-attention`);
    const x = this.centerInputSample ? affine(sample, 2, -1) : sample;
    const emb = this.embed(x, timestep, cond);
    const hidden = this.conv_in.call(x);
    return { emb, hidden, skips: [hidden], ...(ehs ? { encoderHiddenStates: ehs } : {}) };
  }

  /** Runs down_blocks[i] on state.hidden and pushes its output states onto state.skips. */
  runDownBlock(state: UNetState, i: number): void {
    const block = this.blockAt(this.down_blocks, i, 'down');
    const out = block.call(state.hidden, state.emb, state.encoderHiddenStates ?? null) as { hidden: Tensor; states: Tensor[] };
    state.hidden = out.hidden;
    state.skips.push(...out.states);
  }

  runMid(state: UNetState): void {
    if (!this.mid_block) return;
    state.hidden = this.mid_block.call(state.hidden, state.emb, state.encoderHiddenStates ?? null);
  }

  /** Runs up_blocks[i], taking as many skip states from the end as it has resnets. */
  runUpBlock(state: UNetState, i: number): void {
    const block = this.blockAt(this.up_blocks, i, 'up');
    const n = block.resnets.length;
    if (state.skips.length < n) throw new ArgumentError(`${this.constructor.name}: up block ${i} needs ${n} skip states, only ${state.skips.length} left`);
    const mine = state.skips.splice(state.skips.length - n, n);
    let size: [number, number] | null = state.upsampleSizes?.[i] ?? null;
    if (!size && block.upsamplers && state.skips.length) {
      const last = state.skips[state.skips.length - 1]!;
      size = [last.shape[2]!, last.shape[3]!];
    }
    state.hidden = block.call(state.hidden, mine, state.emb, state.encoderHiddenStates ?? null, size);
  }

  /** conv_norm_out, activation, conv_out. */
  finish(state: UNetState): Tensor {
    let h = state.hidden;
    if (this.conv_norm_out) h = this.conv_norm_out.call(h);
    if (this.conv_act) h = this.conv_act.call(h);
    return this.conv_out.call(h);
  }

  private blockAt<M extends Module>(list: ModuleList<M>, i: number, what: string): M {
    if (!Number.isInteger(i) || i < 0 || i >= list.length) throw new ArgumentError(`${this.constructor.name}: no ${what} block ${i} (it has ${list.length})`);
    return list.at(i);
  }

  /** The timestep values broadcast to the batch, as an embedding in the sample's dtype/device. */
  protected timeEmbedding(proj: Timesteps, sample: Tensor, timestep: TimestepInput): Tensor {
    if (timestep instanceof Tensor && timestep.device !== 'cpu' && timestep.device === sample.device) {
      return deviceSinusoidalEmbedding(timestep, sample.shape[0]!, proj.numChannels, {
        flipSinToCos: proj.flipSinToCos, downscaleFreqShift: proj.downscaleFreqShift, scale: proj.scale, dtype: sample.dtype,
      });
    }
    const values = timestepValues(timestep, sample.shape[0]!, this.constructor.name);
    return proj.call(values, { device: sample.device, dtype: sample.dtype });
  }
}

/** Reads the options shared by both U-Nets' block construction. */
export function commonOptions(r: ConfigReader) {
  const actFn = r.oneOf('act_fn', ACTIVATIONS) as ActivationName;
  r.oneOf('time_embedding_type', ['positional']);
  const dropout = r.num('dropout');
  if (dropout < 0 || dropout >= 1) throw r.fail('dropout', 'expected a number in [0, 1)');
  return {
    actFn,
    dropout,
    timeEmbeddingNorm: r.oneOf('resnet_time_scale_shift', ['default', 'scale_shift']) as TimeEmbeddingNorm,
    normEps: r.num('norm_eps', { positive: true }),
    normNumGroups: r.int('norm_num_groups'),
    flipSinToCos: r.bool('flip_sin_to_cos'),
    freqShift: r.num('freq_shift'),
    downsamplePadding: r.int('downsample_padding', { min: 0 }),
    midBlockScaleFactor: r.num('mid_block_scale_factor', { positive: true }),
  };
}

export function checkLengths(r: ConfigReader, down: string[], up: string[], boc: number[]): void {
  if (down.length !== up.length) throw r.fail('up_block_types', `must have as many entries as down_block_types (${down.length})`);
  if (boc.length !== down.length) throw r.fail('block_out_channels', `must have one entry per down block (${down.length})`);
}

/** diffusers' UNet2DModel. */
export class UNet2DModel extends UNetBase {
  time_proj: Timesteps;
  time_embedding: TimestepEmbedding;
  class_embedding: Embedding | TimestepEmbedding | Identity | null;
  readonly classEmbedType: 'timestep' | 'identity' | 'embedding' | null;

  static fromConfig(json: RawConfig | string): UNet2DModel {
    return new UNet2DModel(typeof json === 'string' ? (JSON.parse(json) as RawConfig) : json);
  }

  constructor(rawConfig: RawConfig) {
    const config = resolveConfig(rawConfig, UNET_2D_DEFAULTS, 'UNet2DModel');
    super(config);
    const r = new ConfigReader(config, 'UNet2DModel');
    const o = commonOptions(r);
    const down = r.strings('down_block_types', DOWN_BLOCK_TYPES.filter((t) => t !== 'CrossAttnDownBlock2D'));
    const up = r.strings('up_block_types', UP_BLOCK_TYPES.filter((t) => t !== 'CrossAttnUpBlock2D'));
    const boc = r.ints('block_out_channels');
    checkLengths(r, down, up, boc);
    const inCh = r.int('in_channels'), outCh = r.int('out_channels');
    r.bool('center_input_sample');
    const layers = r.int('layers_per_block');
    const headDim = r.intOrNull('attention_head_dim');
    const attnGroups = r.intOrNull('attn_norm_num_groups');
    const addAttention = r.bool('add_attention');
    r.oneOf('downsample_type', ['conv']);
    r.oneOf('upsample_type', ['conv']);
    const midType = r.oneOf('mid_block_type', ['UNetMidBlock2D', null]);
    const classType = r.oneOf('class_embed_type', [null, 'timestep', 'identity']);
    const numClassEmbeds = r.intOrNull('num_class_embeds');
    r.intOrNull('num_train_timesteps');
    r.intOrNull('sample_size');

    const timeEmbedDim = r.intOrNull('time_embedding_dim') ?? boc[0]! * 4;
    this.conv_in = this.registerModule('conv_in', new Conv2d(inCh, boc[0]!, 3, { padding: 1 }));
    this.time_proj = this.registerModule('time_proj', new Timesteps(boc[0]!, o.flipSinToCos, o.freqShift));
    this.time_embedding = this.registerModule('time_embedding', new TimestepEmbedding(boc[0]!, timeEmbedDim));
    if (classType === null && numClassEmbeds !== null) {
      this.class_embedding = this.registerModule('class_embedding', new Embedding(numClassEmbeds, timeEmbedDim));
      this.classEmbedType = 'embedding';
    } else if (classType === 'timestep') {
      this.class_embedding = this.registerModule('class_embedding', new TimestepEmbedding(boc[0]!, timeEmbedDim));
      this.classEmbedType = 'timestep';
    } else if (classType === 'identity') {
      this.class_embedding = this.registerModule('class_embedding', new Identity());
      this.classEmbedType = 'identity';
    } else { this.class_embedding = null; this.classEmbedType = null; }

    const base = (): Omit<BlockArgs, 'numLayers' | 'inChannels' | 'outChannels' | 'addSample' | 'attentionHeadDim'> => ({
      tembChannels: timeEmbedDim, resnetEps: o.normEps, actFn: o.actFn, resnetGroups: o.normNumGroups, dropout: o.dropout,
      timeEmbeddingNorm: o.timeEmbeddingNorm, outputScaleFactor: 1, skipTimeAct: false, downsamplePadding: o.downsamplePadding,
      numAttentionHeads: 1, crossAttentionDim: null, transformerLayersPerBlock: 1, useLinearProjection: false, onlyCrossAttention: false, upcastAttention: false,
    });
    const downs: UNetDownBlock[] = [];
    let outC = boc[0]!;
    for (let i = 0; i < down.length; ++i) {
      const inC = outC; outC = boc[i]!;
      downs.push(makeDownBlock(down[i]!, { ...base(), numLayers: layers, inChannels: inC, outChannels: outC, addSample: i < down.length - 1, attentionHeadDim: headDim ?? outC }));
    }
    this.down_blocks = this.registerModule('down_blocks', new ModuleList(downs));
    const last = boc[boc.length - 1]!;
    this.mid_block = midType === null ? null : this.registerModule('mid_block', new UNetMidBlock2D({
      ...base(), numLayers: 1, inChannels: last, outputScaleFactor: o.midBlockScaleFactor, attentionHeadDim: headDim ?? last,
      attnGroups: attnGroups ?? (o.timeEmbeddingNorm === 'default' ? o.normNumGroups : null), addAttention,
    }));
    const rev = [...boc].reverse();
    const ups: UNetUpBlock[] = [];
    outC = rev[0]!;
    for (let i = 0; i < up.length; ++i) {
      const prev = outC; outC = rev[i]!;
      const inC = rev[Math.min(i + 1, rev.length - 1)]!;
      ups.push(makeUpBlock(up[i]!, { ...base(), numLayers: layers + 1, inChannels: inC, outChannels: outC, prevOutputChannels: prev, addSample: i < up.length - 1, attentionHeadDim: headDim ?? outC }));
    }
    this.up_blocks = this.registerModule('up_blocks', new ModuleList(ups));
    this.conv_norm_out = this.registerModule('conv_norm_out', new GroupNorm(o.normNumGroups, boc[0]!, { eps: o.normEps }));
    this.conv_act = this.registerModule('conv_act', new Activation('silu'));
    this.conv_out = this.registerModule('conv_out', new Conv2d(boc[0]!, outCh, 3, { padding: 1 }));
  }

  protected embed(sample: Tensor, timestep: TimestepInput, cond: UNetConditioning): Tensor {
    if (cond.timestepCond) throw new ArgumentError('UNet2DModel: timestepCond is not supported by this model');
    if (cond.addedCondKwargs) throw new ArgumentError('UNet2DModel: addedCondKwargs is not supported by this model');
    const tEmb = this.timeEmbedding(this.time_proj, sample, timestep);
    let emb = this.time_embedding.call(tEmb);
    if (this.class_embedding) {
      emb = add(emb, classEmbedding(this, this.classEmbedType!, this.class_embedding, this.time_proj, sample, cond.classLabels));
    } else if (cond.classLabels) throw new ArgumentError('UNet2DModel: classLabels were given but the model has no class embedding');
    return emb;
  }
}

/** The class embedding (added to the time embedding) for the three class_embed kinds. */
export function classEmbedding(
  model: Module, kind: 'timestep' | 'identity' | 'embedding', module: Module, proj: Timesteps, sample: Tensor, labels: Tensor | undefined,
): Tensor {
  const name = model.constructor.name;
  if (!labels) throw new ArgumentError(`${name}: classLabels are required (the model has a class embedding)`);
  if (kind === 'embedding') {
    if (labels.dtype !== 'i64' && labels.dtype !== 'i32') throw new ArgumentError(`${name}: classLabels must be an integer tensor, got ${labels.dtype}`);
    if (labels.ndim !== 1 || labels.shape[0] !== sample.shape[0]) throw new ShapeError(`${name}: classLabels ${shapeStr(labels.shape)} must be [${sample.shape[0]}]`);
    const e = module.call(labels) as Tensor;
    return e.dtype === sample.dtype ? e : cast(e, sample.dtype);
  }
  if (kind === 'timestep') {
    const t = proj.call(timestepValues(labels, sample.shape[0]!, name), { device: sample.device, dtype: sample.dtype });
    return module.call(t) as Tensor;
  }
  return labels.dtype === sample.dtype ? labels : cast(labels, sample.dtype);
}
