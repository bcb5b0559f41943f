// STUB: joining, splitting, indexing and padding ops. Being implemented; signatures are the contract.
import { QdmError } from '../errors.js';
import type { Tensor } from '../tensor.js';

const todo = (op: string): never => { throw new QdmError('QDM_NOT_IMPLEMENTED', `${op} is not implemented yet`); };
export function concat(tensors: Tensor[], dim?: number): Tensor { return todo('concat'); }
export function stack(tensors: Tensor[], dim?: number): Tensor { return todo('stack'); }
export function split(x: Tensor, sizes: number | number[], dim?: number): Tensor[] { return todo('split'); }
export function chunk(x: Tensor, chunks: number, dim?: number): Tensor[] { return todo('chunk'); }
export function gather(x: Tensor, dim: number, index: Tensor): Tensor { return todo('gather'); }
export function indexSelect(x: Tensor, dim: number, index: Tensor): Tensor { return todo('indexSelect'); }
export function embedding(ids: Tensor, weight: Tensor): Tensor { return todo('embedding'); }
export interface PadOptions { mode?: 'constant' | 'reflect' | 'replicate'; value?: number }
/** pads in PyTorch order: [left, right] of the last dim, then [top, bottom] of the one before... */
export function pad(x: Tensor, pads: number[], opts?: PadOptions): Tensor { return todo('pad'); }
