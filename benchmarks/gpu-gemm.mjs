// Tensor-core GEMM and implicit-GEMM conv2d on the GPU at U-Net shapes: ours (fp16, bf16, and
// f32 through TF32) beside PyTorch's cuBLAS / cuDNN measured in the same run by
// benchmarks/gpu/peer_gemm.py, in TFLOP/s (2 M N K per matmul; 2 N O OH OW C k k per conv) with
// the ratio ours / PyTorch. Target (issue): within 80 % of cuBLAS.
//   node benchmarks/gpu-gemm.mjs [--quick] [--json out.json] [--no-peer] [--peer-json peer.json]
// --peer-json reads the peer's output from a file (a runner that ran peer_gemm.py itself);
// otherwise the peer is spawned here. matmul operands: A [M, K] row-major times W^T with W
// [N, K] (a linear layer's layout; both operands K-contiguous). conv: NCHW 3x3, padding 1, with
// bias, fp16/bf16 output. Timing: `reps` calls captured into one CUDA graph (no JS dispatch in
// the measurement, like the peer's back-to-back launches), replayed several times; the median
// replay / reps. Exits 0 with a skip line when there is no CUDA device.
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
  console.log(`gpu-gemm: skipped (no CUDA device: ${why})`);
  process.exit(0);
}
const cuda = createRequire(import.meta.url)('@qdm/native').cuda;
const info = cuda.deviceInfo();

const MATMUL = [  // M x N x K
  [8192, 1280, 1280], [32768, 1280, 320], [32768, 320, 320], [4096, 10240, 1280], [8192, 8192, 8192],
];
const CONV = [  // N, C, H, W, O, k: the SD U-Net's 3x3 convolutions at batch 2
  [2, 320, 64, 64, 320, 3], [2, 640, 32, 32, 640, 3], [2, 1280, 16, 16, 1280, 3],
];
const matmuls = args.quick ? MATMUL.slice(0, 3) : MATMUL;
const convs = args.quick ? CONV.slice(0, 1) : CONV;
const REPS = args.quick ? 10 : 20, REPLAYS = args.quick ? 5 : 9;
const DTYPES = [['fp16', 'f16'], ['bf16', 'bf16'], ['tf32', 'f32']];

const timeCall = (call) => L.gpuTimeCall(call, { reps: REPS, replays: REPLAYS });
const randn = (shape, dtype, seed, scale = 1) => core.cast(core.mul(core.randn(shape, { seed }), scale), dtype).to('cuda');

function oursMatmul(M, N, K) {
  const res = {};
  for (const [key, dt] of DTYPES) {
    const a = randn([1, M, K], dt, 1), w = randn([1, N, K], dt, 2, 0.05);
    const wt = core.transpose(w, 1, 2);  // [1, K, N] view, K-contiguous
    const out = core.empty([1, M, N], dt, 'cuda');
    res[key] = timeCall(() => core.kernel('matmul', a, wt, out, 1, 0));
    for (const t of [a, w, out]) t.dispose();
  }
  return res;
}
function oursConv(N, C, H, W, O, k) {
  const res = {};
  for (const [key, dt] of DTYPES.slice(0, 2)) {
    const x = randn([N, C, H, W], dt, 3), w = randn([O, C, k, k], dt, 4, 0.05), b = randn([O], dt, 5);
    const y = core.empty([N, O, H, W], dt, 'cuda');
    const p = Math.floor(k / 2);
    res[key] = timeCall(() => core.kernel('conv2dForward', x, w, b, y, 1, 1, p, p, 1, 1, 1));
    for (const t of [x, w, b, y]) t.dispose();
  }
  return res;
}

function peer() {
  const file = args.value('--peer-json');
  if (file) return JSON.parse(readFileSync(file, 'utf8').trim().split('\n').pop());
  if (args.has('--no-peer')) return null;
  const script = join(L.repoRoot, 'benchmarks/gpu/peer_gemm.py');
  const r = spawnSync(process.env.PYTHON ?? 'python3', [script, JSON.stringify({ matmul: matmuls, conv: convs, reps: REPS, trials: REPLAYS })], { encoding: 'utf8', maxBuffer: 1 << 24 });
  if (r.status !== 0) { console.log(`peer unavailable: ${(r.stderr || r.error?.message || '').trim().split('\n').pop()}`); return null; }
  return JSON.parse(r.stdout.trim().split('\n').pop());
}

const tflops = (flop, s) => (s ? flop / s / 1e12 : null);
const f = (x, d = 0) => (x == null ? '-' : x.toFixed(d));
const ratio = (a, b) => (a != null && b != null ? `${(100 * a / b).toFixed(0)} %` : '-');

console.log(`gpu-gemm on ${info.name} (sm_${info.capability}, ${info.smCount} SMs); kernel ${JSON.stringify(cuda.gemmKernelInfo())}`);
const mmRows = matmuls.map(([M, N, K]) => ({ M, N, K, ours: oursMatmul(M, N, K) }));
const convRows = convs.map(([N, C, H, W, O, k]) => ({ N, C, H, W, O, k, ours: oursConv(N, C, H, W, O, k) }));
const p = peer();
if (p) console.log(`peer: PyTorch ${p.torch} on ${p.device}`);

console.log('\n| matmul M x N x K | fp16 TFLOP/s | cuBLAS fp16 | ours/cuBLAS | bf16 | cuBLAS bf16 | ours/cuBLAS | tf32 | cuBLAS tf32 | ours/cuBLAS |');
console.log('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |');
for (const r of mmRows) {
  const { M, N, K } = r;
  const pr = p?.matmul?.find((x) => x.M === M && x.N === N && x.K === K) ?? {};
  r.tflops = Object.fromEntries(DTYPES.map(([key]) => [key, tflops(2 * M * N * K, r.ours[key])]));
  r.peer = pr;
  const cells = DTYPES.map(([key]) => `${f(r.tflops[key])} | ${f(pr[`${key}_tflops`])} | ${ratio(r.tflops[key], pr[`${key}_tflops`])}`);
  console.log(`| ${M} x ${N} x ${K} | ${cells.join(' | ')} |`);
}
console.log('\n| conv 3x3 N, C -> O, H x W | fp16 TFLOP/s | cuDNN fp16 | ours/cuDNN | bf16 | cuDNN bf16 | ours/cuDNN |');
console.log('| --- | --- | --- | --- | --- | --- | --- |');
for (const r of convRows) {
  const { N, C, H, W, O, k } = r;
  const pr = p?.conv?.find((x) => x.N === N && x.C === C && x.H === H && x.W === W && x.O === O && x.k === k) ?? {};
  const flop = 2 * N * O * H * W * C * k * k;
  r.tflops = { fp16: tflops(flop, r.ours.fp16), bf16: tflops(flop, r.ours.bf16) };
  r.peer = pr;
  console.log(`| ${N}, ${C} -> ${O}, ${H} x ${W} | ${f(r.tflops.fp16)} | ${f(pr.fp16_tflops)} | ${ratio(r.tflops.fp16, pr.fp16_tflops)} | ${f(r.tflops.bf16)} | ${f(pr.bf16_tflops)} | ${ratio(r.tflops.bf16, pr.bf16_tflops)} |`);
}
console.log('\nTarget (issue): 80 % of cuBLAS or better.');
if (args.json) writeFileSync(args.json, JSON.stringify({ device: info, peer: p ? { torch: p.torch, device: p.device } : null, matmul: mmRows, conv: convRows }, null, 2));
