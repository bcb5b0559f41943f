// Real low-bit CPU execution: W8A8, W4A8 and W4A4 GEMM and 3x3 convolution against our own fp32
// path (core's linear / conv2d on the same shapes), 1 and 2 threads, at U-Net shapes.
//   node benchmarks/quant-gemm.mjs [--quick] [--json out.json]
// Needs the built addon (bash scripts/build-native.sh) and the dist of @qdm/core and @qdm/quant.
// Every quantized time includes what a real layer pays per call: quantizing the f32 activations
// (dynamic per-token for linear, static per-tensor for conv), packing them, the int32 GEMM and the
// f32 epilogue (scales, bias), and allocating the output; the weights are packed once, untimed.
// The fp32 peer is core's linear (x @ W^T through the BLIS-style sgemm) and conv2d (im2col + sgemm).
// Timing: best of several calls after a warm-up (the development machines are shared).
import { writeFileSync } from 'node:fs';
import * as core from '@qdm/core';
import * as L from './lib/common.mjs';

const { packWeights, quantizeCodes, quantLinear, quantConv2d, qgemmKernelInfo } = await L.importWorkspace('@qdm/quant');
const args = L.parseArgs();
const timing = args.quick ? { seconds: 0.3, minRuns: 3, maxRuns: 20 } : { seconds: 1.0, minRuns: 5, maxRuns: 50 };
const startLoad = L.loadAverage();

const LINEAR = [  // tokens x in x out
  [4096, 320, 320], [1024, 640, 640], [256, 1280, 1280], [4096, 320, 1280],
];
const CONV = [  // channels, H = W (3x3, padding 1, batch 1, in = out channels)
  [64, 32], [64, 64], [320, 32], ...(args.quick ? [] : [[320, 64]]),
];

function randn(shape, seed, scale = 1) { return core.randn(shape, { seed }).mul(scale); }

function channelQuant(w, bits) {
  const n = w.shape[0];
  const qmax = bits === 8 ? 127 : 7;
  const absmax = core.max(core.abs(w.reshape([n, -1])), 1);
  const scale = core.maximum(absmax.div(qmax), 1e-8);
  const params = { scale, zeroPoint: core.zeros([n]), qmin: bits === 8 ? -127 : -8, qmax, granularity: 'channel' };
  return packWeights(quantizeCodes(w, params, bits === 8 ? 'i8' : 'i4'), scale);
}

const time = (fn) => L.timeBest(() => core.noGrad(() => core.tidy(() => { fn(); })), timing).best;
const packedMB = (p) => (p.packed.numel + p.rowSums.numel * 4 + p.scale.numel * 4) / 2 ** 20;

const rows = [];
const threadCounts = [1, 2].filter((t) => t <= Math.max(2, core.getNumThreads()));
for (const threads of threadCounts) {
  core.setNumThreads(threads);
  for (const [T, K, N] of LINEAR) {
    const x = randn([T, K], 1), W = randn([N, K], 2, 0.05);
    const w8 = channelQuant(W, 8), w4 = channelQuant(W, 4);
    const r = { kind: 'linear', shape: `${T}x${K}x${N}`, threads, gop: 2 * T * K * N / 1e9, bytes: { f32: N * K * 4, w8: packedMB(w8), w4: packedMB(w4) } };
    r.fp32 = time(() => core.linear(x, W));
    r.w8a8 = time(() => quantLinear(x, w8, 'dynamic'));
    r.w4a8 = time(() => quantLinear(x, w4, 'dynamic'));
    r.w4a4 = time(() => quantLinear(x, w4, { dynamic: true, qmax: 7 }));
    rows.push(r);
  }
  for (const [C, H] of CONV) {
    const x = randn([1, C, H, H], 3), W = randn([C, C, 3, 3], 4, 0.03);
    const w8 = channelQuant(W, 8), w4 = channelQuant(W, 4);
    const a8 = { scale: 0.03, zeroPoint: 0, qmin: -128, qmax: 127 }, a4 = { scale: 0.5, zeroPoint: 0, qmin: -8, qmax: 7 };
    const r = { kind: 'conv3x3', shape: `${C}ch ${H}x${H}`, threads, gop: 2 * H * H * C * C * 9 / 1e9, bytes: { f32: C * C * 9 * 4, w8: packedMB(w8), w4: packedMB(w4) } };
    r.fp32 = time(() => core.conv2d(x, W, null, { padding: 1 }));
    r.w8a8 = time(() => quantConv2d(x, w8, [3, 3], a8, { padding: 1 }));
    r.w4a8 = time(() => quantConv2d(x, w4, [3, 3], a8, { padding: 1 }));
    r.w4a4 = time(() => quantConv2d(x, w4, [3, 3], a4, { padding: 1 }));
    rows.push(r);
  }
}

const info = qgemmKernelInfo();
console.log(`# Low-bit CPU GEMM and conv (qgemm)${args.quick ? ' (--quick)' : ''}\n`);
console.log(L.machineLine().replace(/load average [^;]*/, `load average at start ${startLoad}, at end ${L.loadAverage()} (1/5/15 min)`));
console.log(`qgemm micro-kernel: ${info.name} (${info.mr} x ${info.nr}); available: ${info.available.join(', ')}. Best call of ${timing.minRuns}+ after a warm-up.\n`);
console.log('| op | shape | threads | fp32 ms (GFLOP/s) | W8A8 ms (GOP/s) | W4A8 ms | W4A4 ms | W8A8 / fp32 | W4A8 / fp32 | W4A4 / fp32 | W4A8 / W8A8 | weight MiB fp32 / W8 / W4 |');
console.log('|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
const ms = (s) => (s * 1e3).toFixed(2);
for (const r of rows) {
  console.log(`| ${r.kind} | ${r.shape} | ${r.threads} | ${ms(r.fp32)} (${(r.gop / r.fp32).toFixed(0)}) | ${ms(r.w8a8)} (${(r.gop / r.w8a8).toFixed(0)}) | ${ms(r.w4a8)} | ${ms(r.w4a4)} | ${(r.fp32 / r.w8a8).toFixed(2)}x | ${(r.fp32 / r.w4a8).toFixed(2)}x | ${(r.fp32 / r.w4a4).toFixed(2)}x | ${(r.w8a8 / r.w4a8).toFixed(2)}x | ${(r.bytes.f32 / 2 ** 20).toFixed(2)} / ${r.bytes.w8.toFixed(2)} / ${r.bytes.w4.toFixed(2)} |`);
}
console.log('\nRatios are speed-ups (fp32 time / quantized time; W4A8 / W8A8 = W8A8 time / W4A8 time). Quantized times include the per-call activation quantization and the f32 epilogue; W4A4 is the W4A8 kernel fed 4-bit activation codes, so it runs at the W4A8 speed.');
if (args.json) writeFileSync(args.json, JSON.stringify({ machine: L.machineLine(), kernel: info, rows }, null, 2));
