// Small dense float64 linear algebra for metrics: feature dimensions are tens to a few
// hundred, so a cyclic Jacobi eigensolver is exact enough and simple to trust.

/** Row-major n x n matrix. */
export type Mat = Float64Array;

export function matmulSq(a: Mat, b: Mat, n: number): Mat {
  const c = new Float64Array(n * n);
  for (let i = 0; i < n; ++i) for (let k = 0; k < n; ++k) {
    const aik = a[i * n + k]!;
    if (aik === 0) continue;
    for (let j = 0; j < n; ++j) c[i * n + j] += aik * b[k * n + j]!;
  }
  return c;
}

/** Eigen-decomposition of a symmetric matrix: values and column eigenvectors (V[i*n+j] = component i of vector j). */
export function symmetricEigen(a: Mat, n: number, maxSweeps = 100): { values: Float64Array; vectors: Mat } {
  const A = Float64Array.from(a);
  const V = new Float64Array(n * n);
  for (let i = 0; i < n; ++i) V[i * n + i] = 1;
  for (let sweep = 0; sweep < maxSweeps; ++sweep) {
    let off = 0;
    for (let p = 0; p < n; ++p) for (let q = p + 1; q < n; ++q) off += A[p * n + q]! ** 2;
    if (off < 1e-30) break;
    for (let p = 0; p < n; ++p) for (let q = p + 1; q < n; ++q) {
      const apq = A[p * n + q]!;
      if (Math.abs(apq) < 1e-300) continue;
      const app = A[p * n + p]!, aqq = A[q * n + q]!;
      const theta = (aqq - app) / (2 * apq);
      const t = Math.sign(theta || 1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
      const c = 1 / Math.sqrt(t * t + 1), s = t * c;
      for (let k = 0; k < n; ++k) {
        const akp = A[k * n + p]!, akq = A[k * n + q]!;
        A[k * n + p] = c * akp - s * akq; A[k * n + q] = s * akp + c * akq;
      }
      for (let k = 0; k < n; ++k) {
        const apk = A[p * n + k]!, aqk = A[q * n + k]!;
        A[p * n + k] = c * apk - s * aqk; A[q * n + k] = s * apk + c * aqk;
      }
      for (let k = 0; k < n; ++k) {
        const vkp = V[k * n + p]!, vkq = V[k * n + q]!;
        V[k * n + p] = c * vkp - s * vkq; V[k * n + q] = s * vkp + c * vkq;
      }
    }
  }
  const values = new Float64Array(n);
  for (let i = 0; i < n; ++i) values[i] = A[i * n + i]!;
  return { values, vectors: V };
}

/** Square root of a symmetric positive semi-definite matrix (negative eigenvalues clipped to 0). */
export function sqrtmPsd(a: Mat, n: number): Mat {
  const { values, vectors } = symmetricEigen(a, n);
  const out = new Float64Array(n * n);
  for (let k = 0; k < n; ++k) {
    const s = Math.sqrt(Math.max(0, values[k]!));
    if (s === 0) continue;
    for (let i = 0; i < n; ++i) {
      const vik = vectors[i * n + k]! * s;
      for (let j = 0; j < n; ++j) out[i * n + j] += vik * vectors[j * n + k]!;
    }
  }
  return out;
}

export function trace(a: Mat, n: number): number { let t = 0; for (let i = 0; i < n; ++i) t += a[i * n + i]!; return t; }
