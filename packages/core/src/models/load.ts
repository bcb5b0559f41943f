// Model folders in diffusers' layout: config.json plus diffusion_pytorch_model[.variant].safetensors,
// or shards listed in diffusion_pytorch_model[.variant].safetensors.index.json. Models are built
// with shapes only and then adopt the file's tensors, so a checkpoint is read once, tensor by
// tensor, and never held twice in memory.
import { existsSync, mkdirSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { ArgumentError, QdmError, StateDictError } from '../errors.js';
import { byteSize, type DType } from '../dtype.js';
import type { Device } from '../memory.js';
import { withMetaTensors } from '../memory.js';
import type { Module } from '../nn/module.js';
import type { Tensor } from '../tensor.js';
import { noGrad } from '../autograd.js';
import { cast, to } from '../ops/shape.js';
import { readSafetensorsHeader, readSafetensorsTensor, saveSafetensors } from '../io/safetensors.js';
import { writeFileAtomic } from '../io/atomic.js';

import { UNet2DModel } from './unet-2d.js';
import { UNet2DConditionModel } from './unet-2d-condition.js';
import { AutoencoderKL } from './autoencoder-kl.js';

const WEIGHTS = 'diffusion_pytorch_model';

/** A model class that can be built from a diffusers config. */
export type ModelFactory = (config: Record<string, unknown>) => Module & { config: Record<string, unknown> };
const registry = new Map<string, ModelFactory>();

/** Makes `_class_name` loadable by loadModel (the built-in models register themselves). */
export function registerModelClass(className: string, factory: ModelFactory): void { registry.set(className, factory); }
export function registeredModelClasses(): string[] { return [...registry.keys()].sort(); }
registerModelClass('UNet2DModel', (c) => new UNet2DModel(c));
registerModelClass('UNet2DConditionModel', (c) => new UNet2DConditionModel(c));
registerModelClass('AutoencoderKL', (c) => new AutoencoderKL(c));

export interface LoadModelOptions {
  device?: Device;
  /** dtype of floating-point weights in memory (default: f32). */
  dtype?: DType;
  /** Weights file variant, e.g. 'fp16' for diffusion_pytorch_model.fp16.safetensors. */
  variant?: string;
}

function readJson(path: string, what: string): Record<string, unknown> {
  if (!existsSync(path)) throw new QdmError('QDM_IO', `${what} not found: ${path}`);
  try {
    const v = JSON.parse(readFileSync(path, 'utf8'));
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error('not a JSON object');
    return v as Record<string, unknown>;
  } catch (e) {
    throw new QdmError('QDM_IO', `${what} ${path} is not valid JSON: ${(e as Error).message}`);
  }
}

/** The safetensors files holding the model's weights, and which tensor lives in which file. */
function weightFiles(dir: string, variant?: string): string[] {
  const stem = variant ? `${WEIGHTS}.${variant}` : WEIGHTS;
  const single = join(dir, `${stem}.safetensors`);
  if (existsSync(single)) return [single];
  const index = join(dir, `${stem}.safetensors.index.json`);
  if (existsSync(index)) {
    const map = readJson(index, 'shard index').weight_map;
    if (typeof map !== 'object' || map === null) throw new QdmError('QDM_IO', `shard index ${index} has no weight_map`);
    const files = [...new Set(Object.values(map as Record<string, string>))].sort();
    for (const f of files) if (!existsSync(join(dir, f))) throw new QdmError('QDM_IO', `shard ${f} listed in ${index} is missing`);
    return files.map((f) => join(dir, f));
  }
  const present = existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith('.safetensors') || f.endsWith('.index.json')) : [];
  throw new QdmError('QDM_IO', `no ${stem}.safetensors (or sharded index) in ${dir}${present.length ? `; found: ${present.join(', ')}${variant ? '' : ' (pass variant to pick one)'}` : ''}`);
}

/** Builds a model from its config (without weights: parameters are initialised). */
export function modelFromConfig(config: Record<string, unknown>): Module & { config: Record<string, unknown> } {
  const name = String(config._class_name ?? '');
  const factory = registry.get(name);
  if (!factory) throw new ArgumentError(`unknown model class '${name}' in config (supported: ${registeredModelClasses().join(', ')})`);
  return factory(config);
}

/** Loads a diffusers model folder. Unknown, missing or mis-shaped keys are reported by name. */
export async function loadModel(dir: string, opts: LoadModelOptions = {}): Promise<Module & { config: Record<string, unknown> }> {
  const config = readJson(join(dir, 'config.json'), 'model config');
  const files = weightFiles(dir, opts.variant);
  const model = withMetaTensors(() => modelFromConfig(config));
  const dtype = opts.dtype ?? 'f32';
  const device = opts.device ?? 'cpu';
  const weights = new Map<string, Tensor>();
  try {
    noGrad(() => {
      for (const file of files) {
        const header = readSafetensorsHeader(file);
        for (const name of header.entries.keys()) {
          let t = readSafetensorsTensor(header, name);
          if (['f32', 'f16', 'bf16'].includes(t.dtype) && t.dtype !== dtype) { const c = cast(t, dtype); t.dispose(); t = c; }
          if (t.device !== device) { const m = to(t, device); t.dispose(); t = m; }
          weights.set(name, t);
        }
      }
    });
    model.loadStateDict(weights, { strict: true, assign: true });
  } catch (e) {
    for (const t of weights.values()) t.dispose();
    if (e instanceof StateDictError) throw new StateDictError(`${dir}: ${e.message}`, { missing: e.missing, unexpected: e.unexpected, mismatched: e.mismatched });
    throw e;
  }
  for (const t of weights.values()) t.dispose();  // the model holds its own references
  return model.eval();
}

export interface SaveModelOptions {
  /** Writes diffusion_pytorch_model.<variant>.safetensors; 'fp16' also stores weights as f16 by default. */
  variant?: string;
  /** dtype of floating-point weights on disk (default: f16 for the fp16 variant, else as in memory). */
  dtype?: DType;
  /** Shard the weights above this many bytes (diffusers' default is 10 GB). */
  maxShardBytes?: number;
}

/** Writes a model folder that loadModel (and diffusers) can read. Every file is written atomically. */
export async function saveModel(model: Module & { config: Record<string, unknown> }, dir: string, opts: SaveModelOptions = {}): Promise<void> {
  mkdirSync(dir, { recursive: true });
  const dtype = opts.dtype ?? (opts.variant === 'fp16' ? 'f16' : undefined);
  const stem = opts.variant ? `${WEIGHTS}.${opts.variant}` : WEIGHTS;
  const maxShard = opts.maxShardBytes ?? 10e9;
  writeFileAtomic(join(dir, 'config.json'), JSON.stringify(model.config, null, 2) + '\n');
  noGrad(() => {
    const own = model.stateDict();
    const entries = [...own].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    const shards: Array<Array<[string, Tensor]>> = [[]];
    let size = 0, total = 0;
    for (const [k, t] of entries) {
      const v = dtype && ['f32', 'f16', 'bf16'].includes(t.dtype) ? cast(t, dtype) : t;
      const bytes = byteSize(v.dtype, v.numel);
      if (size + bytes > maxShard && shards[shards.length - 1]!.length) { shards.push([]); size = 0; }
      shards[shards.length - 1]!.push([k, v]);
      size += bytes; total += bytes;
    }
    const meta = { format: 'pt' };
    if (shards.length === 1) {
      saveSafetensors(join(dir, `${stem}.safetensors`), new Map(shards[0]), meta);
    } else {
      const weightMap: Record<string, string> = {};
      shards.forEach((shard, i) => {
        const name = `${stem}-${String(i + 1).padStart(5, '0')}-of-${String(shards.length).padStart(5, '0')}.safetensors`;
        saveSafetensors(join(dir, name), new Map(shard), meta);
        for (const [k] of shard) weightMap[k] = name;
      });
      writeFileAtomic(join(dir, `${stem}.safetensors.index.json`), JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }, null, 2) + '\n');
    }
    for (const shard of shards) for (const [k, v] of shard) if (v !== own.get(k)) v.dispose();
  });
}
