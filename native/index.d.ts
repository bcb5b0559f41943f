// Hand-written types of the addon's exports. A view is [storage, offsetElements, shape, strides, dtypeCode].
export type NativeView = [ArrayBufferView, number, number[], number[], number];

export interface NativeInfo { isa: string; avx2: boolean; avx512: boolean; avx512vnni: boolean; threads: number; napiVersion: number }
export interface GemmKernelInfo { name: string; mr: number; nr: number; mc: number; kc: number; nc: number; available: string[] }
export interface CudaInfo { compiled: boolean; deviceCount: number; reason: string; deviceName?: string; runtimeVersion: number; driverVersion: number }

export interface QdmAddon {
  info(): NativeInfo;
  setNumThreads(n: number): number;
  copyCast(src: NativeView, dst: NativeView): void;
  fill(dst: NativeView, value: number): void;
  peakGflops(threads: number, seconds: number): number;
  binary(op: number, a: NativeView, b: NativeView, out: NativeView): void;
  unary(op: number, x: NativeView, out: NativeView, p0?: number, p1?: number): void;
  unaryBackward(op: number, x: NativeView, grad: NativeView, out: NativeView, p0?: number, p1?: number): void;
  where(cond: NativeView, a: NativeView, b: NativeView, out: NativeView): void;
  reduce(op: number, x: NativeView, dims: number[], out: NativeView): void;
  random(dist: number, out: NativeView, seedHi: number, seedLo: number, offset: number, p0: number, p1: number): void;
  matmul(a: NativeView, b: NativeView, out: NativeView, alpha?: number, beta?: number): void;
  gemmKernelInfo(): GemmKernelInfo;
  forceGemmKernel(name: 'auto' | 'avx512' | 'avx2' | 'scalar'): boolean;
  cudaInfo(): CudaInfo;
  // Kernel families added by their own binding files declare themselves here.
  // Fake quantization (bind_quant.cpp); layout = mode (0 tensor, 1 channel, 2 group, 3 separable), channels, inner, groupSize, cols.
  fakeQuantForward(x: NativeView, scale: NativeView, zero: NativeView, colScale: NativeView | null, out: NativeView, qmin: number, qmax: number, mode: number, channels: number, inner: number, groupSize: number, cols: number): void;
  fakeQuantBackward(x: NativeView, scale: NativeView, zero: NativeView, colScale: NativeView | null, gradOut: NativeView, gradX: NativeView | null, gradScale: NativeView | null, gradColScale: NativeView | null, gradZero: NativeView | null, qmin: number, qmax: number, mode: number, channels: number, inner: number, groupSize: number, cols: number): void;
  quantizePack(x: NativeView, scale: NativeView, zero: NativeView, colScale: NativeView | null, codes: NativeView, qmin: number, qmax: number, mode: number, channels: number, inner: number, groupSize: number, cols: number): void;
  dequantize(codes: NativeView, scale: NativeView, zero: NativeView, colScale: NativeView | null, out: NativeView, mode: number, channels: number, inner: number, groupSize: number, cols: number): void;
  quantMseErrors(x: NativeView, scales: NativeView, zeros: NativeView, rows: number, qmin: number, qmax: number): Float64Array;
  /** Fused CPU attention: f32 views of equal rank and batch shape; out contiguous [..., Lq, Dv]. */
  attentionForward(q: NativeView, k: NativeView, v: NativeView, mask: NativeView | null, out: NativeView, scale: number): void;
  // Low-bit CPU GEMM (bind_qgemm.cpp; layouts in native/include/qdm/qgemm.h). packed: i8 [qgemmPackedBytes(n, k, bits)], rowSums: i32 [n].
  qgemmPackedBytes(n: number, k: number, bits: 8 | 4): number;
  qgemmPackWeights(codes: NativeView, packed: NativeView, rowSums: NativeView, bits: 8 | 4): void;
  qgemmQuantizeActs(x: NativeView, codes: NativeView, scaleOut: NativeView, zeroOut: NativeView, dynamic: boolean, scale: number, zero: number, qmin: number, qmax: number, colFactor: NativeView | null): void;
  qgemmLinear(codes: NativeView, actScale: NativeView, actZero: NativeView, packed: NativeView, rowSums: NativeView, wScale: NativeView, wZero: NativeView | null, bias: NativeView | null, out: NativeView, bits: 8 | 4, lowRankXa: NativeView | null, lowRankB: NativeView | null): void;
  /** qgemmQuantizeActs + qgemmLinear in one pass (CPU only): each row is quantized as it is packed. */
  qgemmLinearQuantizing(x: NativeView, scaleOut: NativeView, zeroOut: NativeView, dynamic: boolean, scale: number, zero: number, qmin: number, qmax: number, colFactor: NativeView | null, packed: NativeView, rowSums: NativeView, wScale: NativeView, wZero: NativeView | null, bias: NativeView | null, out: NativeView, bits: 8 | 4, lowRankXa: NativeView | null, lowRankB: NativeView | null): void;
  qgemmConv2d(x: NativeView, packed: NativeView, rowSums: NativeView, wScale: NativeView, wZero: NativeView | null, bias: NativeView | null, out: NativeView, bits: 8 | 4, kh: number, kw: number, strideH: number, strideW: number, padH: number, padW: number, dilH: number, dilW: number, scale: number, zero: number, qmin: number, qmax: number, colFactor: NativeView | null): void;
  qgemmKernelInfo(): { name: string; mr: number; nr: number; available: string[] };
  forceQgemmKernel(name: 'auto' | 'avx512-vnni' | 'avx2' | 'scalar'): boolean;
  [name: string]: unknown;
}

/** Members of `addon.cuda` (CUDA builds only; bind_cuda_quant.cpp) that take no tensors. */
export interface CudaQgemmControls {
  /** W8 GEMM kernel: sets 'auto' | 'mma' | 'wgmma' (wgmma: sm_90 only, else QDM_UNSUPPORTED) or, without an argument, reads; returns the one in effect. */
  qgemmCudaPath(path?: 'auto' | 'mma' | 'wgmma'): 'mma' | 'wgmma';
  /** Host-only emulation of the wgmma path's data layout against a plain GEMM; mutation 1..3 breaks one layout fact on purpose. */
  qgemmWgmmaLayoutCheck(seed: number, mutation?: number): { outputs: number; mismatches: number; firstError: string };
}

declare const addon: QdmAddon;
export = addon;
