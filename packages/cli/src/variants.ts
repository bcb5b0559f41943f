// The demo's variants: full precision first (the reference every other row is compared
// with), then each method. A method package adds its variant here as it lands.
import { applyCache } from '@qdm/cache';
import type { UNet } from './pipeline.js';

export interface PreparedVariant { unet: UNet; weightsMB?: number; note?: () => string | undefined }
export interface DemoVariant { name: string; prepare(unet: UNet, ctx: { steps: number }): Promise<PreparedVariant> }

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

export function demoVariants(): DemoVariant[] {
  return [
    { name: 'full precision', prepare: async (unet) => ({ unet }) },
    deepCache(3),
    deepCache(5),
  ];
}
