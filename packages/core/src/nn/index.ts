export { Module, type ForwardHook, type ForwardPreHook, type ForwardOverride, type LoadResult } from './module.js';
export * from './layers.js';
export { withContext, currentContext, type ForwardContext } from './context.js';
