// Whole quantized U-Net forwards on the CPU against full precision in the same run: fp32 vs
// W8A8 and W4A8 PTQ on the integer kernels (@qdm/quant toIntegerExecution: int8 GEMM for linears,
// the integer conv for convs), forward time and weight bytes.
//   node benchmarks/quant-unet.mjs [--quick] [--json out.json] [--models cifar,sd,digits]
// Models: the DDPM CIFAR-10 U-Net (35.7 M parameters) and SD-1.5's U-Net at half width (32x32
// latents, 77 text tokens), both from their diffusers configs with random weights (needs the
// fixtures' unet-keys), and the embedded digits model (trained). Weights per output channel
// (symmetric), activations per tensor, min-max ranges calibrated on one forward of other noise
// (timing does not depend on the values; the quality of these recipes is in ptq-quality.mjs).
// Timing: the three variants run interleaved, call after call, and the best call of each counts,
// so load from other processes hits all three alike.
// Weight bytes: fp32 parameters; "deployable" = the packed integer operands (codes, scales, row
// sums) plus every parameter that is not an integer layer's weight (biases, norms, embeddings),
// i.e. what a quantized checkpoint holds. The fake-quant float weights stay resident beside the
// packing (toIntegerExecution keeps them for fromIntegerExecution), so process memory is not lower.
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as core from '@qdm/core';
import * as L from './lib/common.mjs';

const args = L.parseArgs();
const quick = !!args.quick;
const wanted = new Set((args.value('--models') ?? 'cifar,sd,digits').split(','));
const REPS = quick ? 3 : 8;
const { quantize, toIntegerExecution } = await L.importWorkspace('@qdm/quant');

const RECIPES = {
  W8A8: { weights: { bits: 8, granularity: 'channel', symmetric: true }, activations: { bits: 8, granularity: 'tensor' }, calibrator: 'minmax' },
  W4A8: { weights: { bits: 4, granularity: 'channel', symmetric: true }, activations: { bits: 8, granularity: 'tensor' }, calibrator: 'minmax' },
};

function scenarios() {
  const out = [];
  const cifar = L.cifarConfig(), sd = L.sdShapedConfig();
  if (wanted.has('cifar')) {
    if (cifar) out.push({ name: 'ddpm-cifar10-32', config: cifar, build: () => { core.manualSeed(3); return core.modelFromConfig(cifar); } });
    else console.log(`# ddpm-cifar10-32 skipped: unet-keys not in ${L.fixturesRoot}`);
  }
  if (wanted.has('sd')) {
    if (sd) out.push({ name: 'sd15-half-width', config: sd, build: () => { core.manualSeed(5); return core.modelFromConfig(sd); } });
    else console.log(`# sd15-half-width skipped: unet-keys not in ${L.fixturesRoot}`);
  }
  const digits = join(L.repoRoot, 'packages/digits/assets/unet');
  if (wanted.has('digits') && existsSync(join(digits, 'config.json'))) {
    const config = L.readJson(join(digits, 'config.json'));
    out.push({ name: 'digits (trained)', config, build: async () => core.loadModel(digits, { variant: 'fp16', dtype: 'f32' }) });
  }
  return out;
}

function inputs(config, batch, seed) {
  return { x: core.randn([batch, ...L.sampleShapeOf(config)], { seed }), cond: L.conditioningFor(config, batch, seed + 1) };
}
const callArgs = (config, inp) => (config.num_class_embeds ? [inp.x, 500, { ...inp.cond, classLabels: core.tensor(Array.from({ length: inp.x.shape[0] }, (_, i) => i % config.num_class_embeds), { dtype: 'i64' }) }] : [inp.x, 500, inp.cond]);

const bytesOf = (ts) => ts.reduce((a, t) => a + core.byteSize(t.dtype, t.numel), 0);

const rows = [];
console.log(L.machineLine());
for (const s of scenarios()) {
  const fp = await s.build();
  fp.eval();
  const fpBytes = bytesOf([...fp.parameters()]);
  const variants = [{ name: 'fp32', model: fp }];
  for (const [name, recipe] of Object.entries(RECIPES)) {
    const m = await s.build();
    m.eval();
    const cal = inputs(s.config, 1, 99);
    await quantize(m, recipe, { calibration: [callArgs(s.config, cal)] });
    const rep = toIntegerExecution(m);
    // Everything in the state dict except the integer layers' float weights (their packing
    // replaces them; per-channel weight scales are in both, a few KiB).
    const dropped = new Set(rep.integer.map((n) => `${n}.weight`));
    const others = [...m.stateDict()].filter(([k]) => !dropped.has(k)).map(([, t]) => t);
    variants.push({ name, model: m, layers: `${rep.integer.length}/${rep.integer.length + rep.fakeQuant.length}`, deployable: rep.weightBytes.packed + bytesOf(others) });
  }
  for (const batch of quick ? [1] : [1, 2]) {
    const inp = inputs(s.config, batch, 11);
    const a = callArgs(s.config, inp);
    const best = variants.map(() => Infinity);
    variants.forEach((v) => core.noGrad(() => core.tidy(() => { v.model.call(...a); })));  // warm-up
    for (let r = 0; r < REPS; r++) {
      variants.forEach((v, i) => {
        const t0 = process.hrtime.bigint();
        core.noGrad(() => core.tidy(() => { v.model.call(...a); }));
        best[i] = Math.min(best[i], Number(process.hrtime.bigint() - t0) * 1e-6);
      });
    }
    for (const [i, v] of variants.entries()) {
      const row = { model: s.name, batch, variant: v.name, ms: best[i], speedup: best[0] / best[i], layers: v.layers ?? '-', weightMiB: (v.deployable ?? fpBytes) / 2 ** 20, fpWeightMiB: fpBytes / 2 ** 20 };
      rows.push(row);
    }
  }
}

console.log(`\nbest of ${REPS} interleaved calls after a warm-up; noGrad, timestep 500\n`);
console.log('| model | batch | variant | integer layers | ms / forward | speed-up vs fp32 | weight MiB (deployable) | vs fp32 weights |');
console.log('| --- | ---: | --- | --- | ---: | ---: | ---: | ---: |');
for (const r of rows) console.log(`| ${r.model} | ${r.batch} | ${r.variant} | ${r.layers} | ${r.ms.toFixed(1)} | ${r.speedup.toFixed(2)}x | ${r.weightMiB.toFixed(2)} | ${(r.weightMiB / r.fpWeightMiB).toFixed(3)} |`);
if (args.json) writeFileSync(args.json, JSON.stringify({ machine: L.machineLine(), reps: REPS, rows }, null, 2));
