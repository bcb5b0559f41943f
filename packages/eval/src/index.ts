// @qdm/eval: sample-quality metrics usable with any feature network.
export * from './metrics.js';
export { symmetricEigen, sqrtmPsd } from './linalg.js';
