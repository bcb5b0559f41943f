// @qdm/quant: quantization specs, native fake-quant ops with LSQ gradients, learnable
// quantizers (per channel, temporal, separable), fake-quant layers and post-training quantization.
export const PACKAGE = '@qdm/quant';
export * from './spec.js';
export * from './kernels.js';
export * from './quantizer.js';
export * from './layers.js';
export * from './calibrate.js';
export * from './ptq.js';
export * from './report.js';
export * from './qgemm.js';
export * from './integer.js';
export * from './checkpoint.js';
export * from './adaround.js';
export * from './reconstruct.js';
export * from './attention.js';
