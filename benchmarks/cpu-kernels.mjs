// CPU kernel benchmark: measured FMA peak, fp32 GEMM, convolution and attention at U-Net
// shapes, each beside PyTorch's figure from the same run when torch is importable.
//   node benchmarks/cpu-kernels.mjs [--quick] [--json out.json]
// Needs the built addon (bash scripts/build-native.sh) and @qdm/core's dist (tsc).
// Timing: one warm-up call, then calls until the time budget is spent; the best call counts
// (least disturbed by other processes on a shared machine). GEMM goes straight to the addon
// so it measures the kernel, not tensor allocation; conv and attention go through @qdm/core.
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';

const require = createRequire(import.meta.url);
const addon = require('@qdm/native');
const core = await import('@qdm/core');

const args = process.argv.slice(2);
const quick = args.includes('--quick');
const jsonOut = args.includes('--json') ? args[args.indexOf('--json') + 1] : null;
const budget = quick ? 0.25 : 1.0;  // seconds of timed calls per measurement
const allThreads = core.getNumThreads();

function timeBest(fn, seconds = budget) {
  fn();
  let best = Infinity, spent = 0, n = 0;
  while (n < 2 || (spent < seconds && n < 2000)) {
    const t0 = process.hrtime.bigint();
    fn();
    const dt = Number(process.hrtime.bigint() - t0) * 1e-9;
    best = Math.min(best, dt); spent += dt; ++n;
  }
  return best;
}

function randomF32(n, seed) {
  const out = new Float32Array(n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; ++i) { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; out[i] = s / 2 ** 31 - 1; }
  return out;
}

/** Runs fn; a QDM_NOT_IMPLEMENTED (or any other) failure becomes a reason string instead of a crash. */
function attempt(fn) {
  try { return { value: fn() }; } catch (e) {
    if (e?.code === 'QDM_NOT_IMPLEMENTED') return { reason: 'not implemented' };
    return { reason: `${e?.code ?? 'error'}: ${String(e?.message ?? e).slice(0, 80)}` };
  }
}

// ---- PyTorch, same shapes, same machine, same run ----
const TORCH_SCRIPT = String.raw`
import json, sys, time, torch
import torch.nn.functional as F
cases = json.loads(sys.argv[1]); budget = float(sys.argv[2]); out = []
def best(fn):
    fn(); b = float('inf'); spent = 0.0; n = 0
    while n < 2 or (spent < budget and n < 2000):
        t0 = time.perf_counter(); fn(); dt = time.perf_counter() - t0
        b = min(b, dt); spent += dt; n += 1
    return b
with torch.no_grad():
    for c in cases:
        torch.set_num_threads(c['threads'])
        if c['kind'] == 'gemm':
            n = c['n']; a = torch.randn(n, n); b = torch.randn(n, n); r = torch.empty(n, n)
            t = best(lambda: torch.mm(a, b, out=r))
        elif c['kind'] == 'conv':
            x = torch.randn(*c['x']); w = torch.randn(*c['w'])
            t = best(lambda: F.conv2d(x, w, padding=1))
        else:
            q = torch.randn(c['bh'], c['l'], c['d']); k = torch.randn_like(q); v = torch.randn_like(q)
            t = best(lambda: F.scaled_dot_product_attention(q, k, v))
        out.append(t)
print(json.dumps({'version': torch.__version__, 'seconds': out}))
`;

function torchAvailable() {
  const r = spawnSync('python3', ['-c', 'import torch'], { encoding: 'utf8' });
  return r.status === 0;
}

function runTorch(cases) {
  const r = spawnSync('python3', ['-c', TORCH_SCRIPT, JSON.stringify(cases), String(budget)], { encoding: 'utf8', maxBuffer: 1 << 20 });
  if (r.status !== 0) return { error: (r.stderr || '').trim().split('\n').pop() };
  return JSON.parse(r.stdout.trim().split('\n').pop());
}

// ---- measurements ----
const rows = [];  // { kernel, shape, threads, flops, seconds | reason, torchCase }
// Peak: the best of several short runs, again after the kernels (another process on a shared core
// only ever lowers a run, so the maximum is the machine's figure).
const peakSeconds = quick ? 0.1 : 0.25;
const peak = { 1: 0, [allThreads]: 0 };
function measurePeak() {
  for (let i = 0; i < 3; ++i)
    for (const t of new Set([1, allThreads])) peak[t] = Math.max(peak[t], addon.peakGflops(t, peakSeconds));
}
measurePeak();
const threadCounts = allThreads > 1 ? [1, allThreads] : [1];

const gemmSizes = quick ? [256, 512, 1024] : [256, 512, 1024, 2048];
for (const n of gemmSizes) {
  const A = randomF32(n * n, 1), B = randomF32(n * n, 2), C = new Float32Array(n * n);
  const v = (d) => [d, 0, [1, n, n], [0, n, 1], 0];
  for (const threads of threadCounts) {
    core.setNumThreads(threads);
    const seconds = timeBest(() => addon.matmul(v(A), v(B), v(C), 1, 0));
    rows.push({ kernel: 'sgemm', shape: `${n}x${n}x${n}`, threads, flops: 2 * n ** 3, seconds,
      torchCase: { kind: 'gemm', n, threads } });
  }
}
core.setNumThreads(allThreads);

const convShapes = [
  { x: [2, 320, 64, 64], w: [320, 320, 3, 3] },
  { x: [2, 640, 32, 32], w: [640, 640, 3, 3] },
  { x: [2, 64, 28, 28], w: [64, 64, 3, 3] },
];
for (const { x, w } of convShapes) {
  const [N, C, H, W] = x, O = w[0];
  const flops = 2 * N * O * H * W * C * w[2] * w[3];
  const r = attempt(() => {
    const xt = core.randn(x, { seed: 1 }), wt = core.randn(w, { seed: 2 });
    try {
      return timeBest(() => core.tidy(() => { core.conv2d(xt, wt, null, { padding: 1 }); }));
    } finally { xt.dispose(); wt.dispose(); }
  });
  rows.push({ kernel: 'conv2d 3x3', shape: `[${x}]x[${w}]`, threads: allThreads, flops, seconds: r.value, reason: r.reason,
    torchCase: { kind: 'conv', x, w, threads: allThreads } });
}

const attnShapes = quick ? [[16, 1024, 40], [16, 1024, 64]] : [[16, 1024, 40], [16, 1024, 64], [16, 4096, 40], [16, 4096, 64]];
for (const [bh, l, d] of attnShapes) {
  const flops = 4 * bh * l * l * d;
  const r = attempt(() => {
    const q = core.randn([bh, l, d], { seed: 3 }), k = core.randn([bh, l, d], { seed: 4 }), v = core.randn([bh, l, d], { seed: 5 });
    try {
      return timeBest(() => core.tidy(() => { core.noGrad(() => core.scaledDotProductAttention(q, k, v)); }), l > 2048 ? budget / 2 : budget);
    } finally { q.dispose(); k.dispose(); v.dispose(); }
  });
  rows.push({ kernel: 'attention', shape: `BH=${bh} L=${l} D=${d}`, threads: allThreads, flops, seconds: r.value, reason: r.reason,
    torchCase: { kind: 'attn', bh, l, d, threads: allThreads } });
}

measurePeak();

// ---- PyTorch ----
let torchNote;
if (!torchAvailable()) {
  torchNote = 'PyTorch not installed';
} else {
  const t = runTorch(rows.map((r) => r.torchCase));
  if (t.error) torchNote = `PyTorch failed: ${t.error}`;
  else { torchNote = `PyTorch ${t.version}`; rows.forEach((r, i) => { r.torchSeconds = t.seconds[i]; }); }
}

// ---- report ----
const f1 = (x) => x.toFixed(1);
const info = addon.info(), kinfo = addon.gemmKernelInfo();
console.log(`# CPU kernels${quick ? ' (--quick)' : ''}\n`);
console.log(`CPU: ${os.cpus()[0]?.model ?? 'unknown'}, ${os.cpus().length} logical cores, ISA ${info.isa}, threads ${allThreads}`);
console.log(`GEMM micro-kernel: ${kinfo.name} ${kinfo.mr}x${kinfo.nr}, blocks mc=${kinfo.mc} kc=${kinfo.kc} nc=${kinfo.nc}`);
console.log(`Measured fp32 FMA peak: ${f1(peak[1])} GFLOP/s (1 thread), ${f1(peak[allThreads])} GFLOP/s (${allThreads} threads)`);
console.log(`Reference: ${torchNote}\n`);
console.log('| kernel | shape | threads | qdm ms | qdm GFLOP/s | % of peak | torch GFLOP/s | qdm / torch |');
console.log('|---|---|---:|---:|---:|---:|---:|---:|');
for (const r of rows) {
  const ok = typeof r.seconds === 'number';
  const gf = ok ? r.flops / r.seconds * 1e-9 : null;
  const tgf = r.torchSeconds ? r.flops / r.torchSeconds * 1e-9 : null;
  const pk = peak[r.threads] ?? peak[allThreads];
  console.log(`| ${r.kernel} | ${r.shape} | ${r.threads} | ${ok ? (r.seconds * 1e3).toFixed(2) : 'n/a'} | ${ok ? f1(gf) : `n/a (${r.reason})`} | ${ok ? f1(100 * gf / pk) + '%' : 'n/a'} | ${tgf ? f1(tgf) : 'n/a'} | ${ok && tgf ? (gf / tgf).toFixed(2) : 'n/a'} |`);
}
if (jsonOut) {
  writeFileSync(jsonOut, JSON.stringify({ quick, threads: allThreads, isa: info.isa, kernel: kinfo, peak, torch: torchNote,
    rows: rows.map(({ torchCase, ...r }) => r) }, null, 2));
}
