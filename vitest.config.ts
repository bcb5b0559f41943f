import { defineConfig } from 'vitest/config';
import { fileURLToPath } from 'node:url';

const pkg = (name: string) => fileURLToPath(new URL(`./packages/${name}/src/index.ts`, import.meta.url));

export default defineConfig({
  resolve: {
    alias: {
      '@qdm/core': pkg('core'),
      '@qdm/quant': pkg('quant'),
      '@qdm/lora': pkg('lora'),
      '@qdm/cache': pkg('cache'),
      '@qdm/distill': pkg('distill'),
      '@qdm/eval': pkg('eval'),
      '@qdm/digits': pkg('digits'),
      '@qdm/cli': pkg('cli'),
    },
  },
  test: {
    include: ['packages/*/test/**/*.test.ts', 'benchmarks/test/**/*.test.ts'],
    pool: 'forks',
    testTimeout: 120_000,
    hookTimeout: 120_000,
  },
});
