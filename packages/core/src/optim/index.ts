// Optimizers, gradient clipping, learning-rate schedules and EMA for training on @qdm/core
// tensors. Updates run in place on f32 CPU parameters; see docs/optim.md.
export { Optimizer, type ParamGroup, type ParamGroupInit, type ParamState, type OptimizerState, type StateLayout } from './optimizer.js';
export { SGD, type SGDOptions } from './sgd.js';
export { Adam, AdamW, type AdamOptions } from './adam.js';
export { clipGradNorm, clipGradValue } from './clip.js';
export { schedules, LRScheduler, type Schedule, type LRSchedulerState } from './schedules.js';
export { EMA, type EMAOptions, type EMAState } from './ema.js';
