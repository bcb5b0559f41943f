// Which denoising steps compute the whole U-Net ("full" steps, which refresh the cache) and
// which reuse cached deep features. Step indices count sampling steps from 0 (the noisiest).
//
// Uniform 1:N is DeepCache's default. The non-uniform schedule reproduces the reference's
// `sample_from_quad_center` exactly, including its quirk: in Python `(-c) ** (1/p)` is a complex
// number, so the whole linspace and power run in complex arithmetic and `np.int32` keeps the
// truncated real part. A "corrected" real-valued formula gives different steps (see METHODS.md
// section 4.2), so we keep the reference's behaviour, which is what its published numbers used.
import { ArgumentError } from '@qdm/core';

/** Full steps at 0, N, 2N, ... */
export function uniformSchedule(numSteps: number, interval: number): number[] {
  checkSteps(numSteps, interval);
  const out: number[] = [];
  for (let i = 0; i < numSteps; i += interval) out.push(i);
  return out;
}

function checkSteps(numSteps: number, interval: number): void {
  if (!Number.isInteger(numSteps) || numSteps < 1) throw new ArgumentError(`cache schedule: numSteps must be a positive integer, got ${numSteps}`);
  if (!Number.isInteger(interval) || interval < 1) throw new ArgumentError(`cache schedule: interval must be a positive integer, got ${interval}`);
}

/** z^p for complex z = (re, im), principal branch (as Python's ** on complex numbers). */
function complexPow(re: number, im: number, p: number): [number, number] {
  if (re === 0 && im === 0) return [0, 0];
  const r = Math.hypot(re, im), th = Math.atan2(im, re);
  const rp = Math.pow(r, p);
  return [rp * Math.cos(p * th), rp * Math.sin(p * th)];
}

/**
 * DeepCache's non-uniform schedule: ceil(T / N) full steps, denser around step `center`.
 * Starts from `power` and lowers it by 0.02 until the count is right (as the reference does);
 * returns the steps and the power used.
 */
export function nonUniformSchedule(numSteps: number, interval: number, center = 15, power = 1.4): { steps: number[]; power: number } {
  checkSteps(numSteps, interval);
  const n = Math.ceil(numSteps / interval);
  if (n <= 1) return { steps: [0], power };
  let p = power;
  while (p > 1) {
    // start = (-c)^(1/p) as a complex number; stop = (T - c)^(1/p), real
    const [sRe, sIm] = complexPow(-center, 0, 1 / p);
    const [eRe, eIm] = complexPow(numSteps - center, 0, 1 / p);
    const values: number[] = [];
    for (let k = 0; k <= n; ++k) {
      // numpy.linspace: start + k * (stop - start) / num, with the last point set to stop exactly
      const re = k === n ? eRe : sRe + (k * (eRe - sRe)) / n;
      const im = k === n ? eIm : sIm + (k * (eIm - sIm)) / n;
      values.push(Math.trunc(complexPow(re, im, p)[0]));
    }
    const uniq = [...new Set(values)].sort((a, b) => a - b);
    const steps = [0, ...uniq.slice(1, -1).map((v) => v + center)];
    if (steps.length === n) return { steps, power: p };
    p -= 0.02;
  }
  throw new ArgumentError(`nonUniformSchedule: no power above 1 gives ${n} full steps for ${numSteps} steps around centre ${center}; use a smaller interval or centre`);
}
