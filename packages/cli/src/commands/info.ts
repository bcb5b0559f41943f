import { buildInfo, memoryStats } from '@qdm/core';
import type { CommandSpec, ParsedOptions } from '../args.js';

export const infoSpec: CommandSpec = {
  name: 'info',
  summary: 'show the build (CPU instruction set, threads, CUDA) and where the embedded model lives',
  options: { json: { type: 'boolean', description: 'print JSON' } },
};

export async function runInfo(opts: ParsedOptions): Promise<void> {
  const b = buildInfo();
  const info = {
    node: process.version,
    cpu: { isa: b.isa, threads: b.threads },
    cuda: b.cuda,
    memory: memoryStats('cpu'),
  };
  if (opts.json) { console.log(JSON.stringify(info, null, 2)); return; }
  console.log(`qdm on Node ${info.node}`);
  console.log(`CPU kernels: ${b.isa}, ${b.threads} thread(s)`);
  console.log(b.cuda.compiled
    ? `CUDA: compiled (runtime ${b.cuda.runtimeVersion}); ${b.cuda.available ? `device: ${b.cuda.deviceName}` : `not available: ${b.cuda.reason}`}`
    : `CUDA: not compiled (${b.cuda.reason})`);
}
