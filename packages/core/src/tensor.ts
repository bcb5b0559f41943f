// The Tensor: a strided view of a storage, with autograd metadata. Ops live in ops/*.ts and
// attach themselves as methods; this file holds only what every op relies on.
import { DisposedError, ArgumentError } from './errors.js';
import { DTYPE_CODE, isFloating, type DType } from './dtype.js';
import { finalizer, trackInScope, type Device, TensorStorage } from './memory.js';
import type { NativeView } from './native.js';
import type { GradNode } from './autograd.js';
import { runBackward } from './autograd.js';

export type Shape = readonly number[];

export function contiguousStrides(shape: Shape): number[] {
  const s = new Array<number>(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; --i) { s[i] = acc; acc *= shape[i]!; }
  return s;
}

export function numelOf(shape: Shape): number { let n = 1; for (const d of shape) n *= d; return n; }

export function shapeStr(shape: Shape): string { return `[${shape.join(', ')}]`; }

let nextId = 1;

export class Tensor {
  readonly id = nextId++;
  readonly storage: TensorStorage;
  readonly shape: Shape;
  readonly strides: readonly number[];
  readonly offset: number;
  private _disposed = false;
  private _requiresGrad = false;
  /** Accumulated gradient of a leaf after backward(). */
  grad: Tensor | null = null;
  /** The node that produced this tensor (null for leaves). */
  gradFn: GradNode | null = null;
  /** Optional label used in error messages and graph dumps. */
  name?: string;

  constructor(storage: TensorStorage, shape: Shape, strides?: readonly number[], offset = 0) {
    for (const d of shape) if (!Number.isInteger(d) || d < 0) throw new ArgumentError(`invalid shape ${shapeStr(shape)}`);
    this.storage = storage;
    this.shape = Object.freeze([...shape]);
    this.strides = Object.freeze(strides ? [...strides] : contiguousStrides(shape));
    this.offset = offset;
    storage.retain();
    finalizer.register(this, storage, this);
    trackInScope(this);
  }

  get dtype(): DType { return this.storage.dtype; }
  get device(): Device { return this.storage.device; }
  get ndim(): number { return this.shape.length; }
  get numel(): number { return numelOf(this.shape); }
  get size(): number { return this.numel; }
  get isDisposed(): boolean { return this._disposed; }

  get requiresGrad(): boolean { return this._requiresGrad; }
  set requiresGrad(v: boolean) {
    if (v && !isFloating(this.dtype)) throw new ArgumentError(`only floating-point tensors can require gradients (got ${this.dtype})`);
    this._requiresGrad = v;
  }
  /** True for tensors created by the user (not by an op that records a graph). */
  get isLeaf(): boolean { return this.gradFn === null; }

  /** Sets requiresGrad and returns this (chainable). */
  requiresGrad_(v = true): this { this.requiresGrad = v; return this; }

  isContiguous(): boolean {
    let acc = 1;
    for (let i = this.shape.length - 1; i >= 0; --i) {
      const d = this.shape[i]!;
      if (d !== 1 && this.strides[i] !== acc) return false;
      acc *= d;
    }
    return true;
  }

  /** The CPU storage, or throws if disposed. */
  cpuData(): NonNullable<TensorStorage['data']> {
    const d = this.kernelData();
    this.storage.handOut();  // the caller may keep it: the buffer is never reused (memory.ts)
    return d;
  }

  /** The storage's typed array for a kernel call that does not keep it. */
  private kernelData(): NonNullable<TensorStorage['data']> {
    this.assertLive();
    const d = this.storage.kernelData;
    if (this.storage.meta) throw new ArgumentError(`tensor ${shapeStr(this.shape)} is shape-only (built under withMetaTensors) and has no data`);
    if (!d) throw new DisposedError(`tensor ${shapeStr(this.shape)} has no CPU storage (device ${this.device})`);
    return d;
  }

  /**
   * The native view array [storage, offset, shape, strides, dtype]. For CUDA storage this is the
   * device view [pointer, offset, shape, strides, dtype, capacityElements] (see backend/cuda.ts);
   * the type stays NativeView because kernels receive it opaquely.
   */
  nativeView(): NativeView {
    if (this.storage.device === 'cuda' && typeof this.storage.handle === 'number') {
      this.assertLive();
      return [this.storage.handle, this.offset, this.shape as number[], this.strides as number[], DTYPE_CODE[this.dtype], this.storage.numel] as unknown as NativeView;
    }
    return [this.kernelData(), this.offset, this.shape as number[], this.strides as number[], DTYPE_CODE[this.dtype]];
  }

  assertLive(): void {
    if (this._disposed || this.storage.isReleased) throw new DisposedError(`use of a disposed tensor ${shapeStr(this.shape)} ${this.dtype}${this.name ? ` '${this.name}'` : ''}`);
  }

  /** Frees this tensor's hold on its storage (memory is released when no view uses it). */
  dispose(): void {
    if (this._disposed) return;
    this._disposed = true;
    finalizer.unregister(this);
    this.storage.release();
    this.gradFn = null;
    if (this.grad) { this.grad.dispose(); this.grad = null; }
  }

  /** Computes gradients of this tensor w.r.t. every leaf that requires them. */
  backward(grad?: Tensor, opts: { retainGraph?: boolean } = {}): void { runBackward(this, grad, opts); }

  toString(): string { return `Tensor(${shapeStr(this.shape)}, ${this.dtype}, ${this.device}${this.requiresGrad ? ', requiresGrad' : ''})`; }
}
