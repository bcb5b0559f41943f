// Model configs in diffusers' own form: snake_case keys, its defaults filled in, `_class_name`
// and other `_`-prefixed bookkeeping keys kept as given. Keeping diffusers' shape (rather than a
// camelCase translation) means a config.json round-trips unchanged and the names in error
// messages are the ones a user sees in their file. Validation is strict: an unknown key or a
// value this implementation does not support is an ArgumentError naming the key and value,
// never a silently different model.
import { ArgumentError } from '../errors.js';

export type ConfigValue = unknown;
export type RawConfig = Record<string, ConfigValue>;

/** diffusers' UNet2DModel defaults (diffusers 0.3x). */
export const UNET_2D_DEFAULTS: RawConfig = {
  sample_size: null,
  in_channels: 3,
  out_channels: 3,
  center_input_sample: false,
  time_embedding_type: 'positional',
  time_embedding_dim: null,
  freq_shift: 0,
  flip_sin_to_cos: true,
  down_block_types: ['DownBlock2D', 'AttnDownBlock2D', 'AttnDownBlock2D', 'AttnDownBlock2D'],
  mid_block_type: 'UNetMidBlock2D',
  up_block_types: ['AttnUpBlock2D', 'AttnUpBlock2D', 'AttnUpBlock2D', 'UpBlock2D'],
  block_out_channels: [224, 448, 672, 896],
  layers_per_block: 2,
  mid_block_scale_factor: 1,
  downsample_padding: 1,
  downsample_type: 'conv',
  upsample_type: 'conv',
  dropout: 0.0,
  act_fn: 'silu',
  attention_head_dim: 8,
  norm_num_groups: 32,
  attn_norm_num_groups: null,
  norm_eps: 1e-5,
  resnet_time_scale_shift: 'default',
  add_attention: true,
  class_embed_type: null,
  num_class_embeds: null,
  num_train_timesteps: null,
};

/** diffusers' UNet2DConditionModel defaults (the Stable Diffusion 1.x layout). */
export const UNET_2D_CONDITION_DEFAULTS: RawConfig = {
  sample_size: null,
  in_channels: 4,
  out_channels: 4,
  center_input_sample: false,
  flip_sin_to_cos: true,
  freq_shift: 0,
  down_block_types: ['CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'DownBlock2D'],
  mid_block_type: 'UNetMidBlock2DCrossAttn',
  up_block_types: ['UpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D'],
  only_cross_attention: false,
  block_out_channels: [320, 640, 1280, 1280],
  layers_per_block: 2,
  downsample_padding: 1,
  mid_block_scale_factor: 1,
  dropout: 0.0,
  act_fn: 'silu',
  norm_num_groups: 32,
  norm_eps: 1e-5,
  cross_attention_dim: 1280,
  transformer_layers_per_block: 1,
  reverse_transformer_layers_per_block: null,
  encoder_hid_dim: null,
  encoder_hid_dim_type: null,
  attention_head_dim: 8,
  num_attention_heads: null,
  dual_cross_attention: false,
  use_linear_projection: false,
  class_embed_type: null,
  addition_embed_type: null,
  addition_time_embed_dim: null,
  num_class_embeds: null,
  upcast_attention: false,
  resnet_time_scale_shift: 'default',
  resnet_skip_time_act: false,
  resnet_out_scale_factor: 1.0,
  time_embedding_type: 'positional',
  time_embedding_dim: null,
  time_embedding_act_fn: null,
  timestep_post_act: null,
  time_cond_proj_dim: null,
  conv_in_kernel: 3,
  conv_out_kernel: 3,
  projection_class_embeddings_input_dim: null,
  attention_type: 'default',
  class_embeddings_concat: false,
  mid_block_only_cross_attention: null,
  cross_attention_norm: null,
  addition_embed_type_num_heads: 64,
};

/**
 * Fills diffusers' defaults into `raw` for model class `className`. Keys the class does not
 * know are ignored with a process warning, as diffusers does; a `_class_name` naming another
 * class is an error.
 */
export function resolveConfig(raw: RawConfig, defaults: RawConfig, className: string): RawConfig {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    throw new ArgumentError(`${className}: config must be an object, got ${describeValue(raw)}`);
  }
  const given = raw._class_name;
  if (given !== undefined && given !== className) {
    throw new ArgumentError(`${className}: config _class_name is ${describeValue(given)}, expected '${className}'`);
  }
  const out: RawConfig = { _class_name: className };
  const ignored: string[] = [];
  for (const [k, v] of Object.entries(defaults)) out[k] = cloneValue(v);
  for (const [k, v] of Object.entries(raw)) {
    if (k.startsWith('_')) { out[k] = cloneValue(v); continue; }
    if (!(k in defaults)) { ignored.push(k); continue; }
    out[k] = cloneValue(v);
  }
  // diffusers ignores keys a class does not know (configs gain keys across versions) and says so.
  if (ignored.length) process.emitWarning(`${className}: config keys ignored (not used by this class): ${ignored.join(', ')}`, { code: 'QDM_CONFIG_IGNORED' });
  return out;
}

function cloneValue(v: unknown): unknown { return v === undefined ? v : JSON.parse(JSON.stringify(v)); }

export function describeValue(v: unknown): string {
  try { return JSON.stringify(v) ?? String(v); } catch { return String(v); }
}

// ---- typed readers: every one names the key and the offending value --------------------------

const bad = (cls: string, key: string, v: unknown, want: string): ArgumentError =>
  new ArgumentError(`${cls}: unsupported config value ${key}=${describeValue(v)} (${want})`);

export class ConfigReader {
  constructor(readonly cfg: RawConfig, readonly className: string) {}

  private get(key: string): unknown { return this.cfg[key]; }

  int(key: string, opts: { min?: number } = {}): number {
    const v = this.get(key);
    if (typeof v !== 'number' || !Number.isInteger(v) || v < (opts.min ?? 1)) throw bad(this.className, key, v, `expected an integer >= ${opts.min ?? 1}`);
    return v;
  }
  intOrNull(key: string, opts: { min?: number } = {}): number | null {
    return this.get(key) === null || this.get(key) === undefined ? null : this.int(key, opts);
  }
  num(key: string, opts: { positive?: boolean } = {}): number {
    const v = this.get(key);
    if (typeof v !== 'number' || !Number.isFinite(v) || (opts.positive && v <= 0)) throw bad(this.className, key, v, opts.positive ? 'expected a positive number' : 'expected a number');
    return v;
  }
  bool(key: string): boolean {
    const v = this.get(key);
    if (typeof v !== 'boolean') throw bad(this.className, key, v, 'expected true or false');
    return v;
  }
  boolOrNull(key: string): boolean | null { return this.get(key) === null || this.get(key) === undefined ? null : this.bool(key); }
  oneOf<T extends string | null>(key: string, allowed: readonly T[]): T {
    const v = this.get(key) ?? null;
    if (!allowed.includes(v as T)) throw bad(this.className, key, v, `supported: ${allowed.map((a) => describeValue(a)).join(', ')}`);
    return v as T;
  }
  strings(key: string, allowed: readonly string[]): string[] {
    const v = this.get(key);
    if (!Array.isArray(v) || v.length === 0) throw bad(this.className, key, v, 'expected a non-empty list of block type names');
    for (const s of v) if (typeof s !== 'string' || !allowed.includes(s)) throw bad(this.className, key, v, `block type ${describeValue(s)} is not supported; supported: ${allowed.join(', ')}`);
    return v as string[];
  }
  ints(key: string): number[] {
    const v = this.get(key);
    if (!Array.isArray(v) || v.length === 0 || !v.every((x) => typeof x === 'number' && Number.isInteger(x) && x >= 1)) throw bad(this.className, key, v, 'expected a non-empty list of positive integers');
    return v as number[];
  }
  /** An int (repeated n times) or a list of n ints; null entries allowed only when `nullable`. */
  perBlock(key: string, n: number, opts: { nullable?: boolean; min?: number } = {}): (number | null)[] {
    const v = this.get(key);
    const ok = (x: unknown): boolean => (x === null && !!opts.nullable) || (typeof x === 'number' && Number.isInteger(x) && x >= (opts.min ?? 1));
    if (!Array.isArray(v)) {
      if (v === undefined || !ok(v)) throw bad(this.className, key, v, `expected an integer${opts.nullable ? ', null' : ''} or a list of ${n}`);
      return new Array<number | null>(n).fill(v as number | null);
    }
    if (v.length !== n) throw bad(this.className, key, v, `a list must have one entry per block (${n})`);
    if (!v.every(ok)) throw bad(this.className, key, v, 'list entries must be positive integers');
    return v as (number | null)[];
  }
  raw(key: string): unknown { return this.get(key); }
  fail(key: string, want: string): ArgumentError { return bad(this.className, key, this.get(key), want); }
}

/** The activations diffusers' get_activation knows and we implement. */
export const ACTIVATIONS = ['silu', 'swish', 'gelu', 'relu'] as const;
export type ActivationName = (typeof ACTIVATIONS)[number];
