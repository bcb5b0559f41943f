// diffusers' attention stack with its parameter names: `Attention` (to_q, to_k, to_v, to_out.0,
// optional group_norm), the GEGLU `FeedForward` (ff.net.0.proj, ff.net.2), `BasicTransformerBlock`
// (norm1 attn1 norm2 attn2 norm3 ff) and the spatial `Transformer2DModel` (norm, proj_in,
// transformer_blocks, proj_out). Attention on 4-d input is the "spatial" form used by the
// UNet2DModel blocks and the VAE: tokens are pixels, with group norm, residual and rescale.
// upcast_attention/upcast_softmax need nothing here: the CPU kernels compute in fp32 anyway.
import { ArgumentError, ShapeError } from '../errors.js';
import { Tensor, shapeStr } from '../tensor.js';
import { isGradEnabled } from '../autograd.js';
import { tidy } from '../memory.js';
import { add, affine, mul, gelu } from '../ops/elementwise.js';
import { permute, reshape, transpose } from '../ops/shape.js';
import { chunk } from '../ops/indexing.js';
import { scaledDotProductAttention, softmax } from '../ops/nn.js';
import { matmul } from '../ops/matmul.js';
import { Module } from '../nn/module.js';
import { Conv2d, Dropout, GroupNorm, LayerNorm, Linear, ModuleList } from '../nn/layers.js';

export interface AttentionModuleOptions {
  heads?: number;
  dimHead?: number;
  /** Key/value input width for cross-attention (null: self-attention over the query input). */
  crossAttentionDim?: number | null;
  /** Bias on to_q/to_k/to_v. */
  bias?: boolean;
  outBias?: boolean;
  dropout?: number;
  /** GroupNorm over the channels before attention (spatial attention). */
  normNumGroups?: number | null;
  eps?: number;
  residualConnection?: boolean;
  rescaleOutputFactor?: number;
  upcastAttention?: boolean;
  upcastSoftmax?: boolean;
}

/**
 * Transforms applied to the operands of the two attention products: Q, K and V (as [B, L, inner]
 * tokens) and, when `probs` is set, the softmax output. @qdm/quant installs its quantizers here
 * (Q-Diffusion's quantized QK^T and softmax-V matmuls); a `probs` transform makes the attention
 * run as explicit products instead of the fused kernel, since the probabilities must exist.
 */
export interface AttentionOperandHook {
  query(q: Tensor): Tensor;
  key(k: Tensor): Tensor;
  value(v: Tensor): Tensor;
  probs?: ((p: Tensor) => Tensor) | null;
}

export class Attention extends Module {
  readonly queryDim: number;
  readonly heads: number;
  readonly dimHead: number;
  readonly residualConnection: boolean;
  readonly rescaleOutputFactor: number;
  readonly isCrossAttention: boolean;
  group_norm: GroupNorm | null;
  to_q: Linear;
  to_k: Linear;
  to_v: Linear;
  to_out: ModuleList;
  /** See AttentionOperandHook; null (default) runs the products on the raw operands. */
  operandHook: AttentionOperandHook | null = null;

  constructor(queryDim: number, opts: AttentionModuleOptions = {}) {
    super();
    this.queryDim = queryDim;
    this.heads = opts.heads ?? 8;
    this.dimHead = opts.dimHead ?? 64;
    if (!(this.heads >= 1 && this.dimHead >= 1) || !Number.isInteger(this.heads) || !Number.isInteger(this.dimHead)) {
      throw new ArgumentError(`Attention: heads (${this.heads}) and head dim (${this.dimHead}) must be positive integers`);
    }
    const inner = this.heads * this.dimHead;
    const kvDim = opts.crossAttentionDim ?? queryDim;
    this.isCrossAttention = opts.crossAttentionDim != null;
    this.residualConnection = opts.residualConnection ?? false;
    this.rescaleOutputFactor = opts.rescaleOutputFactor ?? 1;
    const bias = opts.bias ?? false;
    this.group_norm = opts.normNumGroups != null
      ? this.registerModule('group_norm', new GroupNorm(opts.normNumGroups, queryDim, { eps: opts.eps ?? 1e-5 }))
      : null;
    this.to_q = this.registerModule('to_q', new Linear(queryDim, inner, { bias }));
    this.to_k = this.registerModule('to_k', new Linear(kvDim, inner, { bias }));
    this.to_v = this.registerModule('to_v', new Linear(kvDim, inner, { bias }));
    this.to_out = this.registerModule('to_out', new ModuleList([new Linear(inner, queryDim, { bias: opts.outBias ?? true }), new Dropout(opts.dropout ?? 0)]));
  }

  /** [B, L, queryDim] tokens (or [B, C, H, W] pixels) attending to encoderHiddenStates (or themselves). */
  forward(hiddenStates: Tensor, encoderHiddenStates?: Tensor | null): Tensor {
    const residual = hiddenStates;
    const spatial = hiddenStates.ndim === 4;
    let x = hiddenStates;
    let B: number, C: number, H = 0, W = 0;
    if (spatial) {
      [B, C, H, W] = x.shape as [number, number, number, number];
      x = transpose(reshape(x, [B, C, H * W]), 1, 2);
    } else if (x.ndim === 3) {
      [B, , C] = x.shape as [number, number, number];
    } else throw new ShapeError(`Attention: expected [B, L, C] or [B, C, H, W], got ${shapeStr(x.shape)}`);
    if (C !== this.queryDim) throw new ShapeError(`Attention: input has ${C} channels, expected ${this.queryDim}`);
    if (this.group_norm) x = transpose(this.group_norm.call(transpose(x, 1, 2)), 1, 2);
    const kvIn = encoderHiddenStates ?? x;
    if (kvIn.ndim !== 3 || kvIn.shape[0] !== B) throw new ShapeError(`Attention: encoder hidden states ${shapeStr(kvIn.shape)} do not match batch ${B}`);
    let q = this.to_q.call(x), k = this.to_k.call(kvIn), v = this.to_v.call(kvIn);
    const hook = this.operandHook;
    if (hook) { q = hook.query(q); k = hook.key(k); v = hook.value(v); }
    const split = (t: Tensor) => transpose(reshape(t, [B, t.shape[1]!, this.heads, this.dimHead]), 1, 2);
    const attend = (): Tensor => {
      const scale = 1 / Math.sqrt(this.dimHead);
      const a = hook?.probs
        ? matmul(hook.probs(softmax(mul(matmul(split(q), transpose(split(k), -2, -1)), scale), -1)), split(v))
        : scaledDotProductAttention(split(q), split(k), split(v), { scale });
      return reshape(transpose(a, 1, 2), [B, a.shape[2]!, this.heads * this.dimHead]);
    };
    // Without autograd the score matrices are dead once the heads are merged: free them here
    // rather than at the caller's scope end (for long sequences they dominate peak memory).
    // No module output is created inside, so hooks never see a tensor this disposes.
    let o = isGradEnabled() ? attend() : tidy(attend);
    o = this.to_out.at(0).call(o) as Tensor;
    o = this.to_out.at(1).call(o) as Tensor;
    if (spatial) o = reshape(transpose(o, 1, 2), [B, C, H, W]);
    if (this.residualConnection) o = add(o, residual);
    return this.rescaleOutputFactor === 1 ? o : affine(o, 1 / this.rescaleOutputFactor, 0);
  }
}

/** Linear to twice the width, then value * gelu(gate) (diffusers' GEGLU; key `proj`). */
export class GEGLU extends Module {
  proj: Linear;
  constructor(dimIn: number, dimOut: number) { super(); this.proj = this.registerModule('proj', new Linear(dimIn, dimOut * 2)); }
  forward(x: Tensor): Tensor {
    const [h, gate] = chunk(this.proj.call(x), 2, -1) as [Tensor, Tensor];
    return mul(h, gelu(gate, 'none'));
  }
}

/** diffusers' FeedForward with the GEGLU activation: net.0 (GEGLU), net.1 (dropout), net.2 (Linear). */
export class FeedForward extends Module {
  net: ModuleList;
  constructor(dim: number, opts: { mult?: number; dropout?: number; dimOut?: number } = {}) {
    super();
    const inner = Math.floor(dim * (opts.mult ?? 4));
    this.net = this.registerModule('net', new ModuleList([new GEGLU(dim, inner), new Dropout(opts.dropout ?? 0), new Linear(inner, opts.dimOut ?? dim)]));
  }
  forward(x: Tensor): Tensor {
    let h = x;
    for (const m of this.net) h = m.call(h) as Tensor;
    return h;
  }
}

export interface BasicTransformerBlockOptions {
  crossAttentionDim?: number | null;
  onlyCrossAttention?: boolean;
  upcastAttention?: boolean;
  dropout?: number;
  normEps?: number;
}

/** Self-attention, cross-attention and feed-forward, each pre-LayerNorm with a residual. */
export class BasicTransformerBlock extends Module {
  readonly onlyCrossAttention: boolean;
  norm1: LayerNorm;
  attn1: Attention;
  norm2: LayerNorm | null;
  attn2: Attention | null;
  norm3: LayerNorm;
  ff: FeedForward;
  constructor(dim: number, heads: number, dimHead: number, opts: BasicTransformerBlockOptions = {}) {
    super();
    const eps = opts.normEps ?? 1e-5, cad = opts.crossAttentionDim ?? null;
    this.onlyCrossAttention = opts.onlyCrossAttention ?? false;
    const common = { heads, dimHead, dropout: opts.dropout ?? 0, bias: false, upcastAttention: opts.upcastAttention ?? false };
    this.norm1 = this.registerModule('norm1', new LayerNorm(dim, { eps }));
    this.attn1 = this.registerModule('attn1', new Attention(dim, { ...common, crossAttentionDim: this.onlyCrossAttention ? cad : null }));
    this.norm2 = cad !== null ? this.registerModule('norm2', new LayerNorm(dim, { eps })) : null;
    this.attn2 = cad !== null ? this.registerModule('attn2', new Attention(dim, { ...common, crossAttentionDim: cad })) : null;
    this.norm3 = this.registerModule('norm3', new LayerNorm(dim, { eps }));
    this.ff = this.registerModule('ff', new FeedForward(dim, { dropout: opts.dropout ?? 0 }));
  }
  forward(x: Tensor, encoderHiddenStates?: Tensor | null): Tensor {
    let h = add(this.attn1.call(this.norm1.call(x), this.onlyCrossAttention ? encoderHiddenStates : null), x);
    if (this.attn2 && this.norm2) h = add(this.attn2.call(this.norm2.call(h), encoderHiddenStates), h);
    return add(this.ff.call(this.norm3.call(h)), h);
  }
}

export interface Transformer2DOptions {
  numLayers?: number;
  crossAttentionDim?: number | null;
  normNumGroups?: number;
  useLinearProjection?: boolean;
  onlyCrossAttention?: boolean;
  upcastAttention?: boolean;
  dropout?: number;
}

/** The spatial transformer: GroupNorm, proj_in (1x1 conv or Linear), blocks, proj_out, residual. */
export class Transformer2DModel extends Module {
  readonly inChannels: number;
  readonly innerDim: number;
  readonly useLinearProjection: boolean;
  norm: GroupNorm;
  proj_in: Conv2d | Linear;
  transformer_blocks: ModuleList<BasicTransformerBlock>;
  proj_out: Conv2d | Linear;
  constructor(heads: number, dimHead: number, inChannels: number, opts: Transformer2DOptions = {}) {
    super();
    this.inChannels = inChannels;
    this.innerDim = heads * dimHead;
    this.useLinearProjection = opts.useLinearProjection ?? false;
    const inner = this.innerDim;
    this.norm = this.registerModule('norm', new GroupNorm(opts.normNumGroups ?? 32, inChannels, { eps: 1e-6 }));
    this.proj_in = this.registerModule('proj_in', this.useLinearProjection ? new Linear(inChannels, inner) : new Conv2d(inChannels, inner, 1));
    const blocks: BasicTransformerBlock[] = [];
    for (let i = 0; i < (opts.numLayers ?? 1); ++i) {
      blocks.push(new BasicTransformerBlock(inner, heads, dimHead, {
        crossAttentionDim: opts.crossAttentionDim ?? null, onlyCrossAttention: opts.onlyCrossAttention ?? false,
        upcastAttention: opts.upcastAttention ?? false, dropout: opts.dropout ?? 0,
      }));
    }
    this.transformer_blocks = this.registerModule('transformer_blocks', new ModuleList(blocks));
    this.proj_out = this.registerModule('proj_out', this.useLinearProjection ? new Linear(inner, inChannels) : new Conv2d(inner, inChannels, 1));
  }
  forward(x: Tensor, encoderHiddenStates?: Tensor | null): Tensor {
    if (x.ndim !== 4 || x.shape[1] !== this.inChannels) throw new ShapeError(`Transformer2DModel: expected [B, ${this.inChannels}, H, W], got ${shapeStr(x.shape)}`);
    const [B, , H, W] = x.shape as [number, number, number, number];
    let h = this.norm.call(x);
    const toTokens = (t: Tensor) => reshape(permute(t, [0, 2, 3, 1]), [B, H * W, t.shape[1]!]);
    if (this.useLinearProjection) h = this.proj_in.call(toTokens(h));
    else h = toTokens(this.proj_in.call(h));
    for (const block of this.transformer_blocks) h = block.call(h, encoderHiddenStates);
    const toPixels = (t: Tensor) => permute(reshape(t, [B, H, W, t.shape[2]!]), [0, 3, 1, 2]);
    if (this.useLinearProjection) h = toPixels(this.proj_out.call(h));
    else h = this.proj_out.call(toPixels(h));
    return add(h, x);
  }
}
