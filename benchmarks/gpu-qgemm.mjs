// 8-bit tensor-core GEMM on the GPU at the shapes of /work/shared/gpu/README.md: ours (W8A8 int8
// with fp16 output, W4A8 with fp16 output, fp8 e4m3 with fp16 output) beside PyTorch's cuBLAS
// paths measured in the same run by benchmarks/gpu/peer_qgemm.py (torch._int_mm with int32
// output, torch._scaled_mm fp8, fp16 matmul), in TOPS (2 M N K per call) with ratios.
//   node benchmarks/gpu-qgemm.mjs [--quick] [--json out.json] [--no-peer]
// Our calls include the whole fused epilogue (per-token x per-channel scales, activation zero
// points, fp16 store); activations are already int8 / e4m3 codes (as when the producing kernel
// quantizes them), weights packed once, untimed. Timing: `reps` calls captured into one CUDA
// graph (so the JS dispatch cost is not measured, as the peer's back-to-back launches), replayed
// several times; the median replay / reps. Exits 0 with a skip line when there is no CUDA device.
// With --wgmma on sm_90 the W8 rows are also timed on the opt-in wgmma kernel (qgemmCudaPath('wgmma')),
// after a check that its output equals the mma.sync kernel's (int8 bit for bit, fp8 to 1e-3). A flag,
// because that kernel has never run: a fault would end the process, so scripts/gpu/run.sh runs it
// after the plain run.
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import * as core from '@qdm/core';
import * as L from './lib/common.mjs';

const args = L.parseArgs();
const why = typeof core.cudaUnavailableReason === 'function' && typeof core.captureGraph === 'function'
  ? core.cudaUnavailableReason()
  : 'the built @qdm/core has no CUDA backend (rebuild the packages)';
if (why !== null) {
  console.log(`gpu-qgemm: skipped (${why})`);
  process.exit(0);
}
const cuda = createRequire(import.meta.url)('@qdm/native').cuda;
const info = cuda.deviceInfo();
// The wgmma columns exist only where that kernel can run, and when asked for.
const hopper = args.has('--wgmma') && info.capability === 90 && typeof cuda.qgemmCudaPath === 'function';
if (args.has('--wgmma') && !hopper) console.log(`gpu-qgemm: --wgmma ignored (sm_${info.capability}: the wgmma kernel needs sm_90)`);

const SHAPES = [  // M x N x K (tokens x out x in)
  [8192, 8192, 8192], [8192, 1280, 1280], [32768, 1280, 320], [32768, 320, 320], [4096, 10240, 1280],
];
const shapes = args.quick ? SHAPES.slice(1, 4) : SHAPES;
const REPS = args.quick ? 10 : 20, REPLAYS = args.quick ? 5 : 9;

function rand8(shape, seed, lo, hi, dtype = 'i8') {
  const t = core.empty(shape, dtype);
  const d = t.cpuData();
  let s = seed >>> 0;
  for (let i = 0; i < d.length; ++i) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    d[i] = lo + (s >>> 8) % (hi - lo + 1);
  }
  return t;
}
// e4m3 bytes of moderate magnitude: exponent field 3..10, any mantissa, either sign
function randE4m3(shape, seed) {
  const t = rand8(shape, seed, 0, 255, 'f8e4m3');
  const d = t.cpuData();
  for (let i = 0; i < d.length; ++i) d[i] = (d[i] & 0x87) | ((3 + ((d[i] >> 3) & 7)) << 3);
  return t;
}
const vec = (n, v) => core.full([n], v, { device: 'cuda' });

const timeCall = (call) => L.gpuTimeCall(call, { reps: REPS, replays: REPLAYS });

/** Times a W8 call on mma.sync and, on Hopper, on wgmma (after comparing the two outputs). */
function timeW8(res, key, call, out, exact) {
  if (!hopper) { res[key] = timeCall(call); return; }
  cuda.qgemmCudaPath('mma');  // the mma.sync columns stay mma.sync under QDM_QGEMM_WGMMA=1
  res[key] = timeCall(call);
  const values = () => { call(); return core.cast(out, 'f32').to('cpu').cpuData(); };
  const ref = values();
  cuda.qgemmCudaPath('wgmma');
  const got = values();
  let bad = 0;
  for (let i = 0; i < ref.length; ++i)
    if (exact ? got[i] !== ref[i] : !(Math.abs(got[i] - ref[i]) <= 1e-3 * Math.max(1, Math.abs(ref[i])))) bad++;
  res[`${key}Mismatches`] = bad;
  res[`${key}Wgmma`] = timeCall(call);
  cuda.qgemmCudaPath('auto');
}

function ours(M, N, K) {
  const res = {};
  const a = rand8([M, K], 1, -128, 127).to('cuda');
  const sa = vec(M, 0.01), za = vec(M, 0), sw = vec(N, 0.02), out = core.empty([M, N], 'f16', 'cuda');
  for (const bits of [8, 4]) {
    // i4: random bytes = two random nibbles each
    const codes = (bits === 8 ? rand8([N, K], 2, -127, 127) : rand8([N, K], 3, 0, 255, 'i4')).to('cuda');
    const packed = core.empty([cuda.qgemmPackedBytes(N, K, bits)], 'i8', 'cuda'), sums = core.empty([N], 'i32', 'cuda');
    core.kernel('qgemmPackWeights', codes, packed, sums, bits);
    const callInt = () => core.kernel('qgemmLinear', a, sa, za, packed, sums, sw, null, null, out, bits, null, null);
    if (bits === 8) timeW8(res, 'w8a8', callInt, out, true);
    else res.w4a8 = timeCall(callInt);
    if (info.capability >= 89) {
      const af = randE4m3([M, K], 4).to('cuda');
      let wcodes = codes;
      if (bits === 8) wcodes = randE4m3([N, K], 5).to('cuda');
      const pf = core.empty([cuda.qgemmPackedBytes(N, K, bits)], 'i8', 'cuda');
      core.kernel('qgemmPackWeights', wcodes, pf, null, bits);
      const callFp8 = () => core.kernel('qgemmLinear', af, sa, null, pf, null, sw, null, null, out, bits, null, null);
      if (bits === 8) timeW8(res, 'fp8', callFp8, out, false);
      else res.w4fp8 = timeCall(callFp8);
      for (const t of [af, pf, ...(bits === 8 ? [wcodes] : [])]) t.dispose();
    }
    for (const t of [codes, packed, sums]) t.dispose();
  }
  for (const t of [a, sa, za, sw, out]) t.dispose();
  return res;
}

function peer() {
  if (args.has('--no-peer')) return null;
  const script = join(L.repoRoot, 'benchmarks/gpu/peer_qgemm.py');
  const r = spawnSync(process.env.PYTHON ?? 'python3', [script, JSON.stringify({ shapes, reps: REPS, trials: REPLAYS })], { encoding: 'utf8', maxBuffer: 1 << 24 });
  if (r.status !== 0) { console.log(`peer unavailable: ${(r.stderr || r.error?.message || '').trim().split('\n').pop()}`); return null; }
  return JSON.parse(r.stdout.trim().split('\n').pop());
}

const tops = (M, N, K, s) => (s ? (2 * M * N * K) / s / 1e12 : null);
const f = (x, d = 0) => (x == null ? '-' : x.toFixed(d));
const ratio = (a, b) => (a != null && b != null ? `${(a / b).toFixed(2)}x` : '-');

console.log(`gpu-qgemm on ${info.name} (sm_${info.capability}, ${info.smCount} SMs)`);
const rows = [];
for (const [M, N, K] of shapes) rows.push({ M, N, K, ours: ours(M, N, K) });
const p = peer();
if (p) console.log(`peer: PyTorch ${p.torch} on ${p.device}`);
const wgHead = hopper ? ' W8A8 wgmma TOPS | fp8 wgmma TOPS | wgmma mismatches (W8A8 / fp8) |' : '';
console.log(`| M x N x K | W8A8 fp16-out TOPS | W4A8 TOPS | fp8 TOPS | W4->fp8 TOPS |${wgHead} _int_mm TOPS | _scaled_mm TFLOP/s | fp16 TFLOP/s | W8A8 / _int_mm | W8A8 / fp16 | fp8 / _scaled_mm |`);
console.log(`| --- | --- | --- | --- | --- |${hopper ? ' --- | --- | --- |' : ''} --- | --- | --- | --- | --- | --- |`);
for (const r of rows) {
  const { M, N, K } = r;
  const pr = p?.results.find((x) => x.M === M && x.N === N && x.K === K) ?? {};
  r.tops = { w8a8: tops(M, N, K, r.ours.w8a8), w4a8: tops(M, N, K, r.ours.w4a8), fp8: tops(M, N, K, r.ours.fp8), w4fp8: tops(M, N, K, r.ours.w4fp8) };
  if (hopper) Object.assign(r.tops, { w8a8Wgmma: tops(M, N, K, r.ours.w8a8Wgmma), fp8Wgmma: tops(M, N, K, r.ours.fp8Wgmma) });
  r.peer = pr;
  const wg = hopper ? ` ${f(r.tops.w8a8Wgmma)} | ${f(r.tops.fp8Wgmma)} | ${r.ours.w8a8Mismatches} / ${r.ours.fp8Mismatches} |` : '';
  console.log(`| ${M} x ${N} x ${K} | ${f(r.tops.w8a8)} | ${f(r.tops.w4a8)} | ${f(r.tops.fp8)} | ${f(r.tops.w4fp8)} |${wg} ${f(pr.int_mm_tops)} | ${f(pr.scaled_mm_tops)} | ${f(pr.fp16_tops)} | ${ratio(r.tops.w8a8, pr.int_mm_tops)} | ${ratio(r.tops.w8a8, pr.fp16_tops)} | ${ratio(r.tops.fp8, pr.scaled_mm_tops)} |`);
}
console.log('Targets (issue): W8A8 faster than _int_mm at every U-Net shape; 1.5x fp16 or better at the large ones.');
if (args.json) writeFileSync(args.json, JSON.stringify({ device: info, peer: p ? { torch: p.torch, device: p.device } : null, rows }, null, 2));
