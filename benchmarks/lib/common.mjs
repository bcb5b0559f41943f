// Helpers shared by the model-level benchmarks (unet-cpu.mjs, deepcache.mjs): argument parsing,
// best-of-k timing, fixture paths, the benchmark model configs, conditioning inputs built from a
// U-Net's config, FLOP counting by forward hooks, and the optional PyTorch/diffusers peer.
// Kept as plain ESM over the BUILT packages so the scripts measure what users run.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import os from 'node:os';
import * as core from '@qdm/core';

export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const fixturesRoot = process.env.QDM_FIXTURES ?? resolve(repoRoot, '../shared/fixtures');

export function parseArgs(argv = process.argv.slice(2)) {
  const value = (name) => (argv.includes(name) ? argv[argv.indexOf(name) + 1] : null);
  return { quick: argv.includes('--quick'), json: value('--json'), value, has: (n) => argv.includes(n) };
}

/** Load average and CPU line: the shared machine's state at the time of the run. */
export function loadAverage() {
  return existsSync('/proc/loadavg') ? readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ') : os.loadavg().map((x) => x.toFixed(2)).join(' ');
}
export function machineLine() {
  return `CPU: ${os.cpus()[0]?.model ?? 'unknown'}, ${os.cpus().length} logical cores, qdm threads ${core.getNumThreads()}; load average ${loadAverage()} (1/5/15 min); Node ${process.version}`;
}

/**
 * Best wall-clock seconds of fn after `warmup` calls: at least `minRuns` timed calls, more while
 * the time budget lasts (the best call is the one least disturbed by other processes).
 */
export function timeBest(fn, { warmup = 1, minRuns = 3, seconds = 2, maxRuns = 50 } = {}) {
  for (let i = 0; i < warmup; ++i) fn();
  let best = Infinity, spent = 0, n = 0;
  const times = [];
  while (n < minRuns || (spent < seconds && n < maxRuns)) {
    const t0 = process.hrtime.bigint();
    fn();
    const dt = Number(process.hrtime.bigint() - t0) * 1e-9;
    times.push(dt); best = Math.min(best, dt); spent += dt; ++n;
  }
  times.sort((a, b) => a - b);
  return { best, median: times[Math.floor(times.length / 2)], runs: n };
}

export function paramCount(model) {
  let n = 0;
  for (const p of model.parameters()) n += p.shape.reduce((a, b) => a * b, 1);
  return n;
}

export function readJson(path) { return JSON.parse(readFileSync(path, 'utf8')); }

/** Fixture model folders (unet/<name>), or null with a reason when the fixtures are absent. */
export function fixtureModelDirs() {
  const dir = join(fixturesRoot, 'unet');
  if (!existsSync(dir)) return { dirs: [], reason: `fixtures not found at ${dir} (set QDM_FIXTURES)` };
  const dirs = readdirSync(dir).filter((d) => existsSync(join(dir, d, 'config.json'))).sort().map((d) => join(dir, d));
  return { dirs, reason: dirs.length ? null : `no model folders in ${dir}` };
}

/** The keys file's diffusers config (unet-keys/<name>.json), or null when absent. */
export function keysConfig(name) {
  const p = join(fixturesRoot, 'unet-keys', `${name}.json`);
  if (!existsSync(p)) return null;
  const { config, class: cls } = readJson(p);
  const c = Object.fromEntries(Object.entries(config).filter(([k]) => !k.startsWith('_')));
  return { _class_name: cls ?? config._class_name, ...c };
}

/** The DDPM CIFAR-10 U-Net (35.7 M parameters, 32x32 RGB). */
export function cifarConfig() {
  const c = keysConfig('ddpm-cifar10-32');
  return c && { ...c, _class_name: 'UNet2DModel' };
}

/** SD-1.5's U-Net at half width for CPU: blocks [160, 320, 640, 640], cross-attention 768, 32x32 latents. */
export function sdShapedConfig() {
  const c = keysConfig('sd15');
  return c && { ...c, _class_name: 'UNet2DConditionModel', block_out_channels: [160, 320, 640, 640], cross_attention_dim: 768, sample_size: 32 };
}

export const TEXT_TOKENS = 77;

/** SD-1.5's DDIM scheduler settings. */
export const SD15_DDIM = {
  _class_name: 'DDIMScheduler', num_train_timesteps: 1000, beta_schedule: 'scaled_linear', beta_start: 0.00085, beta_end: 0.012,
  steps_offset: 1, set_alpha_to_one: false, clip_sample: false, prediction_type: 'epsilon',
};

export function sampleShapeOf(config) {
  const s = Array.isArray(config.sample_size) ? config.sample_size : [config.sample_size ?? 64, config.sample_size ?? 64];
  return [config.in_channels ?? 4, s[0], s[1]];
}

/**
 * Conditioning a U-Net's config asks for, random but seeded: text embeddings (77 tokens, or 8 for
 * tiny fixture models), class labels, LCM's timestep_cond, SDXL's text_embeds/time_ids.
 */
export function conditioningFor(config, batch, seed = 7) {
  const cond = {};
  if (config.cross_attention_dim) {
    const tokens = config.cross_attention_dim >= 512 ? TEXT_TOKENS : 8;
    cond.encoderHiddenStates = core.randn([batch, tokens, config.cross_attention_dim], { seed });
  }
  if (config.num_class_embeds) cond.classLabels = core.tensor(Array.from({ length: batch }, (_, i) => i % config.num_class_embeds), { dtype: 'i64' });
  if (config.time_cond_proj_dim) cond.timestepCond = core.randn([batch, config.time_cond_proj_dim], { seed: seed + 1 });
  if (config.addition_embed_type === 'text_time') {
    const textDim = config.projection_class_embeddings_input_dim - 6 * config.addition_time_embed_dim;
    cond.addedCondKwargs = { textEmbeds: core.randn([batch, textDim], { seed: seed + 2 }), timeIds: core.tensor(Array.from({ length: batch }, () => [64, 64, 0, 0, 64, 64]).flat(), { shape: [batch, 6] }) };
  }
  return cond;
}

export function disposeCond(cond) {
  for (const v of Object.values(cond)) {
    if (v instanceof core.Tensor) v.dispose();
    else if (v && typeof v === 'object') disposeCond(v);
  }
}

/**
 * Counts the FLOPs of every executed convolution, linear layer and attention (2 per multiply-add;
 * attention as its two matrix products, 4 * B * heads * Lq * Lk * dimHead) through forward hooks
 * on the leaf modules. A module replaced by a cached output never calls its children, so only
 * work actually done is counted. Elementwise work and norms are left out (a few % of a U-Net).
 */
export function installFlopCounter(model) {
  const numel = (s) => s.reduce((a, b) => a * b, 1);
  let flops = 0;
  const removers = [];
  for (const [, m] of model.namedModules()) {
    if (m instanceof core.nn.Conv2d || m instanceof core.nn.Linear) {
      removers.push(m.registerForwardHook((mod, _args, out) => {
        const w = mod.weight.shape;
        flops += 2 * numel(out.shape) * (w.length === 4 ? w[1] * w[2] * w[3] : w[1]);
        return undefined;
      }));
    } else if (m instanceof core.Attention) {
      removers.push(m.registerForwardHook((mod, args) => {
        const h = args[0], e = args[1] ?? h;
        flops += 4 * h.shape[0] * mod.heads * h.shape[1] * e.shape[1] * mod.dimHead;
        return undefined;
      }));
    }
  }
  return { get flops() { return flops; }, reset() { flops = 0; }, remove() { for (const r of removers) r(); } };
}

/** Whether `python3 -c "import <modules>"` works (PyTorch and friends as a peer). */
export function pythonHas(...modules) {
  const r = spawnSync('python3', ['-c', modules.map((m) => `import ${m}`).join('; ')], { encoding: 'utf8' });
  return r.status === 0;
}

/** Runs a Python script with a JSON argument; the last stdout line is its JSON answer. */
export function runPython(script, arg, timeoutMs = 600_000) {
  const r = spawnSync('python3', ['-c', script, JSON.stringify(arg)], { encoding: 'utf8', maxBuffer: 1 << 22, timeout: timeoutMs });
  if (r.status !== 0) return { error: (r.stderr || r.error?.message || 'failed').trim().split('\n').pop() };
  try { return JSON.parse(r.stdout.trim().split('\n').pop()); } catch { return { error: 'unreadable output' }; }
}

export const mb = (bytes) => (bytes / 2 ** 20).toFixed(0);
export const fmtParams = (n) => (n >= 1e6 ? `${(n / 1e6).toFixed(1)} M` : `${(n / 1e3).toFixed(1)} k`);

/**
 * A workspace package's built entry: the bare name when this package lists it, else its dist
 * folder (benchmarks/package.json only depends on core and native, and the real path keeps one
 * @qdm/core instance either way, since every package's link resolves to packages/core).
 */
export async function importWorkspace(name) {
  try { return await import(name); } catch (e) {
    if (e?.code !== 'ERR_MODULE_NOT_FOUND') throw e;
    const dist = join(repoRoot, 'packages', name.replace('@qdm/', ''), 'dist', 'index.js');
    if (!existsSync(dist)) throw new Error(`${name} is not built (${dist} missing): run pnpm -w run build`);
    return import(dist);
  }
}

// The full-size configs, for machines without shared/fixtures (the GPU machine): the values of
// unet-keys/sd15.json and unet-keys/ddpm-cifar10-32.json that decide the architecture.
export const SD15_CONFIG = {
  _class_name: 'UNet2DConditionModel', sample_size: 64, in_channels: 4, out_channels: 4, flip_sin_to_cos: true, freq_shift: 0,
  down_block_types: ['CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'DownBlock2D'],
  mid_block_type: 'UNetMidBlock2DCrossAttn', up_block_types: ['UpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D'],
  block_out_channels: [320, 640, 1280, 1280], layers_per_block: 2, downsample_padding: 1, mid_block_scale_factor: 1, act_fn: 'silu',
  norm_num_groups: 32, norm_eps: 1e-5, cross_attention_dim: 768, attention_head_dim: 8, use_linear_projection: false,
};
export const CIFAR_CONFIG = {
  _class_name: 'UNet2DModel', sample_size: 32, in_channels: 3, out_channels: 3, time_embedding_type: 'positional', freq_shift: 1, flip_sin_to_cos: false,
  down_block_types: ['DownBlock2D', 'AttnDownBlock2D', 'DownBlock2D', 'DownBlock2D'], mid_block_type: 'UNetMidBlock2D',
  up_block_types: ['UpBlock2D', 'UpBlock2D', 'AttnUpBlock2D', 'UpBlock2D'], block_out_channels: [128, 256, 256, 256], layers_per_block: 2,
  mid_block_scale_factor: 1, downsample_padding: 0, act_fn: 'silu', attention_head_dim: null, norm_num_groups: 32, norm_eps: 1e-6, add_attention: true,
};

/**
 * GPU timing: median seconds of one call, from `reps` calls captured into one CUDA graph (no JS
 * dispatch inside the measurement, like a peer's back-to-back launches), replayed `replays`
 * times. One eager call first does the one-off setup (kernel attributes, allocator warm-up).
 */
export function gpuTimeCall(call, { reps, replays }) {
  call();
  const g = core.captureGraph(() => { for (let i = 0; i < reps; ++i) call(); return []; });
  g.replay(); core.cudaSynchronize();
  const times = [];
  for (let r = 0; r < replays; ++r) {
    const t0 = process.hrtime.bigint();
    g.replay(); core.cudaSynchronize();
    times.push(Number(process.hrtime.bigint() - t0) * 1e-9 / reps);
  }
  g.dispose();
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)];
}
