export { sample, callUnet, guidanceScaleEmbedding, type SampleOptions, type SampleResult, type SamplingScheduler, type ModelConditioning, type StepInfo } from './sample.js';
export { encodePng, toImages, imageGrid, saveImageGrid } from './images.js';
