// Scalar schedule math shared by the schedulers: beta schedules, cumulative alphas, zero-SNR
// rescaling, and the numpy idioms diffusers builds timesteps with. Values that diffusers holds
// in float32 tensors (betas, alphas_cumprod, sigmas) are rounded to float32 here (Math.fround)
// so that the lists match diffusers bit for bit where it matters (timesteps, sigma tables);
// everything derived from them is computed in float64.
import { ArgumentError } from '../errors.js';

export const f32 = Math.fround;

/** numpy.linspace(start, stop, num) in float64: start + i*step, last element exactly stop. */
export function npLinspace(start: number, stop: number, num: number, endpoint = true): number[] {
  if (num <= 0) return [];
  const div = endpoint ? num - 1 : num;
  if (div === 0) return [start];
  const step = (stop - start) / div;
  const out = new Array<number>(num);
  for (let i = 0; i < num; ++i) out[i] = i * step + start;
  if (endpoint && num > 1) out[num - 1] = stop;
  return out;
}

/** numpy.arange(start, stop, step) for a float or integer step. */
export function npArange(start: number, stop: number, step: number): number[] {
  const n = Math.max(0, Math.ceil((stop - start) / step));
  const out = new Array<number>(n);
  for (let i = 0; i < n; ++i) out[i] = start + i * step;
  return out;
}

/** numpy.round: round half to even. */
export function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** numpy.interp(x, [0, 1, ..., len-1], table) for x inside [0, len-1] (clamped outside). */
export function interpIndex(x: number, table: ArrayLike<number>): number {
  const n = table.length;
  if (x <= 0) return table[0]!;
  if (x >= n - 1) return table[n - 1]!;
  const i = Math.floor(x);
  const frac = x - i;
  const a = table[i]!, b = table[i + 1]!;
  // numpy's interp: slope*(x - xp[i]) + fp[i], with the exact endpoint when frac is 0.
  return frac === 0 ? a : (b - a) * frac + a;
}

/** alpha_bar(t) of the cosine schedule (Nichol & Dhariwal), as diffusers' betas_for_alpha_bar. */
function cosineBetas(n: number, maxBeta = 0.999): number[] {
  const alphaBar = (t: number) => Math.cos(((t + 0.008) / 1.008) * Math.PI / 2) ** 2;
  const out: number[] = [];
  for (let i = 0; i < n; ++i) out.push(Math.min(1 - alphaBar((i + 1) / n) / alphaBar(i / n), maxBeta));
  return out;
}

export interface BetaConfig {
  num_train_timesteps: number;
  beta_start: number;
  beta_end: number;
  beta_schedule: string;
  trained_betas: number[] | null;
  rescale_betas_zero_snr: boolean;
}

/** diffusers' rescale_zero_terminal_snr (Lin et al. 2023), in float32 like diffusers. */
export function rescaleZeroTerminalSnr(betas: Float64Array): Float64Array {
  const n = betas.length;
  const sqrtBar = new Float64Array(n);
  let cum = 1;
  for (let i = 0; i < n; ++i) { cum = f32(cum * f32(1 - betas[i]!)); sqrtBar[i] = f32(Math.sqrt(cum)); }
  const a0 = sqrtBar[0]!, aT = sqrtBar[n - 1]!;
  const scale = f32(a0 / f32(a0 - aT));
  const bar = new Float64Array(n);
  for (let i = 0; i < n; ++i) { const s = f32(f32(sqrtBar[i]! - aT) * scale); bar[i] = f32(s * s); }
  const out = new Float64Array(n);
  out[0] = f32(1 - bar[0]!);
  for (let i = 1; i < n; ++i) out[i] = f32(1 - f32(bar[i]! / bar[i - 1]!));
  return out;
}

/** The training betas (float32 values) of a diffusers config. */
export function makeBetas(cfg: BetaConfig): Float64Array {
  const n = cfg.num_train_timesteps;
  let betas: Float64Array;
  if (cfg.trained_betas) {
    if (cfg.trained_betas.length !== n) throw new ArgumentError(`scheduler config: trained_betas has ${cfg.trained_betas.length} values but num_train_timesteps is ${n}`);
    betas = Float64Array.from(cfg.trained_betas, f32);
  } else if (cfg.beta_schedule === 'linear') {
    betas = Float64Array.from(npLinspace(cfg.beta_start, cfg.beta_end, n), f32);
  } else if (cfg.beta_schedule === 'scaled_linear') {
    betas = Float64Array.from(npLinspace(Math.sqrt(cfg.beta_start), Math.sqrt(cfg.beta_end), n), (v) => { const s = f32(v); return f32(s * s); });
  } else if (cfg.beta_schedule === 'squaredcos_cap_v2') {
    betas = Float64Array.from(cosineBetas(n), f32);
  } else {
    throw new ArgumentError(`scheduler config: beta_schedule '${cfg.beta_schedule}' is not one of linear, scaled_linear, squaredcos_cap_v2`);
  }
  return cfg.rescale_betas_zero_snr ? rescaleZeroTerminalSnr(betas) : betas;
}

/** Cumulative product of (1 - beta), accumulated in float32 as torch.cumprod does. */
export function cumprodAlphas(betas: Float64Array): Float64Array {
  const out = new Float64Array(betas.length);
  let cum = 1;
  for (let i = 0; i < betas.length; ++i) { cum = f32(cum * f32(1 - betas[i]!)); out[i] = cum; }
  return out;
}

/** sqrt((1 - a) / a) per cumulative alpha, in float32 like diffusers' sigma tables. */
export function sigmasFromAlphas(alphasCumprod: ArrayLike<number>): Float64Array {
  return Float64Array.from(alphasCumprod as ArrayLike<number>, (a) => f32(Math.sqrt(f32(f32(1 - a) / a))));
}

/**
 * The integer timesteps DDIM/DDPM/PNDM use for n inference steps (descending), per
 * timestep_spacing, exactly as diffusers (numpy round = half to even, int64 cast).
 */
export function integerTimesteps(spacing: string, numTrain: number, n: number, stepsOffset: number): number[] {
  if (spacing === 'linspace') return npLinspace(0, numTrain - 1, n).map(roundHalfEven).reverse();
  if (spacing === 'leading') {
    const ratio = Math.floor(numTrain / n);
    const out: number[] = [];
    for (let i = n - 1; i >= 0; --i) out.push(i * ratio + stepsOffset);
    return out;
  }
  if (spacing === 'trailing') {
    const ratio = numTrain / n;
    return npArange(numTrain, 0, -ratio).map((v) => Math.trunc(roundHalfEven(v)) - 1);
  }
  throw new ArgumentError(`scheduler: timestep_spacing '${spacing}' is not one of leading, trailing, linspace`);
}

/** Karras et al. (2022) sigmas: rho = 7 interpolation from sigmaMax down to sigmaMin (n values). */
export function karrasSigmas(sigmaMin: number, sigmaMax: number, n: number): number[] {
  const rho = 7;
  const lo = sigmaMin ** (1 / rho), hi = sigmaMax ** (1 / rho);
  return npLinspace(0, 1, n).map((r) => (hi + r * (lo - hi)) ** rho);
}

/**
 * diffusers' _sigma_to_t: the fractional training timestep whose sigma is `sigma`, by linear
 * interpolation in log sigma over the (float32) training sigma table.
 */
export function sigmaToT(sigma: number, trainSigmas: ArrayLike<number>): number {
  const n = trainSigmas.length;
  const logSigma = Math.log(Math.max(sigma, 1e-10));
  const logSigmas = Array.from(trainSigmas, (s) => f32(Math.log(s)));
  // cumsum(dists >= 0).argmax(): the last index whose log sigma is <= logSigma (0 if none)
  let low = 0;
  for (let i = 0; i < n; ++i) if (logSigma - logSigmas[i]! >= 0) low = i;
  low = Math.min(low, n - 2);
  const lo = logSigmas[low]!, hi = logSigmas[low + 1]!;
  const w = Math.min(Math.max((lo - logSigma) / (lo - hi), 0), 1);
  return (1 - w) * low + w * (low + 1);
}
