// The Hopper wgmma GEMM path cannot run without an sm_90 GPU, so its data layout is checked on the
// host: the addon packs random weights as qgemmPackWeights does, stages them and the activations as
// the kernel does, emulates wgmma as the PTX ISA / CUTLASS define its operand and accumulator
// layouts, and compares with a plain GEMM (native/src/cuda/qgemm_wgmma_check.cu). Needs an addon
// built with CUDA (nvcc), not a GPU.
import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';

interface LayoutCheck { qgemmWgmmaLayoutCheck?(seed: number, mutation?: number): { outputs: number; mismatches: number; firstError: string } }
const require_ = createRequire(import.meta.url);
const cuda = (require_('@qdm/native') as { cuda?: LayoutCheck }).cuda;
const check = cuda?.qgemmWgmmaLayoutCheck;

describe.skipIf(!check)(`wgmma layout emulation${check ? '' : ' (skipped: addon built without CUDA)'}`, () => {
  it('kernel layout == PTX wgmma semantics: exact int32 sums for every output of 2 x 2 CTAs (M, K with tails)', () => {
    for (const seed of [1, 2, 3]) {
      const r = check!(seed, 0);
      expect(r.firstError).toBe('');
      expect(r.mismatches).toBe(0);
      expect(r.outputs).toBe(200 * 256);
    }
  });

  it('each deliberately broken layout fact is caught (unswizzled B, swapped k steps, B off the 512-byte grid)', () => {
    for (const mutation of [1, 2, 3]) expect(check!(5, mutation).mismatches).toBeGreaterThan(1000);
  });
});
