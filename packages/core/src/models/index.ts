// Model definitions with diffusers' architectures and parameter names.
export * from './config.js';
export * from './embeddings.js';
export * from './resnet.js';
export * from './attention.js';
export * from './unet-blocks.js';
export { UNetBase, UNet2DModel, type UNetConditioning, type UNetState } from './unet-2d.js';
export { UNet2DConditionModel } from './unet-2d-condition.js';
export * from './autoencoder-kl.js';
export { loadModel, saveModel, modelFromConfig, registerModelClass, registeredModelClasses, type LoadModelOptions, type SaveModelOptions, type ModelFactory } from './load.js';
