// diffusers' ResnetBlock2D, Downsample2D and Upsample2D, with its parameter names (norm1, conv1,
// time_emb_proj, norm2, conv2, conv_shortcut; downsamplers' / upsamplers' `conv`). They are kept
// general because the VAE reuses them: the time embedding is optional (temb_channels null),
// the output can be rescaled, and a padding-0 downsampler pads asymmetrically like diffusers.
import { ArgumentError, ShapeError } from '../errors.js';
import type { Tensor } from '../tensor.js';
import { shapeStr } from '../tensor.js';
import { add, affine, mul } from '../ops/elementwise.js';
import { reshape } from '../ops/shape.js';
import { chunk, pad } from '../ops/indexing.js';
import { avgPool2d, interpolate } from '../ops/nn.js';
import { Module } from '../nn/module.js';
import { Conv2d, Dropout, GroupNorm, Linear } from '../nn/layers.js';
import { applyActivation } from './embeddings.js';
import type { ActivationName } from './config.js';

export type TimeEmbeddingNorm = 'default' | 'scale_shift';

export interface ResnetBlock2DOptions {
  outChannels?: number | null;
  /** Channels of the time embedding; null builds a block without time_emb_proj (the VAE's). */
  tembChannels?: number | null;
  groups?: number;
  groupsOut?: number | null;
  eps?: number;
  dropout?: number;
  nonLinearity?: ActivationName;
  timeEmbeddingNorm?: TimeEmbeddingNorm;
  /** The result is divided by this (diffusers' output_scale_factor). */
  outputScaleFactor?: number;
  skipTimeAct?: boolean;
  /** 3x3 shortcut conv instead of 1x1 (diffusers' conv_shortcut=True). */
  convShortcut?: boolean;
  useInShortcut?: boolean | null;
  convShortcutBias?: boolean;
}

export class ResnetBlock2D extends Module {
  readonly inChannels: number;
  readonly outChannels: number;
  readonly timeEmbeddingNorm: TimeEmbeddingNorm;
  readonly outputScaleFactor: number;
  readonly nonLinearity: ActivationName;
  readonly skipTimeAct: boolean;
  norm1: GroupNorm;
  conv1: Conv2d;
  time_emb_proj: Linear | null;
  norm2: GroupNorm;
  dropout: Dropout;
  conv2: Conv2d;
  conv_shortcut: Conv2d | null;

  constructor(inChannels: number, opts: ResnetBlock2DOptions = {}) {
    super();
    const out = opts.outChannels ?? inChannels;
    const groups = opts.groups ?? 32, groupsOut = opts.groupsOut ?? groups;
    const eps = opts.eps ?? 1e-6;
    this.inChannels = inChannels;
    this.outChannels = out;
    this.timeEmbeddingNorm = opts.timeEmbeddingNorm ?? 'default';
    if (this.timeEmbeddingNorm !== 'default' && this.timeEmbeddingNorm !== 'scale_shift') {
      throw new ArgumentError(`ResnetBlock2D: unsupported time_embedding_norm '${String(this.timeEmbeddingNorm)}'`);
    }
    this.outputScaleFactor = opts.outputScaleFactor ?? 1;
    this.nonLinearity = opts.nonLinearity ?? 'silu';
    this.skipTimeAct = opts.skipTimeAct ?? false;
    this.norm1 = this.registerModule('norm1', new GroupNorm(groups, inChannels, { eps }));
    this.conv1 = this.registerModule('conv1', new Conv2d(inChannels, out, 3, { padding: 1 }));
    const temb = opts.tembChannels ?? null;
    this.time_emb_proj = temb === null ? null
      : this.registerModule('time_emb_proj', new Linear(temb, this.timeEmbeddingNorm === 'scale_shift' ? 2 * out : out));
    this.norm2 = this.registerModule('norm2', new GroupNorm(groupsOut, out, { eps }));
    this.dropout = this.registerModule('dropout', new Dropout(opts.dropout ?? 0));
    this.conv2 = this.registerModule('conv2', new Conv2d(out, out, 3, { padding: 1 }));
    const useShortcut = opts.useInShortcut ?? inChannels !== out;
    const k = opts.convShortcut ? 3 : 1;
    this.conv_shortcut = useShortcut
      ? this.registerModule('conv_shortcut', new Conv2d(inChannels, out, k, { padding: opts.convShortcut ? 1 : 0, bias: opts.convShortcutBias ?? true }))
      : null;
  }

  forward(input: Tensor, temb?: Tensor | null): Tensor {
    if (input.ndim !== 4 || input.shape[1] !== this.inChannels) {
      throw new ShapeError(`ResnetBlock2D: expected [B, ${this.inChannels}, H, W], got ${shapeStr(input.shape)}`);
    }
    const act = (x: Tensor) => applyActivation(this.nonLinearity, x);
    let h = act(this.norm1.call(input));
    h = this.conv1.call(h);
    let t: Tensor | null = null;
    if (this.time_emb_proj && temb) {
      const proj: Tensor = this.time_emb_proj.call(this.skipTimeAct ? temb : act(temb));
      t = reshape(proj, [proj.shape[0]!, proj.shape[1]!, 1, 1]);
    }
    if (this.timeEmbeddingNorm === 'default') {
      if (t) h = add(h, t);
      h = this.norm2.call(h);
    } else {
      if (!t) throw new ArgumentError('ResnetBlock2D: time_embedding_norm scale_shift needs a time embedding');
      const [scale, shift] = chunk(t, 2, 1) as [Tensor, Tensor];
      h = this.norm2.call(h);
      h = add(mul(h, affine(scale, 1, 1)), shift);
    }
    h = act(h);
    h = this.dropout.call(h);
    h = this.conv2.call(h);
    const skip = this.conv_shortcut ? this.conv_shortcut.call(input) : input;
    const out = add(skip, h);
    return this.outputScaleFactor === 1 ? out : affine(out, 1 / this.outputScaleFactor, 0);
  }
}

/**
 * Halves the resolution: a stride-2 3x3 conv (`conv`), or 2x2 average pooling without one. With
 * padding 0 the input is first padded by one on the right and bottom only, as diffusers does.
 */
export class Downsample2D extends Module {
  readonly channels: number;
  readonly useConv: boolean;
  readonly padding: number;
  conv: Conv2d | null;
  constructor(channels: number, opts: { useConv?: boolean; outChannels?: number | null; padding?: number } = {}) {
    super();
    this.channels = channels;
    this.useConv = opts.useConv ?? true;
    this.padding = opts.padding ?? 1;
    const out = opts.outChannels ?? channels;
    if (!this.useConv && out !== channels) throw new ArgumentError(`Downsample2D: pooling cannot change channels (${channels} -> ${out})`);
    this.conv = this.useConv ? this.registerModule('conv', new Conv2d(channels, out, 3, { stride: 2, padding: this.padding })) : null;
  }
  forward(x: Tensor): Tensor {
    if (x.ndim !== 4 || x.shape[1] !== this.channels) throw new ShapeError(`Downsample2D: expected [B, ${this.channels}, H, W], got ${shapeStr(x.shape)}`);
    if (!this.conv) return avgPool2d(x, 2, 2);
    const h = this.padding === 0 ? pad(x, [0, 1, 0, 1]) : x;
    return this.conv.call(h);
  }
}

/**
 * Doubles the resolution by nearest-neighbour resampling, then a 3x3 conv (`conv`). Given an
 * output size (the skip feature's), resamples to exactly that size, so odd sizes round-trip.
 */
export class Upsample2D extends Module {
  readonly channels: number;
  conv: Conv2d | null;
  constructor(channels: number, opts: { useConv?: boolean; outChannels?: number | null } = {}) {
    super();
    this.channels = channels;
    const out = opts.outChannels ?? channels;
    const useConv = opts.useConv ?? true;
    if (!useConv && out !== channels) throw new ArgumentError(`Upsample2D: without a conv the channels cannot change (${channels} -> ${out})`);
    this.conv = useConv ? this.registerModule('conv', new Conv2d(channels, out, 3, { padding: 1 })) : null;
  }
  forward(x: Tensor, outputSize?: [number, number] | null): Tensor {
    if (x.ndim !== 4 || x.shape[1] !== this.channels) throw new ShapeError(`Upsample2D: expected [B, ${this.channels}, H, W], got ${shapeStr(x.shape)}`);
    const h = outputSize ? interpolate(x, { size: outputSize, mode: 'nearest' }) : interpolate(x, { scaleFactor: 2, mode: 'nearest' });
    return this.conv ? this.conv.call(h) : h;
  }
}
