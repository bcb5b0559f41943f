// Matrix products: matmul with batch broadcasting (1-d operands as in numpy), and linear.
// Transposed operands are passed as strided views: the GEMM packs any layout, so no copies.
import { ShapeError } from '../errors.js';
import { kernel } from '../backend/index.js';
import { record } from '../autograd.js';
import { Tensor, shapeStr } from '../tensor.js';
import { empty, emptyUninitialized, broadcastShapes, expandView, assertFloat } from './util.js';
import { asF32, narrowTo, add, gradFor } from './elementwise.js';
import { reshape, transpose, unsqueeze, squeeze } from './shape.js';
import { castRaw } from './creation.js';
import { promote } from '../dtype.js';

/** A 3-d [B, R, C] view of t (batch dims broadcast to batchShape and collapsed), copying only if needed. */
function as3d(t: Tensor, batchShape: number[]): Tensor {
  const r = t.shape[t.ndim - 2]!, c = t.shape[t.ndim - 1]!;
  const full = expandView(t, [...batchShape, r, c]);
  const B = batchShape.reduce((a, d) => a * d, 1);
  const nb = batchShape.length;
  // Collapsible into one batch stride if consecutive non-unit batch dims nest exactly.
  const dims = batchShape.map((_, i) => i).filter((i) => batchShape[i] !== 1);
  let ok = true;
  for (let j = 0; j + 1 < dims.length; ++j) {
    const i = dims[j]!, k = dims[j + 1]!;
    if (full.strides[i] !== full.strides[k]! * batchShape[k]!) { ok = false; break; }
  }
  if (ok) {
    const bs = dims.length ? full.strides[dims[dims.length - 1]!]! : 0;
    return new Tensor(t.storage, [B, r, c], [bs, full.strides[nb]!, full.strides[nb + 1]!], t.offset);
  }
  const copy = empty(full.shape, t.dtype, t.device);
  kernel('copyCast', full, copy);
  return new Tensor(copy.storage, [B, r, c], [r * c, c, 1], 0);
}

function rawMatmul(a: Tensor, b: Tensor): Tensor {
  // a [..., M, K] @ b [..., K, N], both at least 2-d here
  const M = a.shape[a.ndim - 2]!, K = a.shape[a.ndim - 1]!, N = b.shape[b.ndim - 1]!;
  if (b.shape[b.ndim - 2] !== K) throw new ShapeError(`matmul: inner dimensions differ: ${shapeStr(a.shape)} @ ${shapeStr(b.shape)}`);
  const batch = broadcastShapes(a.shape.slice(0, -2), b.shape.slice(0, -2), 'matmul');
  const a32 = asF32(a), b32 = asF32(b);
  const out = emptyUninitialized([...batch, M, N], 'f32', a.device);  // beta = 0: every element written
  const B = batch.reduce((x, d) => x * d, 1);
  if (B > 0 && M > 0 && N > 0) {
    kernel('matmul', as3d(a32, batch), as3d(b32, batch), new Tensor(out.storage, [B, M, N]), 1, 0);
  }
  return narrowTo(out, promote(a.dtype, b.dtype));
}

/** Matrix product with numpy semantics (1-d operands are promoted, then squeezed). */
export function matmul(a: Tensor, b: Tensor): Tensor {
  assertFloat(a, 'matmul'); assertFloat(b, 'matmul');
  if (a.ndim === 0 || b.ndim === 0) throw new ShapeError('matmul: operands must be at least 1-d');
  if (a.ndim === 1) return squeeze(matmul(unsqueeze(a, 0), b), -2);
  if (b.ndim === 1) return squeeze(matmul(a, unsqueeze(b, 1)), -1);
  const out = rawMatmul(a, b);
  return record(out, 'matmul', [a, b], (g) => [
    a.requiresGrad ? gradFor(a, rawMatmul(g, transpose(b, -2, -1))) : null,
    b.requiresGrad ? gradFor(b, rawMatmul(transpose(a, -2, -1), g)) : null,
  ]);
}

/** y = x W^T + b, with W of shape [out, in] (PyTorch's layout). */
export function linear(x: Tensor, weight: Tensor, bias?: Tensor | null): Tensor {
  if (x.shape[x.ndim - 1] !== weight.shape[1]) throw new ShapeError(`linear: input ${shapeStr(x.shape)} does not match weight ${shapeStr(weight.shape)}`);
  const lead = x.shape.slice(0, -1);
  const x2 = reshape(x, [-1, weight.shape[1]!]);
  let y = matmul(x2, transpose(weight, 0, 1));
  if (bias) y = add(y, bias);
  return reshape(y, [...lead, weight.shape[0]!]);
}

declare module '../tensor.js' {
  interface Tensor { matmul(b: Tensor): Tensor }
}
(Tensor.prototype as unknown as Record<string, unknown>).matmul = function (this: Tensor, b: Tensor) { return matmul(this, b); };
void castRaw;
