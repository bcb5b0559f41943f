// One error family for the whole toolkit: every failure a user can cause has a class and a
// stable `code`, and its message names the op, shapes, dtypes or file involved.

export class QdmError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** Shapes that cannot be combined (broadcast, matmul, reshape...). */
export class ShapeError extends QdmError {
  constructor(message: string, options?: { cause?: unknown }) { super('QDM_SHAPE_MISMATCH', message, options); }
}

/** An operand's dtype is not supported by the op. */
export class DTypeError extends QdmError {
  constructor(message: string, options?: { cause?: unknown }) { super('QDM_DTYPE', message, options); }
}

/** A bad argument value (out-of-range dim, negative size, unknown option...). */
export class ArgumentError extends QdmError {
  constructor(message: string, options?: { cause?: unknown }) { super('QDM_BAD_ARGUMENT', message, options); }
}

/** Operands live on different devices, or the device is unavailable. */
export class DeviceError extends QdmError {
  constructor(code: string, message: string, options?: { cause?: unknown }) { super(code, message, options); }
}

/** Use of a tensor after dispose(). */
export class DisposedError extends QdmError {
  constructor(message: string) { super('QDM_DISPOSED', message); }
}

/** Autograd misuse: backward on a non-scalar without a gradient, on a tensor that needs none... */
export class AutogradError extends QdmError {
  constructor(message: string) { super('QDM_AUTOGRAD', message); }
}

/** A model/state dict does not match what was expected. */
export class StateDictError extends QdmError {
  readonly missing: string[];
  readonly unexpected: string[];
  readonly mismatched: string[];
  constructor(message: string, detail: { missing?: string[]; unexpected?: string[]; mismatched?: string[] } = {}) {
    super('QDM_STATE_DICT', message);
    this.missing = detail.missing ?? [];
    this.unexpected = detail.unexpected ?? [];
    this.mismatched = detail.mismatched ?? [];
  }
}

/** Wraps a failure raised by the native addon, keeping its code. */
export function fromNative(err: unknown, op: string): QdmError {
  if (err instanceof QdmError) return err;
  const e = err as { code?: string; message?: string };
  const code = typeof e?.code === 'string' ? e.code : 'QDM_NATIVE_ERROR';
  const msg = `${op}: ${e?.message ?? String(err)}`;
  if (code === 'QDM_SHAPE_MISMATCH') return new ShapeError(msg, { cause: err });
  if (code === 'QDM_DTYPE') return new DTypeError(msg, { cause: err });
  if (code === 'QDM_BAD_ARGUMENT') return new ArgumentError(msg, { cause: err });
  return new QdmError(code, msg, { cause: err });
}
