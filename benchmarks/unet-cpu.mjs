// U-Net forward on the CPU: fp32, batch 1 and 2, best of k after a warm-up, under noGrad, for
// every fixture model (shared/fixtures/unet/*, real weights) and two models of realistic size
// built from their diffusers configs with random weights (timing does not depend on values):
// the DDPM CIFAR-10 U-Net (35.7 M parameters, 32x32) and SD-1.5's U-Net at half width
// (blocks [160, 320, 640, 640], cross-attention 768, 32x32 latents, 77 text tokens).
//   node benchmarks/unet-cpu.mjs [--quick] [--json out.json]
// Needs the built addon and @qdm/core's dist. Peak memory is @qdm/core's own accounting of
// tensor storage (memoryStats after resetPeakMemory), i.e. weights plus activations, not RSS.
// PyTorch/diffusers times the same configs (random weights too) when importable.
import { writeFileSync } from 'node:fs';
import { basename } from 'node:path';
import * as core from '@qdm/core';
import * as L from './lib/common.mjs';

const args = L.parseArgs();
const startLoad = L.loadAverage();
const quick = args.quick;
const batches = [1, 2];
const timing = quick ? { warmup: 1, minRuns: 2, seconds: 0.5, maxRuns: 5 } : { warmup: 1, minRuns: 3, seconds: 3, maxRuns: 20 };

function attempt(fn) {
  try { return { value: fn() }; } catch (e) { return { reason: `${e?.code ?? 'error'}: ${String(e?.message ?? e).slice(0, 100)}` }; }
}

function measure(name, source, model, config, { torchConfig = null } = {}) {
  model.eval();
  const params = L.paramCount(model);
  for (const batch of batches) {
    const r = attempt(() => {
      const x = core.randn([batch, ...L.sampleShapeOf(config)], { seed: 11 });
      const cond = L.conditioningFor(config, batch);
      const fwd = () => core.noGrad(() => core.tidy(() => { model.call(x, 500, cond); }));
      try {
        fwd();  // warm-up outside the peak window (first-call allocations, thread pool)
        core.resetPeakMemory();
        const base = core.memoryStats().bytesInUse;
        const t = L.timeBest(fwd, { ...timing, warmup: 0 });
        const flops = (() => { const c = L.installFlopCounter(model); fwd(); c.remove(); return c.flops; })();
        return { ...t, peakBytes: core.memoryStats().peakBytes, activationBytes: core.memoryStats().peakBytes - base, flops };
      } finally { x.dispose(); L.disposeCond(cond); }
    });
    rows.push({ name, source, params, batch, ...r.value, reason: r.reason, torchConfig });
    const v = r.value;
    console.error(`  ${name} batch ${batch}: ${v ? `${(v.best * 1e3).toFixed(1)} ms` : r.reason}`);
  }
}

const rows = [];
const notes = [];

// ---- fixture models (real weights) ----
const fx = L.fixtureModelDirs();
if (fx.reason) notes.push(`Fixture models skipped: ${fx.reason}.`);
for (const dir of fx.dirs) {
  const r = await core.loadModel(dir).then((m) => ({ m }), (e) => ({ reason: String(e?.message ?? e).slice(0, 100) }));
  if (!r.m) { notes.push(`${basename(dir)}: not loaded (${r.reason})`); continue; }
  measure(basename(dir), 'fixture', r.m, r.m.config, { torchConfig: { dir } });
  r.m.to?.('cpu');
}

// ---- realistic sizes, random weights ----
for (const [name, config] of [['ddpm-cifar10-32', L.cifarConfig()], ['sd15-half-width', L.sdShapedConfig()]]) {
  if (!config) { notes.push(`${name}: skipped (unet-keys config not in ${L.fixturesRoot})`); continue; }
  const model = core.modelFromConfig(config);
  measure(name, 'config, random weights', model, config, { torchConfig: { config } });
  for (const p of model.parameters()) p.dispose();
}

// ---- PyTorch / diffusers peer ----
const TORCH_SCRIPT = String.raw`
import json, sys, time, torch
from diffusers import UNet2DModel, UNet2DConditionModel
cases = json.loads(sys.argv[1]); out = []
torch.set_num_threads(cases['threads'])
def best(fn, runs):
    fn(); b = float('inf')
    for _ in range(runs):
        t0 = time.perf_counter(); fn(); b = min(b, time.perf_counter() - t0)
    return b
with torch.no_grad():
    for c in cases['rows']:
        try:
            if 'dir' in c['model']:
                cls = json.load(open(c['model']['dir'] + '/config.json'))['_class_name']
                m = (UNet2DConditionModel if cls == 'UNet2DConditionModel' else UNet2DModel).from_pretrained(c['model']['dir'])
            else:
                cfg = dict(c['model']['config']); cls = cfg.pop('_class_name')
                m = (UNet2DConditionModel if cls == 'UNet2DConditionModel' else UNet2DModel).from_config(cfg)
            m.eval(); cfg = m.config; b = c['batch']
            x = torch.randn(b, cfg.in_channels, cfg.sample_size, cfg.sample_size); kw = {}
            if cls == 'UNet2DConditionModel':
                toks = 77 if cfg.cross_attention_dim >= 512 else 8
                kw['encoder_hidden_states'] = torch.randn(b, toks, cfg.cross_attention_dim)
                if cfg.time_cond_proj_dim: kw['timestep_cond'] = torch.randn(b, cfg.time_cond_proj_dim)
                if cfg.addition_embed_type == 'text_time':
                    kw['added_cond_kwargs'] = {'text_embeds': torch.randn(b, cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim), 'time_ids': torch.tensor([[64., 64, 0, 0, 64, 64]] * b)}
            if cfg.num_class_embeds: kw['class_labels'] = torch.arange(b) % cfg.num_class_embeds
            out.append(best(lambda: m(x, 500, **kw), c['runs']))
        except Exception as e:
            out.append(None)
print(json.dumps({'version': torch.__version__, 'seconds': out}))
`;
let torchNote;
if (!L.pythonHas('torch', 'diffusers')) torchNote = 'PyTorch/diffusers not installed';
else {
  const t = L.runPython(TORCH_SCRIPT, { threads: core.getNumThreads(), rows: rows.map((r) => ({ model: r.torchConfig, batch: r.batch, runs: quick ? 2 : 3 })) });
  if (t.error) torchNote = `PyTorch failed: ${t.error}`;
  else { torchNote = `PyTorch ${t.version} + diffusers`; rows.forEach((r, i) => { r.torchSeconds = t.seconds[i]; }); }
}

// ---- report ----
console.log(`# U-Net forward (CPU)${quick ? ' (--quick)' : ''}\n`);
console.log(L.machineLine().replace(/load average [^;]*/, `load average at start ${startLoad}, at end ${L.loadAverage()} (1/5/15 min)`));
console.log(`fp32, noGrad, timestep 500; best of ${timing.minRuns}+ timed calls after a warm-up. Reference: ${torchNote}\n`);
console.log('| model | weights | params | batch | GFLOP / forward | ms / forward (best) | median ms | samples/s | GFLOP/s | peak MiB (weights + activations) | torch ms | qdm / torch |');
console.log('|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
for (const r of rows) {
  const ok = typeof r.best === 'number';
  const tms = r.torchSeconds ? (r.torchSeconds * 1e3).toFixed(1) : 'n/a';
  console.log(`| ${r.name} | ${r.source} | ${L.fmtParams(r.params)} | ${r.batch} | ${ok ? (r.flops / 1e9).toFixed(2) : 'n/a'} | ${ok ? (r.best * 1e3).toFixed(1) : `n/a (${r.reason})`} | ${ok ? (r.median * 1e3).toFixed(1) : 'n/a'} | ${ok ? (r.batch / r.best).toFixed(2) : 'n/a'} | ${ok ? (r.flops / r.best * 1e-9).toFixed(1) : 'n/a'} | ${ok ? L.mb(r.peakBytes) : 'n/a'} | ${tms} | ${ok && r.torchSeconds ? (r.best / r.torchSeconds).toFixed(2) : 'n/a'} |`);
}
for (const n of notes) console.log(`\n${n}`);
console.log('\nGFLOP counts convolutions, linear layers and attention products (2 per multiply-add); elementwise work and norms are not counted.');
if (args.json) writeFileSync(args.json, JSON.stringify({ quick, machine: L.machineLine(), torch: torchNote, rows: rows.map(({ torchConfig, ...r }) => r), notes }, null, 2));
