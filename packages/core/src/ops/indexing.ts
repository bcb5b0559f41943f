// Joining, splitting, indexing and padding ops. Joins copy each input into a view of one
// output (no intermediate buffers); splits are views; row gathers (indexSelect, embedding)
// run a native kernel whose backward is a deterministic scatter-add.
import { ArgumentError, DTypeError, ShapeError } from '../errors.js';
import { kernel } from '../backend/index.js';
import { record, noGrad } from '../autograd.js';
import { Tensor, shapeStr } from '../tensor.js';
import { promote } from '../dtype.js';
import { empty, normDim } from './util.js';
import { asF32, narrowTo } from './elementwise.js';
import { contiguous, reshape, transpose, slice, unsqueeze, flatten } from './shape.js';
import { full, tensor, castRaw } from './creation.js';
import { dataOf } from '../tensor-data.js';

/** Concatenates along dim; all other dims must agree. Mixed dtypes are promoted. */
export function concat(tensors: Tensor[], dim = 0): Tensor {
  if (tensors.length === 0) throw new ArgumentError('concat: needs at least one tensor');
  const first = tensors[0]!;
  const d = normDim(dim, first.ndim, 'concat');
  let total = 0;
  let dtype = first.dtype;
  for (const t of tensors) {
    if (t.ndim !== first.ndim || t.shape.some((s, i) => i !== d && s !== first.shape[i])) {
      throw new ShapeError(`concat: shapes ${tensors.map((x) => shapeStr(x.shape)).join(', ')} differ outside dim ${d}`);
    }
    if (t.device !== first.device) throw new ArgumentError(`concat: tensors on different devices (${first.device}, ${t.device})`);
    total += t.shape[d]!;
    dtype = promote(dtype, t.dtype);
  }
  const shape = [...first.shape]; shape[d] = total;
  const out = empty(shape, dtype, first.device);
  const starts: number[] = [];
  noGrad(() => {
    let at = 0;
    for (const t of tensors) {
      starts.push(at);
      const n = t.shape[d]!;
      if (n > 0 && t.numel > 0) {
        const target = slice(out, d, at, at + n);
        kernel('copyCast', t, target);
        target.dispose();
      }
      at += n;
    }
  });
  return record(out, 'concat', tensors, (g) =>
    tensors.map((t, i) => {
      if (!t.requiresGrad) return null;
      const part = contiguous(slice(g, d, starts[i]!, starts[i]! + t.shape[d]!));
      return part.dtype === t.dtype ? part : castRaw(part, t.dtype);
    }));
}

export function stack(tensors: Tensor[], dim = 0): Tensor {
  if (tensors.length === 0) throw new ArgumentError('stack: needs at least one tensor');
  const d = normDim(dim, tensors[0]!.ndim + 1, 'stack');
  for (const t of tensors) {
    if (t.ndim !== tensors[0]!.ndim || t.shape.some((s, i) => s !== tensors[0]!.shape[i])) {
      throw new ShapeError(`stack: shapes ${tensors.map((x) => shapeStr(x.shape)).join(', ')} differ`);
    }
  }
  return concat(tensors.map((t) => unsqueeze(t, d)), d);
}

/** Views of consecutive pieces along dim: of `sizes` elements each (the last may be shorter), or of the listed sizes. */
export function split(x: Tensor, sizes: number | number[], dim = 0): Tensor[] {
  const d = normDim(dim, x.ndim, 'split');
  const n = x.shape[d]!;
  let list: number[];
  if (typeof sizes === 'number') {
    if (!Number.isInteger(sizes) || sizes < 1) throw new ArgumentError(`split: size must be a positive integer, got ${sizes}`);
    list = [];
    for (let at = 0; at < n; at += sizes) list.push(Math.min(sizes, n - at));
    if (list.length === 0) list.push(0);
  } else {
    if (sizes.some((s) => !Number.isInteger(s) || s < 0) || sizes.reduce((a, b) => a + b, 0) !== n) {
      throw new ArgumentError(`split: sizes [${sizes.join(', ')}] do not add up to ${n} along dim ${d}`);
    }
    list = sizes;
  }
  const out: Tensor[] = [];
  let at = 0;
  for (const s of list) { out.push(slice(x, d, at, at + s)); at += s; }
  return out;
}

/** `chunks` views along dim of ceil(n / chunks) elements (torch.chunk). */
export function chunk(x: Tensor, chunks: number, dim = 0): Tensor[] {
  if (!Number.isInteger(chunks) || chunks < 1) throw new ArgumentError(`chunk: chunks must be a positive integer, got ${chunks}`);
  const d = normDim(dim, x.ndim, 'chunk');
  return split(x, Math.max(1, Math.ceil(x.shape[d]! / chunks)), d);
}

function checkIndex(index: Tensor, op: string): void {
  if (index.dtype !== 'i64' && index.dtype !== 'i32') throw new DTypeError(`${op}: indices must be i64 or i32, got ${index.dtype}`);
}

/** Rows of a [R, D] fp32 matrix picked by a 1-d index, with a scatter-add backward. */
function gatherRows(src: Tensor, index: Tensor, op: string): Tensor {
  const R = src.shape[0]!, D = src.shape[1]!, K = index.shape[0]!;
  const s32 = contiguous(asF32(src));
  const idx = contiguous(index);
  const out = empty([K, D], 'f32', src.device);
  if (K > 0 && D > 0) kernel('indexRows', s32, idx, out);
  const y = narrowTo(out, src.dtype);
  return record(y, op, [src], (g) => {
    const gs = full([R, D], 0, { device: src.device });
    if (K > 0 && D > 0) kernel('indexAddRows', contiguous(asF32(g)), idx, gs);
    return [narrowTo(gs, src.dtype)];
  });
}

/** x.index_select(dim, index): the slices of x at the given positions along dim. */
export function indexSelect(x: Tensor, dim: number, index: Tensor): Tensor {
  checkIndex(index, 'indexSelect');
  if (index.ndim !== 1) throw new ShapeError(`indexSelect: index must be 1-d, got ${shapeStr(index.shape)}`);
  const d = normDim(dim, x.ndim, 'indexSelect');
  const front = d === 0 ? x : transpose(x, 0, d);
  const rest = front.shape.slice(1);
  const rows = reshape(front, [front.shape[0]!, rest.reduce((a, b) => a * b, 1)]);
  const picked = reshape(gatherRows(rows, index, 'indexSelect'), [index.shape[0]!, ...rest]);
  return d === 0 ? picked : transpose(picked, 0, d);
}

/** Looks up rows of an embedding table: [...ids.shape, D]. */
export function embedding(ids: Tensor, weight: Tensor): Tensor {
  checkIndex(ids, 'embedding');
  if (weight.ndim !== 2) throw new ShapeError(`embedding: weight must be [num, dim], got ${shapeStr(weight.shape)}`);
  const flat = ids.ndim === 1 ? ids : flatten(ids);
  const rows = gatherRows(weight, flat, 'embedding');
  return reshape(rows, [...ids.shape, weight.shape[1]!]);
}

/** torch.gather: out[..i..] = x[..index[..i..] along dim..]; index has x's rank. */
export function gather(x: Tensor, dim: number, index: Tensor): Tensor {
  checkIndex(index, 'gather');
  const d = normDim(dim, x.ndim, 'gather');
  if (index.ndim !== x.ndim || index.shape.some((s, i) => i !== d && s > x.shape[i]!)) {
    throw new ShapeError(`gather: index ${shapeStr(index.shape)} does not fit input ${shapeStr(x.shape)} along dim ${d}`);
  }
  // Flat source positions are computed once on the host; the move itself is a row gather of
  // a [numel, 1] view, so the same native kernel (and its scatter-add backward) does the work.
  const idx = dataOf(index);
  const xs = contiguous(x);
  const strides = xs.shape.map((_, i) => xs.shape.slice(i + 1).reduce((a, b) => a * b, 1));
  const pos = new Int32Array(index.numel);
  const coord = new Array<number>(index.ndim).fill(0);
  for (let k = 0; k < index.numel; ++k) {
    const v = Number(idx[k]);
    if (!Number.isInteger(v) || v < 0 || v >= x.shape[d]!) throw new ArgumentError(`gather: index ${v} out of range for size ${x.shape[d]} along dim ${d}`);
    let p = 0;
    for (let i = 0; i < coord.length; ++i) p += (i === d ? v : coord[i]!) * strides[i]!;
    pos[k] = p;
    for (let i = coord.length - 1; i >= 0; --i) { if (++coord[i]! < index.shape[i]!) break; coord[i] = 0; }
  }
  const flatPos = tensor(pos, { dtype: 'i32', device: x.device });
  const picked = gatherRows(reshape(xs, [xs.numel, 1]), flatPos, 'gather');
  return reshape(picked, index.shape);
}

export interface PadOptions { mode?: 'constant' | 'reflect' | 'replicate'; value?: number }

/** pads in PyTorch order: [left, right] of the last dim, then [top, bottom] of the one before... Negative amounts crop. */
export function pad(x: Tensor, pads: number[], opts: PadOptions = {}): Tensor {
  const mode = opts.mode ?? 'constant';
  if (pads.length % 2 !== 0 || pads.length / 2 > x.ndim || pads.some((p) => !Number.isInteger(p))) {
    throw new ArgumentError(`pad: pads [${pads.join(', ')}] must be integer pairs for at most ${x.ndim} dims`);
  }
  const nd = pads.length / 2;
  if (mode === 'constant') {
    // Crop first (negative pads), then place the rest in a filled tensor.
    let src = x;
    const outShape = [...x.shape];
    const at: number[] = new Array(x.ndim).fill(0);
    for (let j = 0; j < nd; ++j) {
      const dim = x.ndim - 1 - j;
      const lo = pads[2 * j]!, hi = pads[2 * j + 1]!;
      const n = src.shape[dim]!;
      src = slice(src, dim, Math.max(0, -lo), n - Math.max(0, -hi));
      at[dim] = Math.max(0, lo);
      outShape[dim] = n + lo + hi;
      if (outShape[dim]! < 0) throw new ArgumentError(`pad: cropping more than dim ${dim} of size ${n}`);
    }
    const out = full(outShape, opts.value ?? 0, { dtype: x.dtype, device: x.device });
    noGrad(() => {
      let target = out;
      for (let dim = 0; dim < x.ndim; ++dim) target = slice(target, dim, at[dim]!, at[dim]! + src.shape[dim]!);
      if (target.numel > 0) kernel('copyCast', src, target);
    });
    return record(out, 'pad', [src], (g) => {
      let v = g;
      for (let dim = 0; dim < x.ndim; ++dim) v = slice(v, dim, at[dim]!, at[dim]! + src.shape[dim]!);
      return [contiguous(v)];
    });
  }
  if (mode !== 'reflect' && mode !== 'replicate') throw new ArgumentError(`pad: unknown mode '${String(mode)}'`);
  // Border modes are a gather along each padded dim, so their backward is the scatter-add.
  let y = x;
  for (let j = 0; j < nd; ++j) {
    const dim = x.ndim - 1 - j;
    const lo = pads[2 * j]!, hi = pads[2 * j + 1]!;
    const n = y.shape[dim]!;
    if (lo < 0 || hi < 0) throw new ArgumentError(`pad: ${mode} padding cannot crop`);
    if (mode === 'reflect' && (lo >= n || hi >= n)) throw new ArgumentError(`pad: reflect padding (${lo}, ${hi}) must be smaller than dim ${dim} of size ${n}`);
    const idx = new Int32Array(n + lo + hi);
    for (let i = 0; i < idx.length; ++i) {
      const s = i - lo;
      idx[i] = mode === 'replicate' ? Math.min(Math.max(s, 0), n - 1) : s < 0 ? -s : s >= n ? 2 * (n - 1) - s : s;
    }
    y = indexSelect(y, dim, tensor(idx, { dtype: 'i32', device: x.device }));
  }
  return y;
}
