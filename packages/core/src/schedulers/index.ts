// diffusers-compatible noise schedulers (see docs/schedulers.md).
export { Scheduler, type StepOptions, type StepOutput, type SchedulerConfig } from './base.js';
export { DDPMScheduler } from './ddpm.js';
export { DDIMScheduler, type DDIMStepOptions } from './ddim.js';
export { PNDMScheduler } from './pndm.js';
export { DPMSolverMultistepScheduler } from './dpm-solver.js';
export { EulerDiscreteScheduler, type EulerStepOptions } from './euler.js';
export { EulerAncestralDiscreteScheduler } from './euler-ancestral.js';
export { UniPCMultistepScheduler } from './unipc.js';
export { LCMScheduler } from './lcm.js';
export { schedulerFromConfig, loadScheduler, SCHEDULER_CLASSES } from './load.js';
