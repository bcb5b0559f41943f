// STUB: losses. Being implemented; signatures are the contract.
import { QdmError } from '../errors.js';
import type { Tensor } from '../tensor.js';

const todo = (op: string): never => { throw new QdmError('QDM_NOT_IMPLEMENTED', `${op} is not implemented yet`); };
export type Reduction = 'mean' | 'sum' | 'none';
export function mseLoss(a: Tensor, b: Tensor, opts?: { reduction?: Reduction }): Tensor { return todo('mseLoss'); }
export function huberLoss(a: Tensor, b: Tensor, opts?: { delta?: number; reduction?: Reduction }): Tensor { return todo('huberLoss'); }
/** mean(sqrt((a-b)^2 + c^2) - c): the LCD distance (c = 0.001 by default). */
export function pseudoHuberLoss(a: Tensor, b: Tensor, opts?: { c?: number; reduction?: Reduction }): Tensor { return todo('pseudoHuberLoss'); }
export function crossEntropy(logits: Tensor, targets: Tensor, opts?: { reduction?: Reduction; labelSmoothing?: number }): Tensor { return todo('crossEntropy'); }
