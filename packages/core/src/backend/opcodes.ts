// Mirrors native/include/qdm/opcodes.h (keep in sync).
export const BinaryOp = { add: 0, sub: 1, mul: 2, div: 3, pow: 4, max: 5, min: 6, eq: 7, ne: 8, lt: 9, le: 10, gt: 11, ge: 12 } as const;
export const UnaryOp = {
  neg: 0, abs: 1, exp: 2, log: 3, sqrt: 4, rsqrt: 5, tanh: 6, sigmoid: 7, silu: 8, gelu: 9, geluTanh: 10,
  relu: 11, round: 12, sign: 13, square: 14, recip: 15, clamp: 16, affine: 17, pows: 18, sin: 19, cos: 20, floor: 21, ceil: 22,
  log1p: 23, expm1: 24,
} as const;
export const ReduceOp = { sum: 0, mean: 1, max: 2, min: 3, argmax: 4, argmin: 5, sumsq: 6, prod: 7 } as const;
export const RandomDist = { uniform: 0, normal: 1 } as const;
export type BinaryOpName = keyof typeof BinaryOp;
export type UnaryOpName = keyof typeof UnaryOp;
