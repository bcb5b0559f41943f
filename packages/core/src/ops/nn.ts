// STUB: neural-network ops (convolution, normalisation, softmax, attention, resampling,
// dropout). Being implemented; signatures are the contract.
import { QdmError } from '../errors.js';
import type { Tensor } from '../tensor.js';
import type { Generator } from '../random.js';

const todo = (op: string): never => { throw new QdmError('QDM_NOT_IMPLEMENTED', `${op} is not implemented yet`); };
export type Pair = number | [number, number];
export interface Conv2dOptions { stride?: Pair; padding?: Pair; dilation?: Pair; groups?: number }
export function conv2d(x: Tensor, weight: Tensor, bias?: Tensor | null, opts?: Conv2dOptions): Tensor { return todo('conv2d'); }
export function groupNorm(x: Tensor, numGroups: number, weight?: Tensor | null, bias?: Tensor | null, eps?: number): Tensor { return todo('groupNorm'); }
export function layerNorm(x: Tensor, normalizedShape: number[], weight?: Tensor | null, bias?: Tensor | null, eps?: number): Tensor { return todo('layerNorm'); }
export function softmax(x: Tensor, dim: number): Tensor { return todo('softmax'); }
export function logSoftmax(x: Tensor, dim: number): Tensor { return todo('logSoftmax'); }
export interface AttentionOptions { mask?: Tensor | null; scale?: number }
export function scaledDotProductAttention(q: Tensor, k: Tensor, v: Tensor, opts?: AttentionOptions): Tensor { return todo('scaledDotProductAttention'); }
export interface InterpolateOptions { scaleFactor?: number | [number, number]; size?: [number, number]; mode?: 'nearest' | 'bilinear'; alignCorners?: boolean }
export function interpolate(x: Tensor, opts: InterpolateOptions): Tensor { return todo('interpolate'); }
export function avgPool2d(x: Tensor, kernel: Pair, stride?: Pair): Tensor { return todo('avgPool2d'); }
export function dropout(x: Tensor, p: number, training: boolean, generator?: Generator): Tensor { return todo('dropout'); }
