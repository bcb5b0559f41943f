// diffusers' UNet2DConditionModel: the text-conditioned U-Net of Stable Diffusion 1.x/2.x, SDXL
// (addition_embed_type "text_time") and latent consistency models (time_cond_proj_dim). Config
// handling follows diffusers' __init__ exactly, quirks included: num_attention_heads defaults to
// attention_head_dim (which is really the head count there), up blocks read the reversed
// per-block lists except attention_head_dim, and only-cross-attention applies per block.
import { ArgumentError, ShapeError } from '../errors.js';
import { Tensor, shapeStr } from '../tensor.js';
import { add } from '../ops/elementwise.js';
import { cast, reshape } from '../ops/shape.js';
import { concat } from '../ops/indexing.js';
import { Conv2d, Embedding, GroupNorm, Identity, ModuleList } from '../nn/layers.js';
import { ACTIVATIONS, ConfigReader, describeValue, resolveConfig, UNET_2D_CONDITION_DEFAULTS, type ActivationName, type RawConfig } from './config.js';
import { Activation, TimestepEmbedding, Timesteps, timestepValues, type TimestepInput } from './embeddings.js';
import {
  DOWN_BLOCK_TYPES, UP_BLOCK_TYPES, makeDownBlock, makeUpBlock, UNetMidBlock2D, UNetMidBlock2DCrossAttn,
  type BlockArgs, type UNetDownBlock, type UNetUpBlock,
} from './unet-blocks.js';
import { UNetBase, classEmbedding, commonOptions, checkLengths, type UNetConditioning } from './unet-2d.js';

type LayerSpec = number | number[];

/** transformer_layers_per_block (or its reverse): an int, or per block an int or a per-layer list. */
function layerSpecs(r: ConfigReader, key: string, n: number): LayerSpec[] {
  const v = r.raw(key);
  const okInt = (x: unknown): x is number => typeof x === 'number' && Number.isInteger(x) && x >= 1;
  if (okInt(v)) return new Array<LayerSpec>(n).fill(v);
  if (Array.isArray(v) && v.length === n && v.every((x) => okInt(x) || (Array.isArray(x) && x.length > 0 && x.every(okInt)))) return v as LayerSpec[];
  throw r.fail(key, `expected a positive integer or a list of ${n} (integers or per-layer lists)`);
}

export class UNet2DConditionModel extends UNetBase {
  time_proj: Timesteps;
  time_embedding: TimestepEmbedding;
  class_embedding: Embedding | TimestepEmbedding | Identity | null;
  add_time_proj: Timesteps | null = null;
  add_embedding: TimestepEmbedding | null = null;
  time_embed_act: Activation | null;
  readonly classEmbedType: 'timestep' | 'identity' | 'embedding' | null;
  readonly classEmbeddingsConcat: boolean;
  readonly additionEmbedType: 'text_time' | null;

  static fromConfig(json: RawConfig | string): UNet2DConditionModel {
    return new UNet2DConditionModel(typeof json === 'string' ? (JSON.parse(json) as RawConfig) : json);
  }

  constructor(rawConfig: RawConfig) {
    const config = resolveConfig(rawConfig, UNET_2D_CONDITION_DEFAULTS, 'UNet2DConditionModel');
    super(config);
    const r = new ConfigReader(config, 'UNet2DConditionModel');
    const o = commonOptions(r);
    const down = r.strings('down_block_types', DOWN_BLOCK_TYPES);
    const up = r.strings('up_block_types', UP_BLOCK_TYPES);
    const boc = r.ints('block_out_channels');
    checkLengths(r, down, up, boc);
    const n = down.length;
    const inCh = r.int('in_channels'), outCh = r.int('out_channels');
    r.bool('center_input_sample');
    r.intOrNull('sample_size');

    // Features this implementation does not have: reject rather than build something else.
    if (r.bool('dual_cross_attention')) throw r.fail('dual_cross_attention', 'dual cross-attention is not implemented');
    r.oneOf('encoder_hid_dim', [null]);
    r.oneOf('encoder_hid_dim_type', [null]);
    r.oneOf('attention_type', ['default']);
    r.oneOf('cross_attention_norm', [null]);
    const addType = r.oneOf('addition_embed_type', [null, 'text_time']);
    const classType = r.oneOf('class_embed_type', [null, 'timestep', 'identity']);
    const midType = r.oneOf('mid_block_type', ['UNetMidBlock2DCrossAttn', 'UNetMidBlock2D', null]);
    const upcast = r.bool('upcast_attention');
    const useLinear = r.bool('use_linear_projection');
    const skipTimeAct = r.bool('resnet_skip_time_act');
    const resnetOutScale = r.num('resnet_out_scale_factor', { positive: true });
    this.classEmbeddingsConcat = r.bool('class_embeddings_concat');
    r.boolOrNull('mid_block_only_cross_attention');
    r.int('addition_embed_type_num_heads');
    const convInK = r.int('conv_in_kernel'), convOutK = r.int('conv_out_kernel');
    if (convInK % 2 === 0) throw r.fail('conv_in_kernel', 'expected an odd kernel size');
    if (convOutK % 2 === 0) throw r.fail('conv_out_kernel', 'expected an odd kernel size');
    const timeActFn = r.oneOf('time_embedding_act_fn', [null, ...ACTIVATIONS]) as ActivationName | null;
    const postAct = r.oneOf('timestep_post_act', [null, ...ACTIVATIONS]) as ActivationName | null;
    const condProjDim = r.intOrNull('time_cond_proj_dim');
    const numClassEmbeds = r.intOrNull('num_class_embeds');

    // Per-block lists (diffusers broadcasts scalars to one entry per down block).
    const headDim = r.perBlock('attention_head_dim', n, { nullable: true });
    const numHeads = r.raw('num_attention_heads') == null ? headDim : r.perBlock('num_attention_heads', n);
    const crossDim = r.perBlock('cross_attention_dim', n) as number[];
    const lpb = r.perBlock('layers_per_block', n) as number[];
    const tlpb = layerSpecs(r, 'transformer_layers_per_block', n);
    const reverseTlpb = r.raw('reverse_transformer_layers_per_block') == null ? null : layerSpecs(r, 'reverse_transformer_layers_per_block', n);
    if (tlpb.some(Array.isArray) && !reverseTlpb) throw r.fail('reverse_transformer_layers_per_block', 'required when transformer_layers_per_block holds per-layer lists');
    const oca = r.raw('only_cross_attention');
    const onlyCross: boolean[] = typeof oca === 'boolean' ? new Array<boolean>(n).fill(oca)
      : Array.isArray(oca) && oca.length === n && oca.every((x) => typeof x === 'boolean') ? (oca as boolean[])
      : (() => { throw r.fail('only_cross_attention', `expected a boolean or a list of ${n}`); })();
    const heads = (i: number, list: (number | null)[]): number => {
      const h = list[i];
      if (h == null) throw new ArgumentError(`UNet2DConditionModel: unsupported config value num_attention_heads/attention_head_dim=${describeValue(r.raw('attention_head_dim'))} (cross-attention block ${i} needs a head count)`);
      return h;
    };

    // Embeddings.
    const timeEmbedDim = r.intOrNull('time_embedding_dim') ?? boc[0]! * 4;
    this.conv_in = this.registerModule('conv_in', new Conv2d(inCh, boc[0]!, convInK, { padding: (convInK - 1) / 2 }));
    this.time_proj = this.registerModule('time_proj', new Timesteps(boc[0]!, o.flipSinToCos, o.freqShift));
    this.time_embedding = this.registerModule('time_embedding', new TimestepEmbedding(boc[0]!, timeEmbedDim, { actFn: o.actFn, postActFn: postAct, condProjDim }));
    if (classType === null && numClassEmbeds !== null) {
      this.class_embedding = this.registerModule('class_embedding', new Embedding(numClassEmbeds, timeEmbedDim));
      this.classEmbedType = 'embedding';
    } else if (classType === 'timestep') {
      this.class_embedding = this.registerModule('class_embedding', new TimestepEmbedding(boc[0]!, timeEmbedDim, { actFn: o.actFn }));
      this.classEmbedType = 'timestep';
    } else if (classType === 'identity') {
      this.class_embedding = this.registerModule('class_embedding', new Identity());
      this.classEmbedType = 'identity';
    } else { this.class_embedding = null; this.classEmbedType = null; }
    this.additionEmbedType = addType as 'text_time' | null;
    if (addType === 'text_time') {
      const addDim = r.int('addition_time_embed_dim');
      const projDim = r.int('projection_class_embeddings_input_dim');
      this.add_time_proj = this.registerModule('add_time_proj', new Timesteps(addDim, o.flipSinToCos, o.freqShift));
      this.add_embedding = this.registerModule('add_embedding', new TimestepEmbedding(projDim, timeEmbedDim));
    } else {
      r.intOrNull('addition_time_embed_dim');
      r.intOrNull('projection_class_embeddings_input_dim');
    }
    this.time_embed_act = timeActFn ? this.registerModule('time_embed_act', new Activation(timeActFn)) : null;
    const blocksTembDim = this.classEmbeddingsConcat ? timeEmbedDim * 2 : timeEmbedDim;

    const base = {
      tembChannels: blocksTembDim, resnetEps: o.normEps, actFn: o.actFn, resnetGroups: o.normNumGroups, dropout: o.dropout,
      timeEmbeddingNorm: o.timeEmbeddingNorm, outputScaleFactor: resnetOutScale, skipTimeAct, downsamplePadding: o.downsamplePadding,
      useLinearProjection: useLinear, upcastAttention: upcast,
    };
    const downs: UNetDownBlock[] = [];
    let outC = boc[0]!;
    for (let i = 0; i < n; ++i) {
      const inC = outC; outC = boc[i]!;
      const a: BlockArgs = {
        ...base, numLayers: lpb[i]!, inChannels: inC, outChannels: outC, addSample: i < n - 1,
        attentionHeadDim: headDim[i] ?? outC, numAttentionHeads: down[i] === 'CrossAttnDownBlock2D' ? heads(i, numHeads) : 1,
        crossAttentionDim: crossDim[i]!, transformerLayersPerBlock: tlpb[i]!, onlyCrossAttention: onlyCross[i]!,
      };
      downs.push(makeDownBlock(down[i]!, a));
    }
    this.down_blocks = this.registerModule('down_blocks', new ModuleList(downs));

    const last = boc[n - 1]!;
    const lastTlpb = tlpb[n - 1]!;
    if (midType === 'UNetMidBlock2DCrossAttn') {
      this.mid_block = this.registerModule('mid_block', new UNetMidBlock2DCrossAttn({
        ...base, numLayers: 1, inChannels: last, outputScaleFactor: o.midBlockScaleFactor, attentionHeadDim: last,
        numAttentionHeads: heads(n - 1, numHeads), crossAttentionDim: crossDim[n - 1]!, transformerLayersPerBlock: lastTlpb, onlyCrossAttention: false,
      }));
    } else if (midType === 'UNetMidBlock2D') {
      this.mid_block = this.registerModule('mid_block', new UNetMidBlock2D({
        ...base, numLayers: 0, inChannels: last, outputScaleFactor: o.midBlockScaleFactor, attentionHeadDim: last,
        numAttentionHeads: 1, crossAttentionDim: null, transformerLayersPerBlock: 1, onlyCrossAttention: false, addAttention: false,
      }));
    } else this.mid_block = null;

    const rev = <T>(xs: T[]): T[] => [...xs].reverse();
    const rBoc = rev(boc), rHeads = rev(numHeads), rLpb = rev(lpb), rCross = rev(crossDim), rOnly = rev(onlyCross);
    const rTlpb = reverseTlpb ?? rev(tlpb);
    const ups: UNetUpBlock[] = [];
    outC = rBoc[0]!;
    for (let i = 0; i < n; ++i) {
      const prev = outC; outC = rBoc[i]!;
      const inC = rBoc[Math.min(i + 1, n - 1)]!;
      const a: BlockArgs = {
        ...base, numLayers: rLpb[i]! + 1, inChannels: inC, outChannels: outC, prevOutputChannels: prev, addSample: i < n - 1,
        // diffusers' quirk: the up path indexes attention_head_dim without reversing it.
        attentionHeadDim: headDim[i] ?? outC, numAttentionHeads: up[i] === 'CrossAttnUpBlock2D' ? heads(i, rHeads) : 1,
        crossAttentionDim: rCross[i]!, transformerLayersPerBlock: rTlpb[i]!, onlyCrossAttention: rOnly[i]!,
      };
      ups.push(makeUpBlock(up[i]!, a));
    }
    this.up_blocks = this.registerModule('up_blocks', new ModuleList(ups));
    this.conv_norm_out = this.registerModule('conv_norm_out', new GroupNorm(o.normNumGroups, boc[0]!, { eps: o.normEps }));
    this.conv_act = this.registerModule('conv_act', new Activation(o.actFn));
    this.conv_out = this.registerModule('conv_out', new Conv2d(boc[0]!, outCh, convOutK, { padding: (convOutK - 1) / 2 }));
  }

  protected embed(sample: Tensor, timestep: TimestepInput, cond: UNetConditioning): Tensor {
    const name = 'UNet2DConditionModel';
    const B = sample.shape[0]!;
    const tEmb = this.timeEmbedding(this.time_proj, sample, timestep);
    if (cond.timestepCond && (cond.timestepCond.ndim !== 2 || cond.timestepCond.shape[0] !== B)) {
      throw new ShapeError(`${name}: timestepCond ${shapeStr(cond.timestepCond.shape)} must be [${B}, time_cond_proj_dim]`);
    }
    let emb = this.time_embedding.call(tEmb, cond.timestepCond ?? null);
    if (this.class_embedding) {
      const c = classEmbedding(this, this.classEmbedType!, this.class_embedding, this.time_proj, sample, cond.classLabels);
      emb = this.classEmbeddingsConcat ? concat([emb, c], -1) : add(emb, c);
    } else if (cond.classLabels) throw new ArgumentError(`${name}: classLabels were given but the model has no class embedding`);
    if (this.additionEmbedType === 'text_time') {
      const kw = cond.addedCondKwargs;
      if (!kw?.textEmbeds || !kw.timeIds) throw new ArgumentError(`${name}: addition_embed_type "text_time" needs addedCondKwargs { textEmbeds, timeIds }`);
      const { textEmbeds, timeIds } = kw;
      if (textEmbeds.ndim !== 2 || textEmbeds.shape[0] !== B) throw new ShapeError(`${name}: textEmbeds ${shapeStr(textEmbeds.shape)} must be [${B}, D]`);
      if (timeIds.ndim !== 2 || timeIds.shape[0] !== B) throw new ShapeError(`${name}: timeIds ${shapeStr(timeIds.shape)} must be [${B}, n]`);
      const values = timestepValues(reshape(timeIds, [-1]), timeIds.numel, name);
      const timeEmbeds = reshape(this.add_time_proj!.call(values, { device: sample.device, dtype: emb.dtype }), [B, -1]);
      const addEmbeds = concat([textEmbeds.dtype === emb.dtype ? textEmbeds : cast(textEmbeds, emb.dtype), timeEmbeds], -1);
      emb = add(emb, this.add_embedding!.call(addEmbeds));
    } else if (cond.addedCondKwargs) throw new ArgumentError(`${name}: addedCondKwargs were given but the model has no addition_embed_type`);
    if (this.time_embed_act) emb = this.time_embed_act.call(emb);
    return emb;
  }
}
