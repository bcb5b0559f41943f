// Whole U-Net forwards on the GPU, beside PyTorch on the same GPU in the same run
// (benchmarks/gpu/peer_unet.py builds the same architectures in plain PyTorch from the same
// diffusers configs; diffusers is not installed on the GPU machine):
// - a Stable Diffusion 1.5-shaped U-Net (config of shared/fixtures/unet-keys/sd15.json, random
//   weights), 64x64 latents, batch 2, fp16, 77-token text states: one forward eager, and
//   replayed as a CUDA graph;
// - the DDPM CIFAR-10 U-Net at batch 64, fp16, eager and graph-replayed.
// Target (issue): our graph-replayed forward no slower than PyTorch's graph-replayed forward.
// Each model also runs W8A8 on the integer kernels (@qdm/quant: per-channel symmetric 8-bit
// weights, per-tensor 8-bit activations calibrated (min-max) on the CPU with one forward of the
// same inputs, then toIntegerExecution on the GPU: int8 GEMM for linears, im2row of codes + int8
// GEMM for convs), timed beside our fp16 forward with the weight bytes of both (quant 'W8A8 int').
//   node benchmarks/gpu-unet.mjs [--quick] [--json out.json] [--no-peer] [--peer-json peer.json] [--no-quant]
// The timestep is a device tensor, so the graph takes it as an input (models/embeddings.ts).
// Exits 0 with a skip line when there is no CUDA device.
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as core from '@qdm/core';
import * as L from './lib/common.mjs';

const args = L.parseArgs();
const why = typeof core.captureGraph === 'function' ? core.cudaUnavailableReason() : 'the built @qdm/core has no CUDA backend (rebuild the packages)';
if (why !== null) {
  console.log(`gpu-unet: skipped (no CUDA device: ${why})`);
  process.exit(0);
}
const REPS = args.quick ? 5 : 20;

const CASES = [
  { name: 'SD 1.5-shaped U-Net', config: L.keysConfig('sd15') ?? L.SD15_CONFIG, batch: 2 },
  { name: 'DDPM CIFAR-10 U-Net', config: L.cifarConfig() ?? L.CIFAR_CONFIG, batch: 64 },
];

const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]; };

function timeMs(fn) {
  fn(); fn(); core.cudaSynchronize();
  const ts = [];
  for (let i = 0; i < REPS; ++i) {
    const t0 = process.hrtime.bigint();
    fn(); core.cudaSynchronize();
    ts.push(Number(process.hrtime.bigint() - t0) * 1e-6);
  }
  return median(ts);
}

/** The model's inputs on `device` in `dtype` (the same seeds for both precisions). */
function inputsOf(c, device, dtype) {
  const shape = L.sampleShapeOf(c.config);
  const x = core.cast(core.randn([c.batch, ...shape], { seed: 1 }), dtype).to(device);
  const t = core.tensor(Array.from({ length: c.batch }, () => 500), { dtype: 'i64' }).to(device);
  const cond = {};
  if (c.config.cross_attention_dim) cond.encoderHiddenStates = core.cast(core.randn([c.batch, L.TEXT_TOKENS, c.config.cross_attention_dim], { seed: 2 }), dtype).to(device);
  return { x, t, cond };
}

/** W8A8 PTQ on the CPU (f32, one calibration forward), then fp16 on the GPU with integer execution. */
async function quantizedUNet(c) {
  const { quantize, toIntegerExecution } = await L.importWorkspace('@qdm/quant');
  const unet = core.modelFromConfig(c.config);
  unet.eval();
  const cal = inputsOf(c, 'cpu', 'f32');
  await quantize(unet, { weights: { bits: 8, granularity: 'channel', symmetric: true }, activations: { bits: 8, granularity: 'tensor' }, calibrator: 'minmax' },
    { calibration: [[cal.x, cal.t, cal.cond]] });
  cal.x.dispose(); cal.t.dispose(); L.disposeCond(cal.cond);
  unet.to({ device: 'cuda', dtype: 'f16' });
  const report = toIntegerExecution(unet);
  return { unet, report };
}

async function ours(c, quant) {
  let unet, report = null;
  if (quant) ({ unet, report } = await quantizedUNet(c));
  else { unet = core.modelFromConfig(c.config); unet.eval(); unet.to({ device: 'cuda', dtype: 'f16' }); }
  const { x, t, cond } = inputsOf(c, 'cuda', 'f16');
  const fwd = () => core.noGrad(() => core.tidy(() => { unet.call(x, t, cond); }));
  const row = { name: c.name, quant: quant ? 'W8A8 int' : 'fp16', batch: c.batch, params: L.paramCount(unet) };
  if (report) {
    row.integerLayers = `${report.integer.length}/${report.integer.length + report.fakeQuant.length}`;
    row.weightMB = { fp16: report.weightBytes.float / 2 ** 20, packed: report.weightBytes.packed / 2 ** 20 };
  }
  core.resetPeakMemory('cuda');
  try {
    row.eagerMs = timeMs(fwd);
    const g = core.captureGraph(() => unet.call(x, t, cond));
    row.graphMs = timeMs(() => g.replay());
    g.dispose();
    row.peakMB = core.cudaMemoryStats().peakBytes / 2 ** 20;
  } catch (e) {
    row.reason = `${e?.code ?? 'error'}: ${String(e?.message ?? e).slice(0, 160)}`;
  }
  x.dispose(); t.dispose(); L.disposeCond(cond);
  core.cudaEmptyCache();
  return row;
}

function peer() {
  const file = args.value('--peer-json');
  if (file) return JSON.parse(readFileSync(file, 'utf8'));
  if (args.has('--no-peer')) return null;
  const spec = { reps: REPS, cases: CASES.map((c) => ({ name: c.name, config: c.config, batch: c.batch, dtype: 'float16' })) };
  const r = spawnSync('python3', [join(L.repoRoot, 'benchmarks/gpu/peer_unet.py'), JSON.stringify(spec)], { encoding: 'utf8', maxBuffer: 1 << 22, timeout: 900_000 });
  if (r.status !== 0) { console.log(`peer unavailable: ${(r.stderr || r.error?.message || '').trim().split('\n').pop()}`); return null; }
  return JSON.parse(r.stdout.trim().split('\n').pop());
}

const info = core.cudaDeviceInfo();
console.log(`device: ${info.name} (sm_${info.capability}, ${info.smCount} SMs)`);
const rows = [];
for (const c of CASES) {
  rows.push(await ours(c, false));
  if (!args.has('--no-quant')) {
    try { rows.push(await ours(c, true)); } catch (e) { rows.push({ name: c.name, quant: 'W8A8 int', batch: c.batch, reason: `${e?.code ?? 'error'}: ${String(e?.message ?? e).slice(0, 200)}` }); }
  }
}
const p = peer();
if (p) console.log(`peer: PyTorch ${p.torch} on ${p.device}`);
const f = (v) => (v === undefined ? 'n/a' : v.toFixed(2));
console.log('| model | batch | params (ours / torch) | ours eager ms | ours graph ms | torch eager ms | torch graph ms | graph: torch / ours |');
console.log('| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |');
for (const r of rows.filter((x) => x.quant === 'fp16')) {
  const pr = p?.results.find((x) => x.name === r.name);
  r.peer = pr ?? null;
  const ratio = r.graphMs && pr?.graph_ms ? (pr.graph_ms / r.graphMs).toFixed(2) : 'n/a';
  console.log(`| ${r.name} | ${r.batch} | ${L.fmtParams(r.params)} / ${pr ? L.fmtParams(pr.params) : 'n/a'} | ${f(r.eagerMs)} | ${f(r.graphMs)} | ${f(pr?.eager_ms)} | ${f(pr?.graph_ms)} | ${ratio} |${r.reason ? ` ${r.reason}` : ''}`);
}
console.log('');
console.log('| model | batch | integer layers | fp16 eager ms | W8A8 int eager ms | fp16 graph ms | W8A8 int graph ms | graph: fp16 / W8A8 | weight MiB fp16 / packed |');
console.log('| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- |');
for (const q of rows.filter((x) => x.quant === 'W8A8 int')) {
  const fp = rows.find((x) => x.quant === 'fp16' && x.name === q.name);
  const ratio = q.graphMs && fp?.graphMs ? (fp.graphMs / q.graphMs).toFixed(2) : 'n/a';
  const mem = q.weightMB ? `${q.weightMB.fp16.toFixed(0)} / ${q.weightMB.packed.toFixed(0)}` : 'n/a';
  console.log(`| ${q.name} | ${q.batch} | ${q.integerLayers ?? 'n/a'} | ${f(fp?.eagerMs)} | ${f(q.eagerMs)} | ${f(fp?.graphMs)} | ${f(q.graphMs)} | ${ratio} | ${mem} |${q.reason ? ` ${q.reason}` : ''}`);
}
if (args.json) writeFileSync(args.json, JSON.stringify({ device: info, peer: p ? { torch: p.torch, device: p.device } : null, rows }, null, 2));
