// @qdm/cache: step-caching policies for U-Nets (DeepCache and an adaptive variant).
export { uniformSchedule, nonUniformSchedule } from './schedule.js';
export { applyCache, type DeepCacheOptions, type CacheHandle, type CacheReport, type StepRecord } from './deepcache.js';
export { unetLayers, branchFromHelperId, branchFromPipeline, type UNetLayers, type DownLayer, type UpLayer } from './unet-layers.js';
