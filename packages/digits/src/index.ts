// @qdm/digits: the embedded default model, its data, trainers and evaluation.
export * from './configs.js';
export * from './dataset.js';
export * from './classifier.js';
export * from './train.js';
export * from './assets.js';
export * from './evaluate.js';
