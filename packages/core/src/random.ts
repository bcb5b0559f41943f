// Seeded random numbers. A Generator is (seed, offset): each draw of n numbers uses Philox
// counters offset..offset+n-1 and advances the offset, so streams are reproducible and
// independent of the thread count and of how work is split.
import { ArgumentError } from './errors.js';

export class Generator {
  readonly seed: bigint;
  offset: number;
  constructor(seed: number | bigint = 0) {
    if (typeof seed === 'number' && (!Number.isInteger(seed) || seed < 0)) throw new ArgumentError(`seed must be a non-negative integer, got ${seed}`);
    this.seed = BigInt.asUintN(64, BigInt(seed));
    this.offset = 0;
  }
  /** Reserves n counters and returns the first. */
  take(n: number): number { const o = this.offset; this.offset += n; return o; }
  get seedHi(): number { return Number(this.seed >> 32n); }
  get seedLo(): number { return Number(this.seed & 0xffffffffn); }
  state(): { seed: string; offset: number } { return { seed: this.seed.toString(), offset: this.offset }; }
  static fromState(s: { seed: string; offset: number }): Generator { const g = new Generator(BigInt(s.seed)); g.offset = s.offset; return g; }
  /** A generator derived from this one's seed and a tag (for independent sub-streams). */
  fork(tag: number): Generator { return new Generator(BigInt.asUintN(64, this.seed * 6364136223846793005n + BigInt(tag) * 1442695040888963407n + 1n)); }
}

/**
 * A seeded scalar generator in [0, 1) on the JS side (mulberry32): for host-side choices such as
 * batch sampling or dataset splits, where a Philox tensor draw per number would be wasteful.
 */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

let defaultGenerator = new Generator(0);
export function manualSeed(seed: number | bigint): Generator { defaultGenerator = new Generator(seed); return defaultGenerator; }
export function getDefaultGenerator(): Generator { return defaultGenerator; }
