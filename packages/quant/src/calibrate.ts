// Activation calibration: forward pre-hooks on every fake-quant layer with an activation
// quantizer record the layer's input (range, plus a subsample for percentile / MSE) while the
// activation quantizers are bypassed, so each layer sees the activations the weight-quantized
// model produces in full precision (Q-Diffusion calibrates activations after the weights).
// Temporal quantizers file each batch under currentContext().stepIndex, so calibration must run
// the model inside withContext({ stepIndex }) — sample() does, and array entries can carry one.
import { ArgumentError, Module, Tensor, noGrad, withContext, type ForwardContext } from '@qdm/core';
import { isQuantLayer, type QuantLayer } from './layers.js';
import { attentionQuantizers } from './attention.js';
import type { ActivationQuantizer } from './quantizer.js';

/** One calibration call: the model's argument list, optionally with a forward context (e.g. { stepIndex, timestep }). */
export type CalibrationBatch = unknown[] | { args: unknown[]; context?: ForwardContext };

/** Argument lists for model.call(...args), or a function that runs the model itself (e.g. sample() on calibration prompts). */
export type CalibrationInput = CalibrationBatch[] | ((model: Module) => unknown);

export interface CalibrationReport {
  /** Layers whose activation quantizer was calibrated. */
  calibrated: string[];
  /** Layers the calibration never reached: their activation quantizer is disabled (full precision). */
  uncalibrated: string[];
  /** Model calls made (array input) or 1 (function input). */
  batches: number;
}

/** Runs the calibration and sets every activation quantizer's (delta, zero_point) from what it observed. */
export async function calibrateActivations(model: Module, calibration: CalibrationInput): Promise<CalibrationReport> {
  if (!Array.isArray(calibration) && typeof calibration !== 'function') throw new ArgumentError('calibrateActivations: calibration must be an array of argument lists or a function running the model');
  const layers: Array<[string, QuantLayer]> = [];
  for (const [name, m] of model.namedModules()) if (isQuantLayer(m) && m.actQuantizers().length > 0) layers.push([name, m]);
  const removers: Array<() => void> = [];
  const saved = layers.map(([, l]) => l.quantActivations);
  const attention = attentionQuantizers(model);
  for (const [, a] of attention) a.observing = true;
  for (const [, l] of layers) {
    l.quantActivations = false;
    removers.push(l.registerForwardPreHook((_m, args) => { l.observeInput(args[0] as Tensor); }));
  }
  let batches = 0;
  try {
    if (Array.isArray(calibration)) {
      for (const [i, entry] of calibration.entries()) {
        const { args, context } = Array.isArray(entry) ? { args: entry, context: undefined } : (entry ?? {}) as { args?: unknown[]; context?: ForwardContext };
        if (!Array.isArray(args)) throw new ArgumentError(`calibrateActivations: calibration[${i}] must be an argument list or { args, context }`);
        noGrad(() => (context ? withContext(context, () => model.call(...args)) : model.call(...args)));
        batches++;
      }
    } else {
      await noGrad(() => calibration(model));
      batches = 1;
    }
  } finally {
    for (const r of removers) r();
    layers.forEach(([, l], i) => { l.quantActivations = saved[i]!; });
    for (const [, a] of attention) a.observing = false;
  }
  const calibrated: string[] = [], uncalibrated: string[] = [];
  const sets: Array<[string, ActivationQuantizer[]]> = [...layers.map(([n, l]): [string, ActivationQuantizer[]] => [n, l.actQuantizers()]), ...attention.map(([n, a]): [string, ActivationQuantizer[]] => [n, a.quantizers()])];
  for (const [name, qs] of sets) {
    if (qs.every((q) => q.hasObservations)) { for (const q of qs) { q.finishCalibration(); q.enabled = true; } calibrated.push(name); }
    else { for (const q of qs) { q.enabled = false; q.discardObservations(); } uncalibrated.push(name); }
  }
  return { calibrated, uncalibrated, batches };
}
