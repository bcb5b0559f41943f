#!/usr/bin/env node
// Reproduces the shipped assets. Usage:
//   node dist/train-cli.js [--only classifier|unet] [--unet-steps N] [--classifier-steps N] [--batch B] [--seed S] [--out DIR]
import { ASSETS_DIR } from './assets.js';
import { buildClassifierAssets, buildUnetAssets, type BuildOptions } from './build-assets.js';
import { splitDigits } from './dataset.js';
import { buildInfo } from '@qdm/core';

function value(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i < 0 ? undefined : process.argv[i + 1];
}
function num(name: string, dflt: number): number {
  const raw = value(name);
  if (raw === undefined) return dflt;
  const v = Number(raw);
  if (!Number.isInteger(v) || v < 0) { console.error(`train: --${name} needs a non-negative integer, got '${raw}'`); process.exit(2); }
  return v;
}
const only = value('only');
if (only !== undefined && only !== 'classifier' && only !== 'unet') { console.error(`train: --only must be classifier or unet, got '${only}'`); process.exit(2); }
const opts: BuildOptions = { out: value('out') ?? ASSETS_DIR, unetSteps: num('unet-steps', 3000), classifierSteps: num('classifier-steps', 3000), batch: num('batch', 32), seed: num('seed', 0) };
const { train, heldOut } = splitDigits();
console.log(`digits: ${train.n} training, ${heldOut.n} held out; CPU ${buildInfo().isa}, ${buildInfo().threads} threads; writing ${opts.out}`);
if (only !== 'unet') buildClassifierAssets(opts);
if (only !== 'classifier') await buildUnetAssets(opts);
console.log(`wrote ${opts.out}`);
