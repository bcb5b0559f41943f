// The demo's variants: full precision first (the reference every other row is compared
// with), then each method. A method package adds its variant here as it lands.
import { applyCache } from '@qdm/cache';
import { quantize, toIntegerExecution } from '@qdm/quant';
import { byteSize, tensor, sample, type Module, type Scheduler } from '@qdm/core';
import { NULL_CLASS, DIGITS_GUIDANCE } from '@qdm/digits';
import type { UNet } from './pipeline.js';

export interface PreparedVariant { unet: UNet; weightsMB?: number; note?: () => string | undefined }
export interface DemoVariant { name: string; prepare(unet: UNet, ctx: { steps: number; scheduler: Scheduler }): Promise<PreparedVariant> }

function deepCache(interval: number): DemoVariant {
  return {
    name: `DeepCache N=${interval}`,
    prepare: async (unet) => {
      const handle = applyCache(unet, { interval, branch: 0 });
      return {
        unet,
        note: () => {
          const r = handle.report();
          const steps = new Set(r.steps.map((s) => s.stepIndex)).size;
          return `${r.fullSteps.length}/${steps} steps full`;
        },
      };
    },
  };
}

/**
 * Q-Diffusion-style PTQ, data-free: activation ranges are calibrated on the full-precision
 * model's own sampling trajectories (every step, so each step's table entry sees its inputs).
 * Then every layer that can runs on the integer GEMM (@qdm/quant toIntegerExecution: packed
 * int8/int4 weights, int32 accumulation), the rest stays fake-quant; `cache` adds DeepCache on
 * top, so the two speed-ups compose.
 */
function ptq(weightBits: number, actBits: number, cache?: number): DemoVariant {
  return {
    name: `W${weightBits}A${actBits} PTQ${cache ? ` + DeepCache N=${cache}` : ''}`,
    prepare: async (unet, ctx) => {
      const calibLabels = Array.from({ length: 10 }, (_, i) => i);
      await quantize(unet, {
        // 8-bit weights symmetric: the integer GEMM's weight operand is [-127, 127] (an asymmetric
        // 8-bit code minus its zero point does not fit int8); 4-bit keeps its zero point (q - z fits).
        weights: { bits: weightBits, granularity: 'channel', ...(weightBits === 8 ? { symmetric: true } : {}) },
        activations: { bits: actBits, granularity: 'tensor' },
        // The recipe raises conv_in and conv_out to 8 bits (firstLastBits); made symmetric too, so
        // that they also run on the integer GEMM instead of staying fake-quant.
        ...(weightBits !== 8 ? { overrides: [{ pattern: /^conv_(in|out)$/, weights: { symmetric: true } }] } : {}),
        // Min-max ranges: the MSE search of the reference is a JS loop today, too slow for the demo's budget.
        calibrator: 'minmax',
      }, {
        calibration: (model: Module) => sample({
          unet: model as UNet, scheduler: ctx.scheduler.clone(), steps: ctx.steps, batch: calibLabels.length, seed: 1234, guidanceScale: DIGITS_GUIDANCE,
          cond: { classLabels: tensor(calibLabels, { dtype: 'i64' }) }, uncond: { classLabels: tensor(calibLabels.map(() => NULL_CLASS), { dtype: 'i64' }) },
        }),
      });
      const report = toIntegerExecution(unet);
      // Weights as executed: the integer layers' packed operands, every other parameter in fp32.
      let floatBytes = 0;
      for (const p of unet.parameters()) floatBytes += byteSize(p.dtype, p.numel);
      const bytes = floatBytes - report.weightBytes.float + report.weightBytes.packed;
      const handle = cache ? applyCache(unet, { interval: cache, branch: 0 }) : null;
      const layers = `${report.integer.length}/${report.integer.length + report.fakeQuant.length} layers int`;
      return {
        unet, weightsMB: bytes / 2 ** 20,
        note: () => {
          if (!handle) return layers;
          const r = handle.report();
          return `${layers}, ${r.fullSteps.length}/${new Set(r.steps.map((st) => st.stepIndex)).size} steps full`;
        },
      };
    },
  };
}

export function demoVariants(): DemoVariant[] {
  return [
    { name: 'full precision', prepare: async (unet) => ({ unet }) },
    deepCache(3),
    deepCache(5),
    ptq(8, 8),
    ptq(4, 8),
    ptq(8, 8, 3),
  ];
}
