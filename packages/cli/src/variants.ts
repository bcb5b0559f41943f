// The demo's variants: full precision first (the reference every other row is compared
// with), then each method. A method package adds its variant here as it lands.
import { applyCache } from '@qdm/cache';
import { quantize } from '@qdm/quant';
import { tensor, sample, type Module, type Tensor, type Scheduler } from '@qdm/core';
import { NULL_CLASS } from '@qdm/digits';
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
 * Fake quantization: the accuracy of the low-bit model, on the float kernels (no speed-up yet).
 */
function ptq(weightBits: number, actBits: number): DemoVariant {
  return {
    name: `W${weightBits}A${actBits} PTQ`,
    prepare: async (unet, ctx) => {
      const calibLabels = Array.from({ length: 10 }, (_, i) => i);
      const { summary } = await quantize(unet, {
        weights: { bits: weightBits, granularity: 'channel' },
        activations: { bits: actBits, granularity: 'tensor' },
        // Min-max ranges: the MSE search of the reference is a JS loop today, too slow for the demo's budget.
        calibrator: 'minmax',
      }, {
        calibration: (model: Module) => sample({
          unet: model as UNet, scheduler: ctx.scheduler.clone(), steps: ctx.steps, batch: calibLabels.length, seed: 1234, guidanceScale: 2,
          cond: { classLabels: tensor(calibLabels, { dtype: 'i64' }) }, uncond: { classLabels: tensor(calibLabels.map(() => NULL_CLASS), { dtype: 'i64' }) },
        }),
      });
      // Size the weights as they would be stored: quantized layers at their bit width, the rest in fp32.
      let bytes = 0;
      const quantized = new Map(summary.layers.map((l) => [`${l.name}.weight`, l.weightBits]));
      for (const [name, p] of unet.namedParameters()) bytes += (p as Tensor).numel * ((quantized.get(name) ?? 32) / 8);
      return { unet, weightsMB: bytes / 2 ** 20, note: () => 'simulated' };
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
  ];
}
