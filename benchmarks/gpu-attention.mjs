// Fused attention (attentionForward, native/src/cuda/attention.cu) at Stable Diffusion 1.5's
// attention shapes, beside PyTorch's fused scaled_dot_product_attention measured in the same run
// by benchmarks/gpu/peer_attention.py: TFLOP/s (4 B H Lq Lk D per call: the two products) and
// the ratio ours / PyTorch. Target (issue): 80 % of PyTorch's fused attention.
//   node benchmarks/gpu-attention.mjs [--quick] [--json out.json] [--no-peer] [--peer-json peer.json]
// Shapes (batch 2 x 8 heads, as classifier-free guidance runs the U-Net): self-attention at the
// 64x64 latent level (L 4096, D 40), 32x32 (1024, 80), 16x16 (256, 160), 8x8 (64, 160), and
// cross-attention against the 77 text tokens at each level. Operands are contiguous
// [B*H, L, D] in fp16 / bf16, no mask. Timing: `reps` calls captured into one CUDA graph,
// replayed several times; the median replay / reps. Exits 0 with a skip line without a GPU.
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import * as core from '@qdm/core';
import * as L from './lib/common.mjs';

const args = L.parseArgs();
const why = typeof core.cudaUnavailableReason === 'function' && typeof core.captureGraph === 'function'
  ? core.cudaUnavailableReason()
  : 'the built @qdm/core has no CUDA backend (rebuild the packages)';
if (why !== null) {
  console.log(`gpu-attention: skipped (no CUDA device: ${why})`);
  process.exit(0);
}
const cuda = createRequire(import.meta.url)('@qdm/native').cuda;
const info = cuda.deviceInfo();

const SHAPES = [  // B, H, Lq, Lk, D
  [2, 8, 4096, 4096, 40], [2, 8, 1024, 1024, 80], [2, 8, 256, 256, 160], [2, 8, 64, 64, 160],
  [2, 8, 4096, 77, 40], [2, 8, 1024, 77, 80], [2, 8, 256, 77, 160],
];
const shapes = args.quick ? SHAPES.slice(0, 3) : SHAPES;
const REPS = args.quick ? 10 : 20, REPLAYS = args.quick ? 5 : 9;
const DTYPES = [['fp16', 'f16'], ['bf16', 'bf16']];

const timeCall = (call) => L.gpuTimeCall(call, { reps: REPS, replays: REPLAYS });
const randn = (shape, dtype, seed) => core.cast(core.randn(shape, { seed }), dtype).to('cuda');

function ours(B, H, Lq, Lk, D) {
  const res = {};
  for (const [key, dt] of DTYPES) {
    const q = randn([B * H, Lq, D], dt, 1), k = randn([B * H, Lk, D], dt, 2), v = randn([B * H, Lk, D], dt, 3);
    const out = core.empty([B * H, Lq, D], dt, 'cuda');
    res[key] = timeCall(() => core.kernel('attentionForward', q, k, v, null, out, 1 / Math.sqrt(D)));
    for (const t of [q, k, v, out]) t.dispose();
  }
  return res;
}

function peer() {
  const file = args.value('--peer-json');
  if (file) return JSON.parse(readFileSync(file, 'utf8').trim().split('\n').pop());
  if (args.has('--no-peer')) return null;
  const script = join(L.repoRoot, 'benchmarks/gpu/peer_attention.py');
  const r = spawnSync(process.env.PYTHON ?? 'python3', [script, JSON.stringify({ shapes, reps: REPS, trials: REPLAYS })], { encoding: 'utf8', maxBuffer: 1 << 24 });
  if (r.status !== 0) { console.log(`peer unavailable: ${(r.stderr || r.error?.message || '').trim().split('\n').pop()}`); return null; }
  return JSON.parse(r.stdout.trim().split('\n').pop());
}

const tflops = (flop, s) => (s ? flop / s / 1e12 : null);
const f = (x, d = 1) => (x == null ? '-' : x.toFixed(d));
const ratio = (a, b) => (a != null && b != null ? `${(100 * a / b).toFixed(0)} %` : '-');

console.log(`gpu-attention on ${info.name} (sm_${info.capability}, ${info.smCount} SMs)`);
const rows = shapes.map(([B, H, Lq, Lk, D]) => ({ B, H, Lq, Lk, D, ours: ours(B, H, Lq, Lk, D) }));
const p = peer();
if (p) console.log(`peer: PyTorch ${p.torch} scaled_dot_product_attention on ${p.device}`);

console.log('\n| B x H x Lq x Lk x D | fp16 ms | fp16 TFLOP/s | PyTorch fp16 | ours/PyTorch | bf16 ms | bf16 TFLOP/s | PyTorch bf16 | ours/PyTorch |');
console.log('| --- | --- | --- | --- | --- | --- | --- | --- | --- |');
for (const r of rows) {
  const { B, H, Lq, Lk, D } = r;
  const pr = p?.attention?.find((x) => x.B === B && x.H === H && x.Lq === Lq && x.Lk === Lk && x.D === D) ?? {};
  const flop = 4 * B * H * Lq * Lk * D;
  r.tflops = Object.fromEntries(DTYPES.map(([key]) => [key, tflops(flop, r.ours[key])]));
  r.peer = pr;
  const cells = DTYPES.map(([key]) => `${f(r.ours[key] * 1e3, 3)} | ${f(r.tflops[key])} | ${f(pr[`${key}_tflops`])} | ${ratio(r.tflops[key], pr[`${key}_tflops`])}`);
  console.log(`| ${B} x ${H} x ${Lq} x ${Lk} x ${D} | ${cells.join(' | ')} |`);
}
console.log('\nTarget (issue): 80 % of PyTorch\'s fused attention or better.');
if (args.json) writeFileSync(args.json, JSON.stringify({ device: info, peer: p ? { torch: p.torch, device: p.device } : null, attention: rows }, null, 2));
