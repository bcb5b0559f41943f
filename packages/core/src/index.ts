// @qdm/core public API.
export * from './errors.js';
export * from './dtype.js';
export { Tensor, numelOf, shapeStr, contiguousStrides, type Shape } from './tensor.js';
export { noGrad, enableGrad, isGradEnabled, record, type GradNode } from './autograd.js';
export { checkpoint } from './checkpoint.js';
export { tidy, keep, withMetaTensors, isMetaMode, memoryStats, resetPeakMemory, type Device, type MemoryStats } from './memory.js';
export { Generator, manualSeed, getDefaultGenerator } from './random.js';
export { setNumThreads, getNumThreads, buildInfo, type BuildInfo } from './native.js';
export { getBackend, registerBackend, resolveDevice, kernel, type Backend } from './backend/index.js';
export * from './ops/index.js';
export * from './tensor-data.js';
export { gradcheck, type GradcheckOptions, type GradcheckResult } from './testing/gradcheck.js';
export * as nn from './nn/index.js';
export { Module, withContext, currentContext, type ForwardContext } from './nn/index.js';
export * from './models/index.js';
export * from './io/index.js';
export * from './sampling/index.js';
export * as optim from './optim/index.js';
