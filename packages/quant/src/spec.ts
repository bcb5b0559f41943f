// QuantSpec: what a quantizer does, as plain data (recipes are JSON-like). Validation lives
// here so every entry point (quantizers, layers, quantize()) reports bad specs the same way:
// an ArgumentError naming the field. Defaults follow EfficientDM / Q-Diffusion (unsigned,
// asymmetric, per output channel for weights); TuneQDM's signed range is `signed: true`.
import { ArgumentError } from '@qdm/core';

export type Granularity = 'tensor' | 'channel' | 'group' | 'separable';
export const GRANULARITIES: readonly Granularity[] = ['tensor', 'channel', 'group', 'separable'];

export interface QuantSpec {
  /** Bit width, 2..8. */
  bits: number;
  /** Signed integer range [-2^(b-1), 2^(b-1)-1] (TuneQDM) instead of [0, 2^b-1]. Default false (true when symmetric). */
  signed?: boolean;
  /** Symmetric: zero point 0, scale max|x| / (2^(b-1)-1) (Q-Diffusion's sym variant). Default false. */
  symmetric?: boolean;
  /** Which elements share one (scale, zero point). */
  granularity: Granularity;
  /** Elements per group along the last dim (granularity 'group'). Default 128. */
  groupSize?: number;
  /** The channel axis of 'channel' granularity. Default 0 (output channel of a weight). */
  channelAxis?: number;
  /**
   * Time dependence. Weights ('separable'): number of timestep experts (TuneQDM TAS), expert
   * k = min(N-1, floor(t·N/T)). Activations: number of sampling steps of a temporal table (one
   * (scale, zero) per step index, EfficientDM's TALSQ). Default 1 (no time dependence).
   */
  timestepGroups?: number;
}

export interface ResolvedQuantSpec {
  bits: number;
  signed: boolean;
  symmetric: boolean;
  granularity: Granularity;
  groupSize: number;
  channelAxis: number;
  timestepGroups: number;
  qmin: number;
  qmax: number;
}

/** Integer range of a b-bit code. */
export function quantRange(bits: number, signed: boolean): { qmin: number; qmax: number } {
  return signed ? { qmin: -(2 ** (bits - 1)), qmax: 2 ** (bits - 1) - 1 } : { qmin: 0, qmax: 2 ** bits - 1 };
}

const isInt = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v);

/** Validates a spec and fills its defaults. `where` prefixes error messages (e.g. 'recipe.weights'). */
export function resolveSpec(spec: QuantSpec, where = 'QuantSpec'): ResolvedQuantSpec {
  if (spec === null || typeof spec !== 'object') throw new ArgumentError(`${where}: expected an object, got ${spec === null ? 'null' : typeof spec}`);
  const known = new Set(['bits', 'signed', 'symmetric', 'granularity', 'groupSize', 'channelAxis', 'timestepGroups']);
  for (const k of Object.keys(spec)) if (!known.has(k)) throw new ArgumentError(`${where}.${k}: unknown field (expected one of ${[...known].join(', ')})`);
  if (!isInt(spec.bits) || spec.bits < 2 || spec.bits > 8) throw new ArgumentError(`${where}.bits: expected an integer in 2..8, got ${String(spec.bits)}`);
  if (!GRANULARITIES.includes(spec.granularity)) throw new ArgumentError(`${where}.granularity: expected one of ${GRANULARITIES.join(', ')}, got ${String(spec.granularity)}`);
  for (const k of ['signed', 'symmetric'] as const) {
    if (spec[k] !== undefined && typeof spec[k] !== 'boolean') throw new ArgumentError(`${where}.${k}: expected a boolean, got ${String(spec[k])}`);
  }
  const symmetric = spec.symmetric ?? false;
  if (symmetric && spec.signed === false) throw new ArgumentError(`${where}.signed: a symmetric quantizer uses the signed range; drop signed: false or symmetric: true`);
  const signed = spec.signed ?? symmetric;
  const groupSize = spec.groupSize ?? 128;
  if (!isInt(groupSize) || groupSize < 1) throw new ArgumentError(`${where}.groupSize: expected a positive integer, got ${String(spec.groupSize)}`);
  const channelAxis = spec.channelAxis ?? 0;
  if (!isInt(channelAxis)) throw new ArgumentError(`${where}.channelAxis: expected an integer, got ${String(spec.channelAxis)}`);
  const timestepGroups = spec.timestepGroups ?? 1;
  if (!isInt(timestepGroups) || timestepGroups < 1) throw new ArgumentError(`${where}.timestepGroups: expected a positive integer, got ${String(spec.timestepGroups)}`);
  if (symmetric && spec.granularity === 'separable') throw new ArgumentError(`${where}.symmetric: the separable (TuneQDM) quantizer is asymmetric`);
  return { bits: spec.bits, signed, symmetric, granularity: spec.granularity, groupSize, channelAxis, timestepGroups, ...quantRange(spec.bits, signed) };
}
