// Operation codes shared with packages/core/src/backend/opcodes.ts (keep the two in sync).
#pragma once
namespace qdm {
enum BinaryOp { B_ADD = 0, B_SUB, B_MUL, B_DIV, B_POW, B_MAX, B_MIN, B_EQ, B_NE, B_LT, B_LE, B_GT, B_GE };
enum UnaryOp {
  U_NEG = 0, U_ABS, U_EXP, U_LOG, U_SQRT, U_RSQRT, U_TANH, U_SIGMOID, U_SILU, U_GELU, U_GELU_TANH,
  U_RELU, U_ROUND, U_SIGN, U_SQUARE, U_RECIP, U_CLAMP, U_AFFINE, U_POWS, U_SIN, U_COS, U_FLOOR, U_CEIL,
  U_LOG1P, U_EXPM1
};
enum ReduceOp { R_SUM = 0, R_MEAN, R_MAX, R_MIN, R_ARGMAX, R_ARGMIN, R_SUMSQ, R_PROD };
enum RandomDist { RNG_UNIFORM = 0, RNG_NORMAL = 1 };
}  // namespace qdm
