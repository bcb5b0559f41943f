// The CUDA backend. Storage is a block of device memory from the addon's caching allocator;
// its pointer travels as a Number (device addresses fit in 53 bits) and is freed by the
// storage's releaser. Kernels are looked up by the CPU kernel's name in `addon.cuda`, with
// Tensor arguments turned into device views [ptr, offset, shape, strides, dtypeCode, capacity],
// so ops never branch on the device. Work is queued on the backend's own stream; the host waits
// only when it reads data back (transfers to the CPU, .data(), .item()) or calls synchronize().
//
// Half precision: CUDA kernels take f16/bf16 operands and accumulate in f32 themselves, so this
// backend declares nativeHalf and the elementwise helpers (asF32/narrowTo) skip the widening
// copies they make for the CPU kernels.
import { DeviceError, QdmError } from '../errors.js';
import { byteSize, DTYPE_BYTES, DTYPE_CODE, type DType } from '../dtype.js';
import { isMetaMode, setDeviceMemorySource, TensorStorage } from '../memory.js';
import { addon } from '../native.js';
import { Tensor } from '../tensor.js';
import type { Backend } from './index.js';

/** A CUDA view: [devicePointer, offsetElements, shape, strides, dtypeCode, capacityElements]. */
export type DeviceView = [number, number, number[], number[], number, number];

export interface CudaMemoryStats {
  bytesInUse: number; requestedBytes: number; reserved: number; peak: number;
  allocations: number; cudaMallocs: number; cachedBytes: number; graphPrivateBytes: number;
}
export interface CudaDeviceInfo { device: number; name: string; capability: number; major: number; minor: number; smCount: number; totalMemory: number; freeMemory: number }

/** The runtime half of `addon.cuda` (bind_cuda_runtime.cpp); kernels are looked up by name. */
export interface CudaRuntime {
  alloc(bytes: number): number;
  free(ptr: number): void;
  copyFromHost(ptr: number, host: ArrayBufferView, deviceByteOffset: number, bytes: number): void;
  copyToHost(ptr: number, host: ArrayBufferView, deviceByteOffset: number, bytes: number): void;
  memset(ptr: number, byteValue: number, bytes: number): void;
  synchronize(): void;
  memoryStats(): CudaMemoryStats;
  resetPeak(): void;
  emptyCache(): number;
  graphBegin(): number;
  graphEnd(): number;
  graphAbort(): void;
  graphReplay(handle: number): void;
  graphDestroy(handle: number): void;
  capturing(): boolean;
  deviceInfo(): CudaDeviceInfo;
  [kernel: string]: unknown;
}

/** addon.cuda, or null when this build has no CUDA. */
export function cudaRuntime(): CudaRuntime | null {
  return (addon as { cuda?: CudaRuntime }).cuda ?? null;
}
function rt(): CudaRuntime {
  const c = cudaRuntime();
  if (!c) throw new DeviceError('QDM_CUDA_UNAVAILABLE', 'this qdm build has no CUDA kernels');
  return c;
}

/** Native CUDA failures (QDM_CUDA_*) surface as DeviceError, keeping their code. */
export function asDeviceError(err: unknown, op: string): unknown {
  const e = err as { code?: unknown; message?: string };
  if (!(err instanceof QdmError) && typeof e?.code === 'string' && e.code.startsWith('QDM_CUDA'))
    return new DeviceError(e.code, `${op}: ${e.message ?? String(err)}`, { cause: err });
  return err;
}

function devicePtr(t: Tensor): number {
  const h = t.storage.handle;
  if (typeof h !== 'number') throw new DeviceError('QDM_BAD_DEVICE', `tensor ${t.toString()} has no CUDA storage`);
  return h;
}

export function deviceViewOf(t: Tensor): DeviceView {
  t.assertLive();
  return [devicePtr(t), t.offset, t.shape as number[], t.strides as number[], DTYPE_CODE[t.dtype], t.storage.numel];
}

function toArg(a: unknown): unknown {
  if (a instanceof Tensor) {
    if (a.device !== 'cuda') throw new DeviceError('QDM_DEVICE_MISMATCH', `a ${a.device} tensor was passed to a CUDA kernel`);
    return deviceViewOf(a);
  }
  return a;
}

function newStorage(dtype: DType, numel: number): TensorStorage {
  if (isMetaMode()) return new TensorStorage('cuda', dtype, numel);  // shape-only: no device memory
  const c = rt();
  let ptr: number;
  try {
    ptr = c.alloc(byteSize(dtype, numel));
  } catch (err) {
    throw asDeviceError(err, `allocating ${numel} ${dtype} elements on the GPU`);
  }
  return new TensorStorage('cuda', dtype, numel, { handle: ptr, releaser: (h) => { if (typeof h === 'number' && h !== 0) c.free(h); } });
}

/** Byte offset of element `offset` (i4 packs two elements a byte; views start on a byte). */
function byteOffsetOf(dtype: DType, offset: number): number {
  return dtype === 'i4' ? Math.floor(offset / 2) : offset * DTYPE_BYTES[dtype];
}

/** True when a transfer can copy the view's bytes as one block. */
function isDense(t: Tensor): boolean {
  return t.isContiguous() && (t.dtype !== 'i4' || t.offset % 2 === 0);
}

/** Copies src into dst (same shape and dtype, one on the CPU and one on the GPU, dst contiguous and fresh). */
function transfer(src: Tensor, dst: Tensor): void {
  const c = rt();
  const bytes = byteSize(src.dtype, src.numel);
  if (src.numel === 0) return;
  if (src.device === 'cpu') {
    // A strided CPU view is packed first (CPU kernel), then sent in one chunked copy.
    let host = src;
    if (!isDense(src)) {
      host = new Tensor(new TensorStorage('cpu', src.dtype, src.numel), src.shape);
      addon.copyCast(src.nativeView(), host.nativeView());
    }
    const data = host.cpuData();
    const view = new Uint8Array(data.buffer, data.byteOffset + byteOffsetOf(host.dtype, host.offset), bytes);
    try {
      c.copyFromHost(devicePtr(dst), view, byteOffsetOf(dst.dtype, dst.offset), bytes);
    } finally {
      if (host !== src) host.dispose();
    }
    return;
  }
  // GPU -> CPU: pack on the device when strided, then one copy that waits for the stream.
  let dev = src;
  if (!isDense(src)) {
    dev = new Tensor(newStorage(src.dtype, src.numel), src.shape);
    (c.copyCast as (a: DeviceView, b: DeviceView) => void)(deviceViewOf(src), deviceViewOf(dev));
  }
  const data = dst.cpuData();
  const view = new Uint8Array(data.buffer, data.byteOffset + byteOffsetOf(dst.dtype, dst.offset), bytes);
  try {
    c.copyToHost(devicePtr(dev), view, byteOffsetOf(dev.dtype, dev.offset), bytes);
  } finally {
    if (dev !== src) dev.dispose();
  }
}

export function createCudaBackend(): Backend {
  const c = rt();
  // memoryStats('cuda') reports the allocator: bytes in use and peak of its blocks, plus its own counters.
  setDeviceMemorySource('cuda', {
    stats() { const s = c.memoryStats(); return { ...s, bytesInUse: s.bytesInUse, peakBytes: s.peak, allocations: s.allocations }; },
    resetPeak() { c.resetPeak(); },
  });
  return {
    device: 'cuda',
    nativeHalf: true,
    alloc: newStorage,
    run(name: string, args: unknown[]) {
      const fn = c[name];
      if (typeof fn !== 'function') throw new DeviceError('QDM_CUDA_UNSUPPORTED', `${name} has no CUDA kernel yet`);
      try {
        return (fn as (...a: unknown[]) => unknown)(...args.map(toArg));
      } catch (err) {
        throw asDeviceError(err, name);
      }
    },
    synchronize() { c.synchronize(); },
    transfer(src: Tensor, dst: Tensor) {
      try { transfer(src, dst); } catch (err) { throw asDeviceError(err, `moving ${src.toString()} to ${dst.device}`); }
    },
  };
}

// ---- runtime facts for users ------------------------------------------------------------------

/** The CUDA allocator's statistics (bytes in use, reserved, peak, allocation and cudaMalloc counts). */
export function cudaMemoryStats(): CudaMemoryStats { return rt().memoryStats(); }
/** Starts a new peak-memory window on the CUDA allocator. */
export function cudaResetPeak(): void { rt().resetPeak(); }
/** Returns cached free GPU blocks to the driver; the number of bytes released. */
export function cudaEmptyCache(): number { return rt().emptyCache(); }
/** Waits for all queued GPU work. */
export function cudaSynchronize(): void { rt().synchronize(); }
/** Name, compute capability, SM count and memory of the GPU in use. */
export function cudaDeviceInfo(): CudaDeviceInfo { return rt().deviceInfo(); }
