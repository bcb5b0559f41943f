// Atomic file writes: the data goes to a temporary file in the target's directory, is flushed to
// disk (fsync), and only then renamed over the target. A reader therefore sees either the old file
// or the complete new one, never a half-written one, even if the process dies midway. The temp file
// is removed on any error. Chunks are written one by one so large payloads (model weights) never
// have to be joined into one buffer.
//
// The module uses the default `fs` object (not named imports) on purpose: tests replace
// fs.writeSync to simulate a failure midway.
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';

// Node refuses single reads/writes above 2 GiB - 1; stay well below.
const MAX_IO_CHUNK = 1 << 30;

function writeAll(fd: number, chunk: Uint8Array): void {
  let done = 0;
  while (done < chunk.byteLength) {
    const len = Math.min(MAX_IO_CHUNK, chunk.byteLength - done);
    const n = fs.writeSync(fd, chunk, done, len);
    if (n <= 0) throw new Error(`writeFileAtomic: write returned ${n}`);
    done += n;
  }
}

/** Writes `data` to `path` atomically (temp file in the same directory, fsync, rename). */
export function writeFileAtomic(path_: string, data: string | Uint8Array | Uint8Array[]): void {
  writeFileAtomicChunks(path_, typeof data === 'string' ? [Buffer.from(data, 'utf8')] : Array.isArray(data) ? data : [data]);
}

/**
 * Like writeFileAtomic, for chunks produced lazily (a generator may build each chunk just before it
 * is written). An exception from the iterator leaves the target untouched, like a write error.
 */
export function writeFileAtomicChunks(path_: string, chunks: Iterable<Uint8Array>): void {
  const tmp = `${path_}.tmp-${process.pid}-${randomBytes(6).toString('hex')}`;
  let fd: number | null = null;
  try {
    // 'wx': never follow or clobber an existing file with the temp name.
    fd = fs.openSync(tmp, 'wx', 0o666);
    for (const c of chunks) writeAll(fd, c);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fd = null;
    fs.renameSync(tmp, path_);
  } catch (err) {
    if (fd !== null) { try { fs.closeSync(fd); } catch { /* already failing; keep the first error */ } }
    try { fs.unlinkSync(tmp); } catch { /* the temp file may not exist */ }
    throw err;
  }
  // Make the rename itself durable. Not every platform can fsync a directory; that is not an error.
  try {
    const dfd = fs.openSync(path.dirname(path.resolve(path_)), 'r');
    try { fs.fsyncSync(dfd); } finally { fs.closeSync(dfd); }
  } catch { /* best effort */ }
}
