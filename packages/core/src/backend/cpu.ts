import type { DType } from '../dtype.js';
import { TensorStorage } from '../memory.js';
import { addon } from '../native.js';
import { Tensor } from '../tensor.js';
import type { Backend } from './index.js';

function toArg(a: unknown): unknown {
  if (a instanceof Tensor) return a.nativeView();
  return a;
}

export const cpuBackend: Backend = {
  device: 'cpu',
  alloc(dtype: DType, numel: number, opts?: { uninitialized?: boolean }) { return new TensorStorage('cpu', dtype, numel, opts); },
  run(name: string, args: unknown[]) {
    const fn = addon[name];
    if (typeof fn !== 'function') throw new Error(`the CPU backend has no kernel '${name}'`);
    return (fn as (...a: unknown[]) => unknown)(...args.map(toArg));
  },
  synchronize() {},
};
