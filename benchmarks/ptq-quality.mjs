// Post-training quantization quality, per sampling step: the relative error of the quantized
// U-Net's output against the full-precision one on the same inputs (the full-precision DDIM
// trajectory, see packages/quant/src/report.ts), for W8A8, W4A8 and W4A4, on the fixture U-Nets
// (random weights, diffusers folders) and on the embedded digits model (trained on real data).
//   node benchmarks/ptq-quality.mjs [--quick] [--json out.json] [--steps N] [--calibrator minmax|mse|percentile] [--models a,b]
// Calibration is data-free (Q-Diffusion): activation ranges from the model's own sampling
// trajectories (seed 1234), evaluated on a different noise seed (99). Weights per output
// channel (min-max), activations per tensor, first and last layer at 8 bits; "temporal" rows
// keep one activation step size per sampling step (EfficientDM's TALSQ initialisation).
import { existsSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import * as core from '@qdm/core';
import * as L from './lib/common.mjs';

const args = L.parseArgs();
const quick = !!args.quick;
const steps = Number(args.value('--steps') ?? (quick ? 10 : 20));
const calibrator = args.value('--calibrator') ?? 'minmax';
const { quantize, stepErrorReport } = await L.importWorkspace('@qdm/quant');
const CALIB_SEED = 1234, EVAL_SEED = 99;

const RECIPES = [
  { name: 'W8A8', weights: 8, acts: 8 },
  { name: 'W8A8 temporal', weights: 8, acts: 8, temporal: true },
  { name: 'W8A8 temporal + attn', weights: 8, acts: 8, temporal: true, attention: true },
  { name: 'W4A8', weights: 4, acts: 8 },
  { name: 'W4A4', weights: 4, acts: 4 },
];

function scenarios() {
  const out = [];
  const { dirs, reason } = L.fixtureModelDirs();
  if (reason) console.log(`# fixture U-Nets skipped: ${reason}`);
  const pick = new Set(['ddpm-tiny', 'class-cond-tiny', 'sd-tiny']);
  for (const dir of dirs) if (pick.has(basename(dir))) out.push({ name: basename(dir), dir, variant: undefined, batch: 4, guidance: 1, sdBetas: !!L.readJson(join(dir, 'config.json')).cross_attention_dim });
  const digits = join(L.repoRoot, 'packages/digits/assets/unet');
  if (existsSync(join(digits, 'config.json'))) out.push({ name: 'digits (trained)', dir: digits, variant: 'fp16', batch: 10, guidance: 1.5, digits: true });
  const only = args.value('--models') ? new Set(String(args.value('--models')).split(',')) : null;
  return only ? out.filter((s) => [...only].some((o) => s.name.startsWith(o))) : out;
}

async function schedulerFor(s) {
  if (s.digits) {
    const base = await core.loadScheduler(join(L.repoRoot, 'packages/digits/assets/scheduler'));
    return core.schedulerFromConfig({ ...base.config, _class_name: 'DDIMScheduler' });
  }
  return core.schedulerFromConfig(s.sdBetas ? L.SD15_DDIM : { _class_name: 'DDIMScheduler', num_train_timesteps: 1000, beta_schedule: 'linear', beta_start: 1e-4, beta_end: 0.02, clip_sample: false });
}

function sampleArgs(s, unet, scheduler, seed) {
  const config = unet.config;
  let cond, uncond;
  if (s.digits) {
    const labels = Array.from({ length: s.batch }, (_, i) => i % 10);
    cond = { classLabels: core.tensor(labels, { dtype: 'i64' }) };
    uncond = { classLabels: core.tensor(labels.map(() => 10), { dtype: 'i64' }) };
  } else {
    cond = L.conditioningFor(config, s.batch, seed + 7);
  }
  return { unet, scheduler: scheduler.clone(), steps, batch: s.batch, seed, guidanceScale: s.guidance, cond, uncond };
}

const rows = [];
console.log(L.machineLine());
for (const s of scenarios()) {
  const scheduler = await schedulerFor(s);
  const reference = await core.loadModel(s.dir, { variant: s.variant, dtype: 'f32' });
  for (const r of RECIPES) {
    const model = await core.loadModel(s.dir, { variant: s.variant, dtype: 'f32' });
    const t0 = Date.now();
    await quantize(model, {
      weights: { bits: r.weights, granularity: 'channel' },
      activations: { bits: r.acts, granularity: 'tensor', ...(r.temporal ? { timestepGroups: steps } : {}) },
      ...(r.attention ? {
        attention: { bits: r.acts, granularity: 'tensor', timestepGroups: steps },
        attentionProbs: { bits: r.acts, granularity: 'tensor', signed: false, timestepGroups: steps },
      } : {}),
      calibrator,
    }, { calibration: (m) => core.sample(sampleArgs(s, m, scheduler, CALIB_SEED)) });
    const calibSeconds = (Date.now() - t0) / 1000;
    const perStep = await stepErrorReport(reference, model, (paired) => core.sample(sampleArgs(s, paired, scheduler, EVAL_SEED)));
    const errs = perStep.filter((e) => e.stepIndex >= 0).map((e) => e.relError);
    const mean = errs.reduce((a, b) => a + b, 0) / errs.length;
    const row = { model: s.name, recipe: r.name, calibrator, steps, mean, first: errs[0], last: errs[errs.length - 1], max: Math.max(...errs), perStep: errs, calibSeconds };
    rows.push(row);
    console.log(`${s.name.padEnd(18)} ${r.name.padEnd(14)} mean ${mean.toFixed(4)}  step0 ${errs[0].toFixed(4)}  last ${errs[errs.length - 1].toFixed(4)}  max ${row.max.toFixed(4)}  (calibration ${calibSeconds.toFixed(1)} s)`);
    console.log(`  per step: ${errs.map((e) => e.toFixed(3)).join(' ')}`);
  }
}
if (!rows.length) console.log('# nothing to measure');
if (args.json) writeFileSync(String(args.json), JSON.stringify({ machine: L.machineLine(), steps, calibrator, rows }, null, 1));
