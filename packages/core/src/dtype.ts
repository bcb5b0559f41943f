// Data types. Codes match native/include/qdm/view.h. CPU storage is a JS typed array:
// f16/bf16 are kept as raw 16-bit words, f8e4m3 as bytes, i4 packed two per byte.
import { ArgumentError } from './errors.js';

export type DType = 'f32' | 'f16' | 'bf16' | 'i8' | 'u8' | 'i32' | 'i64' | 'i4' | 'f8e4m3';

export const DTYPES: readonly DType[] = ['f32', 'f16', 'bf16', 'i8', 'u8', 'i32', 'i64', 'i4', 'f8e4m3'];

export const DTYPE_CODE: Record<DType, number> = { f32: 0, f16: 1, bf16: 2, i8: 3, u8: 4, i32: 5, i64: 6, i4: 7, f8e4m3: 8 };

/** Bytes per element; i4 is 0.5. */
export const DTYPE_BYTES: Record<DType, number> = { f32: 4, f16: 2, bf16: 2, i8: 1, u8: 1, i32: 4, i64: 8, i4: 0.5, f8e4m3: 1 };

export type Storage = Float32Array | Uint16Array | Int8Array | Uint8Array | Int32Array | BigInt64Array;

export function isFloating(d: DType): boolean { return d === 'f32' || d === 'f16' || d === 'bf16' || d === 'f8e4m3'; }

export function checkDType(d: string): DType {
  if (!(DTYPES as readonly string[]).includes(d)) throw new ArgumentError(`unknown dtype '${d}' (expected one of ${DTYPES.join(', ')})`);
  return d as DType;
}

export function allocTyped(dtype: DType, numel: number): Storage {
  switch (dtype) {
    case 'f32': return new Float32Array(numel);
    case 'f16': case 'bf16': return new Uint16Array(numel);
    case 'i8': return new Int8Array(numel);
    case 'u8': case 'f8e4m3': return new Uint8Array(numel);
    case 'i32': return new Int32Array(numel);
    case 'i64': return new BigInt64Array(numel);
    case 'i4': return new Uint8Array(Math.ceil(numel / 2));
  }
}

/** The typed array allocTyped would give, over an existing buffer of byteSize(dtype, numel) bytes. */
export function typedOver(dtype: DType, buf: ArrayBuffer): Storage {
  switch (dtype) {
    case 'f32': return new Float32Array(buf);
    case 'f16': case 'bf16': return new Uint16Array(buf);
    case 'i8': return new Int8Array(buf);
    case 'u8': case 'f8e4m3': case 'i4': return new Uint8Array(buf);
    case 'i32': return new Int32Array(buf);
    case 'i64': return new BigInt64Array(buf);
  }
}

export function byteSize(dtype: DType, numel: number): number {
  return dtype === 'i4' ? Math.ceil(numel / 2) : numel * DTYPE_BYTES[dtype];
}

/** Promotion for binary float ops: the wider float wins; integers promote to f32. */
export function promote(a: DType, b: DType): DType {
  if (a === b) return a;
  if (a === 'f32' || b === 'f32') return 'f32';
  if (isFloating(a) && !isFloating(b)) return a;
  if (isFloating(b) && !isFloating(a)) return b;
  return 'f32';
}
