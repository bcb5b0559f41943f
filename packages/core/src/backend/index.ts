// Backend dispatch. A backend allocates storage and runs named kernels; tensor arguments are
// turned into the backend's own views. Ops never branch on the device: they call kernel().
// The CPU backend is always present; the CUDA backend registers itself when the addon has one.
import { DeviceError, fromNative } from '../errors.js';
import type { DType } from '../dtype.js';
import type { Device, TensorStorage } from '../memory.js';
import { addon } from '../native.js';
import { Tensor } from '../tensor.js';
import { cpuBackend } from './cpu.js';
import { createCudaBackend, cudaRuntime } from './cuda.js';

export interface Backend {
  readonly device: Device;
  /** opts.uninitialized: the contents may be left unspecified (the caller's kernel writes them all). */
  alloc(dtype: DType, numel: number, opts?: { uninitialized?: boolean }): TensorStorage;
  /** Runs kernel `name`; Tensor arguments become views, everything else passes as is. */
  run(name: string, args: unknown[]): unknown;
  /** Waits for queued work (no-op on the CPU). */
  synchronize(): void;
  /** Kernels take f16/bf16 operands themselves (no widening to f32 around them); see ops/elementwise.ts asF32. */
  readonly nativeHalf?: boolean;
  /** Device backends: copies src into the fresh contiguous dst, one of them on the CPU (moveRaw). */
  transfer?(src: Tensor, dst: Tensor): void;
}

const backends = new Map<Device, Backend>([['cpu', cpuBackend]]);

export function registerBackend(b: Backend): void { backends.set(b.device, b); }

export function cudaUnavailableReason(): string | null {
  const info = addon.cudaInfo();
  if (!info.compiled) return info.reason || 'this qdm build has no CUDA kernels';
  if (info.deviceCount === 0) return info.reason || 'no CUDA device';
  return null;
}

export function getBackend(device: Device): Backend {
  const b = backends.get(device);
  if (b) return b;
  if (device === 'cuda') {
    const why = cudaUnavailableReason();
    throw new DeviceError('QDM_CUDA_UNAVAILABLE', `device 'cuda' was requested but CUDA is not available: ${why ?? 'the CUDA backend is not loaded'}. Use device 'cpu', or 'auto' to pick the best available.`);
  }
  throw new DeviceError('QDM_BAD_DEVICE', `unknown device '${device as string}' (expected 'cpu' or 'cuda')`);
}

/** 'auto' resolves to cuda when usable, else cpu. */
export function resolveDevice(d: Device | 'auto' | undefined): Device {
  if (d === undefined) return 'cpu';
  if (d === 'auto') return backends.has('cuda') ? 'cuda' : 'cpu';
  if (d !== 'cpu' && d !== 'cuda') throw new DeviceError('QDM_BAD_DEVICE', `unknown device '${d as string}' (expected 'cpu', 'cuda' or 'auto')`);
  return d;
}

/** Runs a named kernel on the device of the first tensor argument, checking devices agree. */
export function kernel(name: string, ...args: unknown[]): unknown {
  let device: Device | null = null;
  for (const a of args) {
    if (a instanceof Tensor) {
      if (a.storage.meta) return undefined;  // shape-only tensors: nothing to compute
      a.assertLive();
      if (device === null) device = a.device;
      else if (a.device !== device) throw new DeviceError('QDM_DEVICE_MISMATCH', `${name}: operands are on different devices (${device} and ${a.device})`);
    }
  }
  const b = getBackend(device ?? 'cpu');
  try {
    return b.run(name, args);
  } catch (err) {
    throw fromNative(err, name);
  }
}

/** True when the device's kernels handle f16/bf16 operands natively. */
export function hasNativeHalf(device: Device): boolean { return backends.get(device)?.nativeHalf === true; }

// The CUDA backend registers itself when the addon was built with CUDA and a device is usable.
if (cudaRuntime() !== null && cudaUnavailableReason() === null) registerBackend(createCudaBackend());
