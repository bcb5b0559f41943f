// diffusers' AutoencoderKL: the VAE of latent diffusion models, with its parameter names, so
// Stable Diffusion's vae/ folder loads unchanged. The encoder gives a diagonal Gaussian over
// latents (mean, log-variance); the decoder maps latents back to images. Latent models sample
// in the scaled space z * scaling_factor, as diffusers' pipelines do.
import { ArgumentError, ShapeError } from '../errors.js';
import { Module } from '../nn/module.js';
import { Conv2d, GroupNorm, ModuleList } from '../nn/layers.js';
import { Tensor, shapeStr } from '../tensor.js';
import { chunk } from '../ops/indexing.js';
import { clamp, exp, affine, add, mul } from '../ops/elementwise.js';
import { randn } from '../ops/creation.js';
import type { Generator } from '../random.js';
import { ResnetBlock2D, Downsample2D, Upsample2D } from './resnet.js';
import { UNetMidBlock2D, type MidBlockArgs } from './unet-blocks.js';
import { ConfigReader, resolveConfig, type RawConfig, type ActivationName } from './config.js';
import { applyActivation } from './embeddings.js';

export const AUTOENCODER_KL_DEFAULTS: RawConfig = {
  in_channels: 3,
  out_channels: 3,
  down_block_types: ['DownEncoderBlock2D'],
  up_block_types: ['UpDecoderBlock2D'],
  block_out_channels: [64],
  layers_per_block: 1,
  act_fn: 'silu',
  latent_channels: 4,
  norm_num_groups: 32,
  sample_size: 32,
  scaling_factor: 0.18215,
  shift_factor: null,
  latents_mean: null,
  latents_std: null,
  force_upcast: true,
  use_quant_conv: true,
  use_post_quant_conv: true,
  mid_block_add_attention: true,
};

interface CoderArgs { groups: number; act: ActivationName; layers: number }

function vaeResnet(a: CoderArgs, inCh: number, outCh: number): ResnetBlock2D {
  return new ResnetBlock2D(inCh, { outChannels: outCh, tembChannels: null, eps: 1e-6, groups: a.groups, nonLinearity: a.act });
}

function vaeMid(a: CoderArgs, channels: number, addAttention: boolean): UNetMidBlock2D {
  const args: MidBlockArgs = {
    numLayers: 1, inChannels: channels, tembChannels: null, resnetEps: 1e-6, actFn: a.act, resnetGroups: a.groups, dropout: 0,
    timeEmbeddingNorm: 'default', outputScaleFactor: 1, skipTimeAct: false, attentionHeadDim: channels, numAttentionHeads: 1,
    crossAttentionDim: null, transformerLayersPerBlock: 1, useLinearProjection: false, onlyCrossAttention: false, upcastAttention: false,
    attnGroups: a.groups, addAttention,
  };
  return new UNetMidBlock2D(args);
}

/** Resnets, then an optional downsampler (padding 0: diffusers pads right and bottom by one). */
export class DownEncoderBlock2D extends Module {
  resnets: ModuleList<ResnetBlock2D>;
  downsamplers: ModuleList<Downsample2D> | null;
  constructor(a: CoderArgs, inCh: number, outCh: number, addDownsample: boolean) {
    super();
    const rs: ResnetBlock2D[] = [];
    for (let j = 0; j < a.layers; ++j) rs.push(vaeResnet(a, j === 0 ? inCh : outCh, outCh));
    this.resnets = this.registerModule('resnets', new ModuleList(rs));
    this.downsamplers = addDownsample ? this.registerModule('downsamplers', new ModuleList([new Downsample2D(outCh, { useConv: true, outChannels: outCh, padding: 0 })])) : null;
  }
  forward(h: Tensor): Tensor {
    for (const r of this.resnets) h = r.call(h, null);
    if (this.downsamplers) for (const d of this.downsamplers) h = d.call(h);
    return h;
  }
}

export class UpDecoderBlock2D extends Module {
  resnets: ModuleList<ResnetBlock2D>;
  upsamplers: ModuleList<Upsample2D> | null;
  constructor(a: CoderArgs, inCh: number, outCh: number, addUpsample: boolean) {
    super();
    const rs: ResnetBlock2D[] = [];
    for (let j = 0; j < a.layers; ++j) rs.push(vaeResnet(a, j === 0 ? inCh : outCh, outCh));
    this.resnets = this.registerModule('resnets', new ModuleList(rs));
    this.upsamplers = addUpsample ? this.registerModule('upsamplers', new ModuleList([new Upsample2D(outCh, { useConv: true, outChannels: outCh })])) : null;
  }
  forward(h: Tensor): Tensor {
    for (const r of this.resnets) h = r.call(h, null);
    if (this.upsamplers) for (const u of this.upsamplers) h = u.call(h, null);
    return h;
  }
}

export class Encoder extends Module {
  conv_in: Conv2d;
  down_blocks: ModuleList<DownEncoderBlock2D>;
  mid_block: UNetMidBlock2D;
  conv_norm_out: GroupNorm;
  conv_out: Conv2d;
  constructor(private readonly a: CoderArgs, inCh: number, boc: number[], latent: number, addAttention: boolean) {
    super();
    this.conv_in = this.registerModule('conv_in', new Conv2d(inCh, boc[0]!, 3, { padding: 1 }));
    const blocks: DownEncoderBlock2D[] = [];
    let prev = boc[0]!;
    boc.forEach((c, i) => { blocks.push(new DownEncoderBlock2D(a, prev, c, i !== boc.length - 1)); prev = c; });
    this.down_blocks = this.registerModule('down_blocks', new ModuleList(blocks));
    this.mid_block = this.registerModule('mid_block', vaeMid(a, boc[boc.length - 1]!, addAttention));
    this.conv_norm_out = this.registerModule('conv_norm_out', new GroupNorm(a.groups, boc[boc.length - 1]!, { eps: 1e-6 }));
    this.conv_out = this.registerModule('conv_out', new Conv2d(boc[boc.length - 1]!, 2 * latent, 3, { padding: 1 }));
  }
  forward(x: Tensor): Tensor {
    let h = this.conv_in.call(x);
    for (const b of this.down_blocks) h = b.call(h);
    h = this.mid_block.call(h, null);
    h = applyActivation(this.a.act, this.conv_norm_out.call(h));
    return this.conv_out.call(h);
  }
}

export class Decoder extends Module {
  conv_in: Conv2d;
  mid_block: UNetMidBlock2D;
  up_blocks: ModuleList<UpDecoderBlock2D>;
  conv_norm_out: GroupNorm;
  conv_out: Conv2d;
  constructor(private readonly a: CoderArgs, latent: number, boc: number[], outCh: number, addAttention: boolean) {
    super();
    const rev = [...boc].reverse();
    this.conv_in = this.registerModule('conv_in', new Conv2d(latent, rev[0]!, 3, { padding: 1 }));
    this.mid_block = this.registerModule('mid_block', vaeMid(a, rev[0]!, addAttention));
    const up = { ...a, layers: a.layers + 1 };
    const blocks: UpDecoderBlock2D[] = [];
    let prev = rev[0]!;
    rev.forEach((c, i) => { blocks.push(new UpDecoderBlock2D(up, prev, c, i !== rev.length - 1)); prev = c; });
    this.up_blocks = this.registerModule('up_blocks', new ModuleList(blocks));
    this.conv_norm_out = this.registerModule('conv_norm_out', new GroupNorm(a.groups, boc[0]!, { eps: 1e-6 }));
    this.conv_out = this.registerModule('conv_out', new Conv2d(boc[0]!, outCh, 3, { padding: 1 }));
  }
  forward(z: Tensor): Tensor {
    let h = this.conv_in.call(z);
    h = this.mid_block.call(h, null);
    for (const b of this.up_blocks) h = b.call(h);
    h = applyActivation(this.a.act, this.conv_norm_out.call(h));
    return this.conv_out.call(h);
  }
}

/** The encoder's output distribution over latents. */
export class DiagonalGaussian {
  readonly std: Tensor;
  constructor(readonly mean: Tensor, readonly logvar: Tensor) { this.std = exp(affine(logvar, 0.5, 0)); }
  /** mean + std * noise, with seeded noise. */
  sample(opts: { generator?: Generator; seed?: number } = {}): Tensor {
    const noise = randn(this.mean.shape, { device: this.mean.device, ...opts });
    return add(this.mean, mul(this.std, noise));
  }
  mode(): Tensor { return this.mean; }
}

export class AutoencoderKL extends Module {
  readonly config: RawConfig;
  encoder: Encoder;
  decoder: Decoder;
  quant_conv: Conv2d | null;
  post_quant_conv: Conv2d | null;

  static fromConfig(json: RawConfig | string): AutoencoderKL {
    return new AutoencoderKL(typeof json === 'string' ? (JSON.parse(json) as RawConfig) : json);
  }

  constructor(rawConfig: RawConfig) {
    super();
    const config = resolveConfig(rawConfig, AUTOENCODER_KL_DEFAULTS, 'AutoencoderKL');
    this.config = config;
    const r = new ConfigReader(config, 'AutoencoderKL');
    const boc = r.ints('block_out_channels');
    const down = r.strings('down_block_types', ['DownEncoderBlock2D']);
    const up = r.strings('up_block_types', ['UpDecoderBlock2D']);
    if (down.length !== boc.length || up.length !== boc.length) {
      throw new ArgumentError(`AutoencoderKL: down_block_types (${down.length}), up_block_types (${up.length}) and block_out_channels (${boc.length}) must have the same length`);
    }
    const latent = r.int('latent_channels');
    const a: CoderArgs = { groups: r.int('norm_num_groups'), act: r.oneOf('act_fn', ['silu', 'swish', 'gelu', 'relu']) as ActivationName, layers: r.int('layers_per_block') };
    for (const c of boc) if (c % a.groups !== 0) throw new ArgumentError(`AutoencoderKL: ${c} channels are not divisible by norm_num_groups ${a.groups}`);
    const addAttention = r.bool('mid_block_add_attention');
    this.encoder = this.registerModule('encoder', new Encoder(a, r.int('in_channels'), boc, latent, addAttention));
    this.decoder = this.registerModule('decoder', new Decoder(a, latent, boc, r.int('out_channels'), addAttention));
    this.quant_conv = r.bool('use_quant_conv') ? this.registerModule('quant_conv', new Conv2d(2 * latent, 2 * latent, 1)) : null;
    this.post_quant_conv = r.bool('use_post_quant_conv') ? this.registerModule('post_quant_conv', new Conv2d(latent, latent, 1)) : null;
  }

  get scalingFactor(): number { return Number(this.config.scaling_factor ?? 0.18215); }

  /** Images [B, C, H, W] in [-1, 1] to the latent distribution. */
  encode(x: Tensor): DiagonalGaussian {
    const inCh = Number(this.config.in_channels);
    if (x.ndim !== 4 || x.shape[1] !== inCh) throw new ShapeError(`AutoencoderKL.encode: expected [B, ${inCh}, H, W], got ${shapeStr(x.shape)}`);
    let moments = this.encoder.call(x);
    if (this.quant_conv) moments = this.quant_conv.call(moments);
    const [mean, logvar] = chunk(moments, 2, 1) as [Tensor, Tensor];
    return new DiagonalGaussian(mean, clamp(logvar, -30, 20));
  }

  /** Latents [B, latent_channels, h, w] (unscaled) to images. */
  decode(z: Tensor): Tensor {
    const latent = Number(this.config.latent_channels);
    if (z.ndim !== 4 || z.shape[1] !== latent) throw new ShapeError(`AutoencoderKL.decode: expected [B, ${latent}, h, w], got ${shapeStr(z.shape)}`);
    const h = this.post_quant_conv ? this.post_quant_conv.call(z) : z;
    return this.decoder.call(h);
  }

  /** Reconstruction through the posterior's mean (or a sample of it). */
  forward(x: Tensor, opts: { samplePosterior?: boolean; generator?: Generator } = {}): Tensor {
    const post = this.encode(x);
    return this.decode(opts.samplePosterior ? post.sample({ generator: opts.generator }) : post.mode());
  }
}
