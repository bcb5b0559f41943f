// Samples to pictures: [-1, 1] tensors to 8-bit pixels, grids, and a small PNG encoder
// (zlib from Node; no image library needed). Writes are atomic.
import { deflateSync } from 'node:zlib';
import { ArgumentError } from '../errors.js';
import type { Tensor } from '../tensor.js';
import { dataOf } from '../tensor-data.js';
import { writeFileAtomic } from '../io/atomic.js';

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; ++n) { let c = n; for (let k = 0; k < 8; ++k) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1; t[n] = c >>> 0; }
  return t;
})();
function crc32(buf: Uint8Array): number { let c = 0xffffffff; for (const b of buf) c = CRC_TABLE[(c ^ b) & 0xff]! ^ (c >>> 8); return (c ^ 0xffffffff) >>> 0; }

function chunk(type: string, data: Uint8Array): Buffer {
  const out = Buffer.alloc(12 + data.length);
  out.writeUInt32BE(data.length, 0);
  out.write(type, 4, 'ascii');
  Buffer.from(data).copy(out, 8);
  out.writeUInt32BE(crc32(out.subarray(4, 8 + data.length)), 8 + data.length);
  return out;
}

/** Encodes 8-bit pixels (row-major, interleaved channels: 1 gray, 3 RGB, 4 RGBA) as PNG. */
export function encodePng(width: number, height: number, channels: 1 | 3 | 4, pixels: Uint8Array): Buffer {
  if (pixels.length !== width * height * channels) throw new ArgumentError(`encodePng: ${pixels.length} bytes for ${width}x${height}x${channels}`);
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0); ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; ihdr[9] = channels === 1 ? 0 : channels === 3 ? 2 : 6; ihdr[10] = 0; ihdr[11] = 0; ihdr[12] = 0;
  const stride = width * channels;
  const raw = Buffer.alloc((stride + 1) * height);
  for (let y = 0; y < height; ++y) { raw[y * (stride + 1)] = 0; Buffer.from(pixels.buffer, pixels.byteOffset + y * stride, stride).copy(raw, y * (stride + 1) + 1); }
  return Buffer.concat([Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]), chunk('IHDR', ihdr), chunk('IDAT', deflateSync(raw)), chunk('IEND', new Uint8Array(0))]);
}

/** [B, C, H, W] samples in `range` (default [-1, 1]) to B images of interleaved 8-bit pixels. */
export function toImages(samples: Tensor, range: [number, number] = [-1, 1]): { width: number; height: number; channels: 1 | 3 | 4; pixels: Uint8Array }[] {
  if (samples.ndim !== 4) throw new ArgumentError(`toImages: expected [B, C, H, W], got [${samples.shape.join(', ')}]`);
  const [B, C, H, W] = samples.shape as [number, number, number, number];
  if (C !== 1 && C !== 3 && C !== 4) throw new ArgumentError(`toImages: ${C} channels (expected 1, 3 or 4)`);
  const d = dataOf(samples);
  const [lo, hi] = range;
  const out = [];
  for (let b = 0; b < B; ++b) {
    const px = new Uint8Array(H * W * C);
    for (let c = 0; c < C; ++c) for (let i = 0; i < H * W; ++i) {
      const v = (Number(d[((b * C + c) * H * W) + i]) - lo) / (hi - lo);
      px[i * C + c] = Math.round(Math.min(1, Math.max(0, Number.isFinite(v) ? v : 0)) * 255);
    }
    out.push({ width: W, height: H, channels: C as 1 | 3 | 4, pixels: px });
  }
  return out;
}

/** Tiles B samples into one image, `nrow` per row, with `padding` pixels of `padValue` (0..255). */
export function imageGrid(samples: Tensor, opts: { nrow?: number; padding?: number; padValue?: number; range?: [number, number] } = {}): { width: number; height: number; channels: 1 | 3 | 4; pixels: Uint8Array } {
  const imgs = toImages(samples, opts.range);
  const n = imgs.length;
  const nrow = opts.nrow ?? Math.ceil(Math.sqrt(n));
  const pad = opts.padding ?? 2;
  const rows = Math.ceil(n / nrow);
  const { width: w, height: h, channels: c } = imgs[0]!;
  const W = nrow * (w + pad) + pad, H = rows * (h + pad) + pad;
  const px = new Uint8Array(W * H * c).fill(opts.padValue ?? 0);
  imgs.forEach((img, k) => {
    const x0 = pad + (k % nrow) * (w + pad), y0 = pad + Math.floor(k / nrow) * (h + pad);
    for (let y = 0; y < h; ++y) px.set(img.pixels.subarray(y * w * c, (y + 1) * w * c), ((y0 + y) * W + x0) * c);
  });
  return { width: W, height: H, channels: c, pixels: px };
}

/** Writes a PNG grid of samples (atomically). */
export async function saveImageGrid(path: string, samples: Tensor, opts: { nrow?: number; padding?: number; range?: [number, number] } = {}): Promise<void> {
  const g = imageGrid(samples, opts);
  await writeFileAtomic(path, encodePng(g.width, g.height, g.channels, g.pixels));
}
