// Scheduler construction from diffusers configs: dispatch on _class_name, and loading a
// scheduler_config.json from a model directory (or a direct file path).
import { existsSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ArgumentError, QdmError } from '../errors.js';
import type { Scheduler, SchedulerConfig } from './base.js';
import { DDPMScheduler } from './ddpm.js';
import { DDIMScheduler } from './ddim.js';
import { PNDMScheduler } from './pndm.js';
import { DPMSolverMultistepScheduler } from './dpm-solver.js';
import { EulerDiscreteScheduler } from './euler.js';
import { EulerAncestralDiscreteScheduler } from './euler-ancestral.js';
import { UniPCMultistepScheduler } from './unipc.js';
import { LCMScheduler } from './lcm.js';

export const SCHEDULER_CLASSES: Record<string, new (json?: SchedulerConfig) => Scheduler> = {
  DDPMScheduler, DDIMScheduler, PNDMScheduler, DPMSolverMultistepScheduler,
  EulerDiscreteScheduler, EulerAncestralDiscreteScheduler, UniPCMultistepScheduler, LCMScheduler,
};

/** Builds the scheduler named by json._class_name. */
export function schedulerFromConfig(json: SchedulerConfig): Scheduler {
  if (json === null || typeof json !== 'object' || Array.isArray(json)) throw new ArgumentError(`schedulerFromConfig: expected a config object, got ${JSON.stringify(json)}`);
  const name = json._class_name;
  const Ctor = typeof name === 'string' ? SCHEDULER_CLASSES[name] : undefined;
  if (!Ctor) throw new ArgumentError(`schedulerFromConfig: unsupported _class_name ${JSON.stringify(name)}; supported: ${Object.keys(SCHEDULER_CLASSES).join(', ')}`);
  return new Ctor(json);
}

/** Reads dir/scheduler_config.json (or the given file) and builds its scheduler. */
export async function loadScheduler(dirOrFile: string): Promise<Scheduler> {
  const path = existsSync(dirOrFile) && statSync(dirOrFile).isDirectory() ? join(dirOrFile, 'scheduler_config.json') : dirOrFile;
  if (!existsSync(path)) throw new QdmError('QDM_IO', `loadScheduler: scheduler config not found: ${path}`);
  let json: unknown;
  try {
    // diffusers writes Infinity/NaN for some keys (lambda_min_clipped: -inf); map them to JSON first.
    const text = await readFile(path, 'utf8');
    json = JSON.parse(text.replace(/(:\s*)(-?)Infinity\b/g, (_m, p: string, s: string) => `${p}"${s}Infinity"`).replace(/(:\s*)NaN\b/g, '$1null'),
      (_k, v) => (v === 'Infinity' ? Infinity : v === '-Infinity' ? -Infinity : v));
  } catch (e) {
    throw new QdmError('QDM_IO', `loadScheduler: ${path} is not valid JSON: ${(e as Error).message}`);
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json)) throw new QdmError('QDM_IO', `loadScheduler: ${path} does not hold a JSON object`);
  return schedulerFromConfig(json as SchedulerConfig);
}
