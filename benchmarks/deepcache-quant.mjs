// DeepCache and W8A8 integer quantization together, on the CPU: do the two speed-ups multiply?
// One sampling run per variant from the same noise (DDIM): full precision; DeepCache N=3 (branch
// 0); W8A8 PTQ on the integer GEMM (@qdm/quant toIntegerExecution; activations calibrated on one
// full-precision trajectory with other noise); and both. Printed: wall time, speed-up over full
// precision, the product of the two single speed-ups (what "multiply" predicts), and the
// quality cost as PSNR of the final samples against the full-precision ones.
//   node benchmarks/deepcache-quant.mjs [--quick] [--json out.json] [--steps N] [--models sd,digits]
// SD: SD-1.5's U-Net at half width (random weights, 32x32 latents, 77x768 random text states,
// guidance 1, batch 1). Digits: the embedded model, labels 0..9, CFG 1.5. The uncached full-precision
// run is timed first and last and the faster counts (the machine is shared).
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as core from '@qdm/core';
import * as L from './lib/common.mjs';

const args = L.parseArgs();
const quick = args.quick;
const { applyCache } = await L.importWorkspace('@qdm/cache');
const { quantize, toIntegerExecution } = await L.importWorkspace('@qdm/quant');
const { mseAndPsnr } = await L.importWorkspace('@qdm/eval');
const wanted = new Set((args.value('--models') ?? 'sd,digits').split(','));
const SEED = 1234, CALIB_SEED = 4321;

async function scenarios() {
  const out = [];
  const sdConfig = L.sdShapedConfig();
  if (wanted.has('sd') && sdConfig) {
    const text = core.randn([1, L.TEXT_TOKENS, 768], { seed: 99 });
    out.push({
      name: 'sd15-half-width', build: () => { core.manualSeed(5); const u = core.modelFromConfig(sdConfig); u.eval(); return u; },
      steps: Number(args.value('--steps') ?? (quick ? 10 : 20)), batch: 1, scheduler: L.SD15_DDIM,
      options: { cond: { encoderHiddenStates: text } },
    });
  } else if (wanted.has('sd')) console.log('# SD-shaped U-Net skipped: unet-keys/sd15.json not found (set QDM_FIXTURES)');
  const digitsDir = join(L.repoRoot, 'packages/digits/assets/unet');
  if (wanted.has('digits') && existsSync(join(digitsDir, 'config.json'))) {
    const own = L.readJson(join(digitsDir, '../scheduler/scheduler_config.json'));
    const labels = core.tensor(Array.from({ length: 10 }, (_, i) => i), { dtype: 'i64' });
    const nulls = core.tensor(new Array(10).fill(10), { dtype: 'i64' });
    out.push({
      name: 'digits', build: async () => { const u = await core.loadModel(digitsDir, { variant: 'fp16' }); u.eval(); return u; },
      steps: Number(args.value('--steps') ?? (quick ? 20 : 50)), batch: 10, scheduler: { ...own, _class_name: 'DDIMScheduler' },
      options: { cond: { classLabels: labels }, uncond: { classLabels: nulls }, guidanceScale: 1.5 },  // the digits model's guidance (DIGITS_GUIDANCE)
    });
  }
  return out;
}

async function run(s, unet, seed = SEED) {
  const t0 = process.hrtime.bigint();
  const r = await core.sample({ unet, scheduler: core.schedulerFromConfig(s.scheduler), steps: s.steps, batch: s.batch, seed, ...s.options });
  return { seconds: Number(process.hrtime.bigint() - t0) * 1e-9, samples: r.samples };
}

async function w8a8(s) {
  const unet = await s.build();
  await quantize(unet, {
    weights: { bits: 8, granularity: 'channel', symmetric: true },
    activations: { bits: 8, granularity: 'tensor' },
    calibrator: 'minmax',
  }, { calibration: (m) => core.sample({ unet: m, scheduler: core.schedulerFromConfig(s.scheduler), steps: s.steps, batch: s.batch, seed: CALIB_SEED, ...s.options }) });
  const rep = toIntegerExecution(unet);
  return { unet, layers: `${rep.integer.length}/${rep.integer.length + rep.fakeQuant.length}` };
}

const rows = [];
console.log(L.machineLine());
for (const s of await scenarios()) {
  const full = await s.build();
  await run(s, full);  // warm-up (thread pool, first-call allocations)
  const ref1 = await run(s, full);
  const dcHandle = applyCache(full, { interval: 3, branch: 0 });
  const dc = await run(s, full);
  dcHandle.remove();
  const q = await w8a8(s);
  const qRun = await run(s, q.unet);
  const qcHandle = applyCache(q.unet, { interval: 3, branch: 0 });
  const qc = await run(s, q.unet);
  qcHandle.remove();
  const ref2 = await run(s, full);
  const ref = ref1.seconds <= ref2.seconds ? ref1 : ref2;
  const psnr = (x) => mseAndPsnr(x.samples.data(), ref.samples.data(), 2).psnr;
  const sDc = ref.seconds / dc.seconds, sQ = ref.seconds / qRun.seconds, sQc = ref.seconds / qc.seconds;
  const row = {
    model: s.name, steps: s.steps, integerLayers: q.layers,
    fullSeconds: ref.seconds, deepcache: { seconds: dc.seconds, speedup: sDc, psnr: psnr(dc) },
    w8a8: { seconds: qRun.seconds, speedup: sQ, psnr: psnr(qRun) },
    both: { seconds: qc.seconds, speedup: sQc, psnr: psnr(qc), predicted: sDc * sQ },
  };
  rows.push(row);
  console.log(`\n## ${s.name}, DDIM ${s.steps} steps, batch ${s.batch} (W8A8: ${q.layers} layers on the integer GEMM)\n`);
  console.log('| variant | seconds | speed-up | PSNR vs full (dB) |');
  console.log('| --- | ---: | ---: | ---: |');
  console.log(`| full precision | ${ref.seconds.toFixed(2)} | 1.00 | - |`);
  console.log(`| DeepCache N=3 | ${dc.seconds.toFixed(2)} | ${sDc.toFixed(2)} | ${row.deepcache.psnr.toFixed(1)} |`);
  console.log(`| W8A8 integer | ${qRun.seconds.toFixed(2)} | ${sQ.toFixed(2)} | ${row.w8a8.psnr.toFixed(1)} |`);
  console.log(`| W8A8 integer + DeepCache N=3 | ${qc.seconds.toFixed(2)} | ${sQc.toFixed(2)} (product of the two: ${(sDc * sQ).toFixed(2)}) | ${row.both.psnr.toFixed(1)} |`);
}
console.log(`\nload average at end: ${L.loadAverage()}`);
if (args.json) writeFileSync(args.json, JSON.stringify({ machine: L.machineLine(), rows }, null, 2));
