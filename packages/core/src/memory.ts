// Tensor memory: storage with reference counts, per-device statistics with the peak,
// tidy() scopes and a finalizer as a safety net.
//
// CPU storage is a JS typed array handed to the addon by pointer (zero-copy). dispose() drops our
// reference at once and keeps the accounting exact, so peaks measure what the program holds, not
// when GC runs. Buffers that never left the library ("CPU buffer reuse" below) are kept for reuse: a
// sampler allocates the same activation sizes every step, and fresh ArrayBuffers make V8 run a
// major GC every few hundred MB of them, with concurrent marking taking a core from the kernels.
import { allocTyped, byteSize, typedOver, type DType, type Storage } from './dtype.js';

export type Device = 'cpu' | 'cuda';

// Meta mode: tensors get shapes but no memory, and kernels on them are skipped, so a model can
// be built from a config to check its parameter names and shapes without allocating weights.
let metaDepth = 0;
export function isMetaMode(): boolean { return metaDepth > 0; }
/** Runs fn with every new tensor allocated as shape-only (no storage, kernels skipped). */
export function withMetaTensors<T>(fn: () => T): T { metaDepth++; try { return fn(); } finally { metaDepth--; } }

export interface MemoryStats { bytesInUse: number; peakBytes: number; storages: number; allocations: number }

const stats: Record<Device, MemoryStats> = {
  cpu: { bytesInUse: 0, peakBytes: 0, storages: 0, allocations: 0 },
  cuda: { bytesInUse: 0, peakBytes: 0, storages: 0, allocations: 0 },
};

/** A device allocator's own view (the CUDA caching allocator): replaces the tensor accounting's figures. */
export interface DeviceMemorySource { stats(): Partial<MemoryStats> & Record<string, number>; resetPeak(): void }
const deviceSources: Partial<Record<Device, DeviceMemorySource>> = {};
export function setDeviceMemorySource(device: Device, src: DeviceMemorySource): void { deviceSources[device] = src; }

/**
 * Memory held by live tensors on a device, and the peak since the last reset. For CUDA the
 * figures come from the caching allocator (rounded block sizes, plus reserved / cudaMallocs).
 */
export function memoryStats(device: Device = 'cpu'): MemoryStats & Record<string, number> {
  const src = deviceSources[device];
  if (src) return { ...stats[device], ...src.stats() };
  return device === 'cpu' ? { ...stats.cpu, pooledBytes } : { ...stats[device] };
}
export function resetPeakMemory(device: Device = 'cpu'): void {
  stats[device].peakBytes = stats[device].bytesInUse;
  deviceSources[device]?.resetPeak();
}

// ---- CPU buffer reuse -------------------------------------------------------------------
// Free lists of ArrayBuffers by byte length, bounded in total. Only buffers the library allocated
// and never handed out (cpuData() marks a storage as handed out) are pooled, so a typed array a
// caller kept can never be rewritten under it. Reused buffers are zeroed, as fresh ones are,
// except for outputs that a kernel writes in full (uninitialized storage).
const pool = new Map<number, ArrayBuffer[]>();
let pooledBytes = 0;
let fixedLimit: number | null = null;
// Automatic limit: the program's CPU peak (at least 256 MiB). A sampler step that allocates P bytes
// and frees them at its end then finds all P in the pool at the next step; the process holds about
// its peak either way (V8 would hold the garbage until a GC).
const poolLimit = () => fixedLimit ?? Math.max(256 * 2 ** 20, stats.cpu.peakBytes);

/**
 * Caps the bytes of released CPU buffers kept for reuse, dropping what is over; 0 disables reuse,
 * null restores the automatic limit (the CPU peak of memoryStats(), at least 256 MiB).
 */
export function setCpuPoolLimit(bytes: number | null): void {
  if (bytes !== null && !(bytes >= 0)) throw new RangeError(`setCpuPoolLimit: expected a byte count >= 0 or null, got ${bytes}`);
  fixedLimit = bytes;
  const limit = poolLimit();
  for (const [size, list] of pool) {
    while (pooledBytes > limit && list.length > 0) { list.pop(); pooledBytes -= size; }
    if (list.length === 0) pool.delete(size);
  }
}

function takeBuffer(bytes: number, zero: boolean): ArrayBuffer | null {
  const list = pool.get(bytes);
  const buf = list?.pop();
  if (!buf) return null;
  pooledBytes -= bytes;
  if (zero) new Uint8Array(buf).fill(0);
  return buf;
}
function keepBuffer(buf: ArrayBuffer): void {
  const bytes = buf.byteLength;
  if (bytes === 0 || pooledBytes + bytes > poolLimit()) return;
  let list = pool.get(bytes);
  if (!list) pool.set(bytes, (list = []));
  list.push(buf);
  pooledBytes += bytes;
}
// QDM_POISON_UNINITIALIZED=1 fills every uninitialized CPU buffer with 0xFF bytes (NaN in floats),
// fresh or reused, so a kernel that leaves part of such an output unwritten shows up in the tests.
const poison = typeof process !== 'undefined' && process.env?.QDM_POISON_UNINITIALIZED === '1';
function allocCpu(dtype: DType, numel: number, zero: boolean): Storage {
  const reused = takeBuffer(byteSize(dtype, numel), zero);
  const data = reused ? typedOver(dtype, reused) : allocTyped(dtype, numel);
  if (poison && !zero) new Uint8Array(data.buffer, data.byteOffset, data.byteLength).fill(0xff);
  return data;
}

/** Releases device memory: backends register how (the CUDA backend frees its block). */
export type Releaser = (handle: unknown) => void;

export class TensorStorage {
  readonly device: Device;
  readonly dtype: DType;
  readonly numel: number;
  readonly bytes: number;
  /** CPU: the typed array; CUDA: null (see `handle`). */
  private _data: Storage | null;
  readonly handle: unknown;
  /** Shape-only storage (see withMetaTensors). */
  readonly meta: boolean;
  private refs = 0;
  private released = false;
  private readonly releaser: Releaser | null;
  /** CPU: the buffer was allocated here and never handed out, so it may be reused once released. */
  private reusable: boolean;

  /** init.uninitialized: a reused CPU buffer keeps its old bytes (for outputs a kernel writes in full). */
  constructor(device: Device, dtype: DType, numel: number, init?: { data?: Storage; handle?: unknown; releaser?: Releaser; uninitialized?: boolean }) {
    this.device = device;
    this.dtype = dtype;
    this.numel = numel;
    this.meta = metaDepth > 0 && !init?.data;
    this.bytes = this.meta ? 0 : byteSize(dtype, numel);
    this._data = device === 'cpu' && !this.meta ? (init?.data ?? allocCpu(dtype, numel, !init?.uninitialized)) : null;
    this.reusable = this._data !== null && !init?.data;
    this.handle = init?.handle ?? null;
    this.releaser = init?.releaser ?? null;
    const s = stats[device];
    s.bytesInUse += this.bytes;
    s.storages += 1;
    s.allocations += 1;
    if (s.bytesInUse > s.peakBytes) s.peakBytes = s.bytesInUse;
  }

  /** The typed array, for the caller to keep: the buffer is then never reused. */
  get data(): Storage | null { this.handOut(); return this._data; }
  /** Marks the buffer as held outside the library: it is left to V8 when released, never reused. */
  handOut(): void { this.reusable = false; }
  /** The typed array for a kernel call that does not keep it (the buffer stays reusable). */
  get kernelData(): Storage | null { return this._data; }
  get isReleased(): boolean { return this.released; }

  retain(): void { this.refs += 1; }
  release(): void {
    this.refs -= 1;
    if (this.refs <= 0 && !this.released) this.free();
  }
  private free(): void {
    this.released = true;
    if (this.reusable && this._data) keepBuffer(this._data.buffer as ArrayBuffer);
    this._data = null;
    const s = stats[this.device];
    s.bytesInUse -= this.bytes;
    s.storages -= 1;
    if (this.releaser) this.releaser(this.handle);
  }
}

// A tensor collected without dispose() still returns its share of the storage.
export const finalizer = new FinalizationRegistry<TensorStorage>((storage) => { storage.release(); });

// ---- tidy scopes ------------------------------------------------------------------------

interface Disposable { dispose(): void; readonly isDisposed: boolean }
const scopes: Set<Disposable>[] = [];
const kept = new WeakSet<object>();

/** Called by every Tensor constructor. */
export function trackInScope(t: Disposable): void {
  const top = scopes[scopes.length - 1];
  if (top) top.add(t);
}

/** Marks a tensor to survive the enclosing tidy() scopes. */
export function keep<T extends object>(t: T): T { kept.add(t); for (const s of scopes) s.delete(t as unknown as Disposable); return t; }

function collectResult(value: unknown, out: Set<unknown>, depth = 0): void {
  if (value === null || typeof value !== 'object' || depth > 4) return;
  if ((value as Disposable).dispose && 'shape' in (value as object)) { out.add(value); return; }
  if (Array.isArray(value)) { for (const v of value) collectResult(v, out, depth + 1); return; }
  if (value instanceof Map) { for (const v of value.values()) collectResult(v, out, depth + 1); return; }
  if (Object.getPrototypeOf(value) === Object.prototype) for (const v of Object.values(value)) collectResult(v, out, depth + 1);
}

/**
 * Runs fn and disposes every tensor created inside it except those it returns (in an array,
 * Map or plain object) and those passed to keep(). Returned tensors move to the outer scope.
 */
export function tidy<T>(fn: () => T): T {
  const scope = new Set<Disposable>();
  scopes.push(scope);
  let result: T;
  try {
    result = fn();
  } finally {
    scopes.pop();
  }
  if (result instanceof Promise) throw new Error('tidy(fn): fn must be synchronous (use an explicit dispose() around async work)');
  const survivors = new Set<unknown>();
  collectResult(result, survivors);
  const outer = scopes[scopes.length - 1];
  for (const t of scope) {
    if (survivors.has(t)) { if (outer) outer.add(t); continue; }
    if (kept.has(t as object)) continue;
    if (!t.isDisposed) t.dispose();
  }
  return result;
}
