// The addon, loaded once. Its own loader explains what to do when it is missing.
import { createRequire } from 'node:module';
import type { QdmAddon, NativeView } from '@qdm/native';

const require = createRequire(import.meta.url);
export const addon: QdmAddon = require('@qdm/native');
export type { NativeView };

/** Sets the CPU kernels' thread count (default: QDM_NUM_THREADS or the core count). */
export function setNumThreads(n: number): number { return addon.setNumThreads(n); }
export function getNumThreads(): number { return addon.info().threads; }

export interface BuildInfo { isa: string; threads: number; cuda: { compiled: boolean; available: boolean; reason: string; deviceName?: string; runtimeVersion: number; driverVersion: number } }
export function buildInfo(): BuildInfo {
  const i = addon.info();
  const c = addon.cudaInfo();
  return { isa: i.isa, threads: i.threads, cuda: { compiled: c.compiled, available: c.deviceCount > 0, reason: c.reason, deviceName: c.deviceName, runtimeVersion: c.runtimeVersion, driverVersion: c.driverVersion } };
}
