#!/usr/bin/env node
// `pnpm bench [--quick]`: builds nothing itself (run `pnpm build` first) and runs every benchmark
// script in turn, each printing its table beside the peer it measures in the same run.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const scripts = ['cpu-kernels.mjs', 'unet-cpu.mjs', 'deepcache.mjs', 'quant-gemm.mjs', 'deepcache-quant.mjs'].filter((s) => existsSync(join(here, s)));
let failed = 0;
for (const s of scripts) {
  console.log(`\n## ${s}\n`);
  const r = spawnSync(process.execPath, [join(here, s), ...process.argv.slice(2)], { stdio: 'inherit' });
  if (r.status !== 0) { failed++; console.error(`${s} exited with ${r.status}`); }
}
process.exit(failed ? 1 : 0);
