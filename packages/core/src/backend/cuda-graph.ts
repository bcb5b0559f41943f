// CUDA graphs: record the kernels one call of fn enqueues, then replay them with one launch.
//
// A graph replays fixed device addresses. So:
// - inputs are the tensors fn reads; to run on new data, write it into those same tensors in
//   place with copyInto(input, newValues) before replay() (never rebind them);
// - outputs are the tensors fn returns; every replay overwrites them in place;
// - temporaries fn frees during the capture, and every block allocated during it, stay private
//   to the graph (the allocator parks them until dispose()), so a replay never writes memory
//   that other work owns by then; keep the inputs alive until dispose() as well;
// - nothing in fn may read data back to the host or copy from the host (the native side refuses
//   with QDM_CUDA_CAPTURE), and fn runs without autograd. Run fn once eagerly before capturing
//   if it has one-off setup work.
import { ArgumentError, DeviceError, ShapeError } from '../errors.js';
import { noGrad } from '../autograd.js';
import { tidy } from '../memory.js';
import { Tensor, shapeStr } from '../tensor.js';
import { expandView } from '../ops/util.js';
import { moveRaw } from '../ops/creation.js';
import { kernel } from './index.js';
import { asDeviceError, cudaRuntime } from './cuda.js';

export interface CapturedGraph<T> {
  /** What fn returned during the capture; replay() rewrites these tensors in place. */
  readonly outputs: T;
  /** Runs the recorded kernels again on the backend's stream (asynchronous). */
  replay(): void;
  /** Frees the graph, its private memory and the outputs. */
  dispose(): void;
}

/** Captures the CUDA kernels fn enqueues into a replayable graph (see the file comment for the rules). */
export function captureGraph<T>(fn: () => T): CapturedGraph<T> {
  const c = cudaRuntime();
  if (!c) throw new DeviceError('QDM_CUDA_UNAVAILABLE', 'captureGraph: this qdm build has no CUDA');
  try { c.graphBegin(); } catch (err) { throw asDeviceError(err, 'captureGraph'); }
  let outputs: T;
  try {
    outputs = tidy(() => noGrad(fn));
  } catch (err) {
    c.graphAbort();
    throw asDeviceError(err, 'captureGraph');
  }
  let handle: number;
  try { handle = c.graphEnd(); } catch (err) { throw asDeviceError(err, 'captureGraph'); }
  let live = true;
  return {
    outputs,
    replay() {
      if (!live) throw new ArgumentError('captureGraph: replay() after dispose()');
      try { c.graphReplay(handle); } catch (err) { throw asDeviceError(err, 'graph replay'); }
    },
    dispose() {
      if (!live) return;
      live = false;
      c.graphDestroy(handle);
      disposeAll(outputs);
    },
  };
}

function disposeAll(v: unknown, depth = 0): void {
  if (v instanceof Tensor) { v.dispose(); return; }
  if (v === null || typeof v !== 'object' || depth > 4) return;
  const items = Array.isArray(v) ? v : v instanceof Map ? [...v.values()] : Object.values(v as object);
  for (const x of items) disposeAll(x, depth + 1);
}

/**
 * Writes src into dst in place (src broadcast to dst's shape, cast to dst's dtype), with no
 * autograd: the way to feed new inputs to a captured graph. A CPU src is sent to dst's device first.
 */
export function copyInto(dst: Tensor, src: Tensor): Tensor {
  let s = src;
  if (s.device !== dst.device) s = moveRaw(s, dst.device);
  try {
    let v: Tensor;
    try { v = expandView(s, dst.shape, 'copyInto'); } catch { throw new ShapeError(`copyInto: cannot write ${shapeStr(src.shape)} into ${shapeStr(dst.shape)}`); }
    kernel('copyCast', v, dst);
    v.dispose();
  } finally {
    if (s !== src) s.dispose();
  }
  return dst;
}
