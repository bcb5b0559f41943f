// safetensors reading and writing (https://github.com/huggingface/safetensors).
//
// Layout: u64 little-endian N, N bytes of UTF-8 JSON header, then the data section. The header is
// validated as strictly as the Rust reference (size limits, exact entry fields, offsets that tile
// the data section with no gaps, overlaps or trailing bytes, sizes matching shape x dtype computed
// in BigInt so absurd declared shapes cannot overflow), because a loader that accepts a malformed
// file hands garbage weights to a model much later, far from the cause.
//
// Reads are per tensor: the header is parsed once and each tensor's bytes are read with a numeric
// file position straight into the new tensor's storage (no whole-file buffer, files over 4 GiB work).
// Writes go through writeFileAtomic, one chunk per tensor, sorted by name so equal inputs give
// byte-identical files.
//
// Our packed 4-bit dtype has no safetensors name. It is stored as U8 holding the packed bytes, with
// shape [..., last/2] (or [ceil(numel/2)] when the last dimension is odd or the tensor is a scalar),
// plus metadata `qdm.dtype.<name>` = "i4" and `qdm.shape.<name>` = the JSON shape. Reading restores
// dtype and shape and drops those keys from the returned metadata. F64 is read as f32 (no f64
// dtype here); BOOL is read as u8.
import fs from 'node:fs';
import os from 'node:os';
import { QdmError, ArgumentError } from '../errors.js';
import { byteSize, checkDType, isFloating, type DType } from '../dtype.js';
import { Tensor, numelOf, shapeStr } from '../tensor.js';
import { empty } from '../ops/util.js';
import { castRaw, moveRaw } from '../ops/creation.js';
import { writeFileAtomicChunks } from './atomic.js';

/** A malformed, truncated or unreadable safetensors file; the message names the file. */
export class SafetensorsError extends QdmError {
  constructor(message: string, options?: { cause?: unknown }) { super('QDM_SAFETENSORS', message, options); }
}

export interface SafetensorsEntry {
  name: string;
  /** The dtype the tensor is read as (F64 -> f32, BOOL -> u8, qdm i4 convention -> i4). */
  dtype: DType;
  /** The logical shape (for i4 tensors the restored one, not the packed U8 shape). */
  shape: number[];
  /** Byte offsets relative to the data section. */
  begin: number;
  end: number;
  /** The dtype name as written in the file ('F32', 'BF16', ...). */
  fileDtype: string;
}

export interface SafetensorsHeader {
  path: string;
  /** In file order (by begin offset). */
  entries: Map<string, SafetensorsEntry>;
  /** The `__metadata__` strings, without the qdm.dtype./qdm.shape. keys of the i4 convention. */
  metadata: Record<string, string>;
  /** Absolute file offset of the data section (8 + N). */
  dataStart: number;
  fileSize: number;
}

// The Rust reference's limit on N.
const MAX_HEADER_BYTES = 100_000_000;
const MAX_IO_CHUNK = 1 << 30;

// File dtype -> [bytes per element, our dtype]; null marks a known but unsupported name.
const FILE_DTYPES: Record<string, [number, DType] | null> = {
  F64: [8, 'f32'], F32: [4, 'f32'], F16: [2, 'f16'], BF16: [2, 'bf16'], I64: [8, 'i64'], I32: [4, 'i32'],
  I8: [1, 'i8'], U8: [1, 'u8'], BOOL: [1, 'u8'], F8_E4M3: [1, 'f8e4m3'],
  I16: null, U16: null, U32: null, U64: null, F8_E5M2: null, F8_E8M0: null, F4: null, F6_E2M3: null, F6_E3M2: null, C64: null,
};

const WRITE_NAMES: Record<Exclude<DType, 'i4'>, string> = {
  f32: 'F32', f16: 'F16', bf16: 'BF16', i8: 'I8', u8: 'U8', i32: 'I32', i64: 'I64', f8e4m3: 'F8_E4M3',
};

const I4_DTYPE_KEY = 'qdm.dtype.';
const I4_SHAPE_KEY = 'qdm.shape.';

// Names come from files and callers: '__proto__' must become an own property, not a prototype.
function setOwn<T>(obj: Record<string, T>, key: string, value: T): void {
  Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
}

function fail(path: string, problem: string, cause?: unknown): never {
  throw new SafetensorsError(`safetensors file ${path}: ${problem}`, cause === undefined ? undefined : { cause });
}

function checkLittleEndian(): void {
  if (os.endianness() !== 'LE') throw new SafetensorsError('safetensors: big-endian hosts are not supported (the format is little-endian)');
}

function openForRead(path: string): number {
  try {
    return fs.openSync(path, 'r');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') fail(path, 'no such file', err);
    if (code === 'EISDIR') fail(path, 'is a directory', err);
    fail(path, `cannot open (${(err as Error).message})`, err);
  }
}

/** Reads exactly `bytes.byteLength` bytes at `position`, in chunks Node accepts. */
function readExact(fd: number, path: string, bytes: Uint8Array, position: number): void {
  let done = 0;
  while (done < bytes.byteLength) {
    const len = Math.min(MAX_IO_CHUNK, bytes.byteLength - done);
    const n = fs.readSync(fd, bytes, done, len, position + done);
    if (n === 0) fail(path, `unexpected end of file at byte ${position + done} (the file shrank while reading?)`);
    done += n;
  }
}

const isPlainObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function parseShape(path: string, what: string, v: unknown): number[] {
  if (!Array.isArray(v)) fail(path, `${what}: shape must be an array of integers (got ${JSON.stringify(v)})`);
  for (const d of v) {
    if (typeof d !== 'number' || !Number.isSafeInteger(d)) fail(path, `${what}: shape ${JSON.stringify(v)} has an entry that is not an integer below 2^53`);
    if (d < 0) fail(path, `${what}: shape ${JSON.stringify(v)} has a negative entry`);
  }
  return v as number[];
}

function bigNumel(shape: readonly number[]): bigint { let n = 1n; for (const d of shape) n *= BigInt(d); return n; }

function parseHeaderFromFd(fd: number, path: string): SafetensorsHeader {
  const fileSize = fs.fstatSync(fd).size;
  if (fileSize < 8) fail(path, `file is ${fileSize} bytes, too short for the 8-byte header length`);
  const lenBuf = Buffer.alloc(8);
  readExact(fd, path, lenBuf, 0);
  const n = lenBuf.readBigUInt64LE(0);
  if (n > BigInt(MAX_HEADER_BYTES)) fail(path, `header length ${n} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
  const headerLen = Number(n);
  if (8 + headerLen > fileSize) fail(path, `header length ${headerLen} runs past the end of the file (${fileSize} bytes)`);
  const raw = new Uint8Array(headerLen);
  readExact(fd, path, raw, 8);

  let text: string;
  try { text = new TextDecoder('utf-8', { fatal: true }).decode(raw); } catch (err) { fail(path, 'header is not valid UTF-8', err); }
  let json: unknown;
  try { json = JSON.parse(text); } catch (err) { fail(path, `header is not valid JSON (${(err as Error).message})`, err); }
  if (!isPlainObject(json)) fail(path, `header must be a JSON object (got ${Array.isArray(json) ? 'an array' : json === null ? 'null' : typeof json})`);

  // __metadata__: an object of strings.
  const rawMeta: Record<string, string> = {};
  if (Object.prototype.hasOwnProperty.call(json, '__metadata__')) {
    const m = json['__metadata__'];
    if (!isPlainObject(m)) fail(path, '__metadata__ must be an object of strings');
    for (const [k, v] of Object.entries(m)) {
      if (typeof v !== 'string') fail(path, `__metadata__ value for '${k}' must be a string (got ${JSON.stringify(v)})`);
      setOwn(rawMeta, k, v);
    }
  }

  const dataSize = fileSize - 8 - headerLen;
  const entries: SafetensorsEntry[] = [];
  for (const [name, info] of Object.entries(json)) {
    if (name === '__metadata__') continue;
    const what = `tensor '${name}'`;
    if (!isPlainObject(info)) fail(path, `${what}: entry must be an object with dtype, shape and data_offsets`);
    const keys = Object.keys(info).sort();
    if (keys.join(',') !== 'data_offsets,dtype,shape') fail(path, `${what}: entry must have exactly dtype, shape, data_offsets (got ${keys.join(', ') || 'no fields'})`);
    const dtypeName = info['dtype'];
    if (typeof dtypeName !== 'string') fail(path, `${what}: dtype must be a string`);
    if (!(dtypeName in FILE_DTYPES)) fail(path, `${what}: unknown dtype '${dtypeName}'`);
    const dt = FILE_DTYPES[dtypeName];
    if (!dt) fail(path, `${what}: unsupported dtype '${dtypeName}' (supported: ${Object.keys(FILE_DTYPES).filter((k) => FILE_DTYPES[k]).join(' ')})`);
    const shape = parseShape(path, what, info['shape']);
    const offs = info['data_offsets'];
    if (!Array.isArray(offs) || offs.length !== 2 || !offs.every((o) => typeof o === 'number' && Number.isSafeInteger(o) && o >= 0)) {
      fail(path, `${what}: data_offsets must be two non-negative integers (got ${JSON.stringify(offs)})`);
    }
    const [begin, end] = offs as [number, number];
    if (end < begin) fail(path, `${what}: data_offsets [${begin}, ${end}] end before they begin`);
    const expected = bigNumel(shape) * BigInt(dt[0]);
    if (expected !== BigInt(end - begin)) {
      fail(path, `${what}: shape ${shapeStr(shape)} of ${dtypeName} needs ${expected} bytes but data_offsets [${begin}, ${end}] hold ${end - begin}`);
    }
    entries.push({ name, dtype: dt[1], shape: [...shape], begin, end, fileDtype: dtypeName });
  }

  // The entries must tile the data section exactly.
  entries.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let cursor = 0;
  for (const e of entries) {
    if (e.begin < cursor) fail(path, `tensor '${e.name}' data_offsets [${e.begin}, ${e.end}] overlap the previous tensor (which ends at ${cursor})`);
    if (e.begin > cursor) fail(path, `gap in the data section: bytes ${cursor}..${e.begin} belong to no tensor (before '${e.name}')`);
    cursor = e.end;
  }
  if (cursor > dataSize) fail(path, `truncated: tensors need ${cursor} data bytes but the file holds ${dataSize}`);
  if (cursor < dataSize) fail(path, `${dataSize - cursor} trailing bytes after the last tensor are not accounted for by the header`);

  // The i4 convention: restore dtype and shape, keep the remaining metadata.
  const byName = new Map(entries.map((e) => [e.name, e]));
  const metadata: Record<string, string> = {};
  for (const [k, v] of Object.entries(rawMeta)) {
    if (k.startsWith(I4_SHAPE_KEY)) {
      if (rawMeta[I4_DTYPE_KEY + k.slice(I4_SHAPE_KEY.length)] === undefined) fail(path, `metadata '${k}' has no matching '${I4_DTYPE_KEY}${k.slice(I4_SHAPE_KEY.length)}'`);
      continue;
    }
    if (!k.startsWith(I4_DTYPE_KEY)) { setOwn(metadata, k, v); continue; }
    const name = k.slice(I4_DTYPE_KEY.length);
    if (v !== 'i4') fail(path, `metadata '${k}' = '${v}': only 'i4' is a qdm dtype override`);
    const e = byName.get(name);
    if (!e) fail(path, `metadata '${k}' names tensor '${name}', which is not in the file`);
    if (e.fileDtype !== 'U8') fail(path, `tensor '${name}' is marked i4 but stored as ${e.fileDtype} (expected U8)`);
    const shapeText = rawMeta[I4_SHAPE_KEY + name];
    if (shapeText === undefined) fail(path, `tensor '${name}' is marked i4 but metadata '${I4_SHAPE_KEY}${name}' is missing`);
    let shapeJson: unknown;
    try { shapeJson = JSON.parse(shapeText); } catch (err) { fail(path, `metadata '${I4_SHAPE_KEY}${name}' is not JSON`, err); }
    const shape = parseShape(path, `tensor '${name}' (i4)`, shapeJson);
    const packed = (bigNumel(shape) + 1n) / 2n;
    if (packed !== BigInt(e.end - e.begin)) fail(path, `tensor '${name}': i4 shape ${shapeStr(shape)} needs ${packed} packed bytes but ${e.end - e.begin} are stored`);
    e.dtype = 'i4';
    e.shape = [...shape];
  }

  return { path, entries: new Map(entries.map((e) => [e.name, e])), metadata, dataStart: 8 + headerLen, fileSize };
}

/** Parses and validates a file's header (reads only the first 8 + N bytes). */
export function readSafetensorsHeader(path: string): SafetensorsHeader {
  const fd = openForRead(path);
  try { return parseHeaderFromFd(fd, path); } finally { fs.closeSync(fd); }
}

function bytesOf(data: ArrayBufferView, byteLength: number): Uint8Array { return new Uint8Array(data.buffer, data.byteOffset, byteLength); }

function readEntry(fd: number, header: SafetensorsHeader, e: SafetensorsEntry): Tensor {
  const position = header.dataStart + e.begin;
  if (e.fileDtype === 'F64') {
    const n = numelOf(e.shape);
    const wide = new Float64Array(n);
    readExact(fd, header.path, bytesOf(wide, n * 8), position);
    const t = empty(e.shape, 'f32');
    (t.cpuData() as Float32Array).set(wide);
    return t;
  }
  const t = empty(e.shape, e.dtype);
  const nbytes = byteSize(e.dtype, numelOf(e.shape));
  if (nbytes !== e.end - e.begin) fail(header.path, `tensor '${e.name}': internal size mismatch`);
  if (nbytes > 0) readExact(fd, header.path, bytesOf(t.cpuData(), nbytes), position);
  return t;
}

function withDType(t: Tensor, dtype: DType | undefined): Tensor {
  if (!dtype || dtype === t.dtype) return t;
  const c = castRaw(t, dtype);
  t.dispose();
  return c;
}

function checkUnchanged(fd: number, header: SafetensorsHeader): void {
  const size = fs.fstatSync(fd).size;
  if (size !== header.fileSize) fail(header.path, `file changed since its header was read (${header.fileSize} -> ${size} bytes)`);
}

function unknownName(header: SafetensorsHeader, name: string): never {
  const names = [...header.entries.keys()];
  const some = names.slice(0, 5).map((n) => `'${n}'`).join(', ');
  fail(header.path, `no tensor named '${name}' (${names.length} tensors${names.length ? `: ${some}${names.length > 5 ? ', ...' : ''}` : ''})`);
}

/** Reads one tensor (only its bytes) onto the CPU; opts.dtype converts it. */
export function readSafetensorsTensor(header: SafetensorsHeader, name: string, opts: { dtype?: DType } = {}): Tensor {
  checkLittleEndian();
  const dtype = opts.dtype === undefined ? undefined : checkDType(opts.dtype);
  const e = header.entries.get(name);
  if (!e) unknownName(header, name);
  const fd = openForRead(header.path);
  try {
    checkUnchanged(fd, header);
    return withDType(readEntry(fd, header, e), dtype);
  } finally { fs.closeSync(fd); }
}

/**
 * Loads every tensor (or those passing opts.filter) onto the CPU. opts.dtype converts the
 * floating-point tensors only, so integer buffers (step counters, indices) keep their values.
 */
export function loadSafetensors(path: string, opts: { dtype?: DType; filter?: (name: string) => boolean } = {}): Record<string, Tensor> {
  checkLittleEndian();
  const dtype = opts.dtype === undefined ? undefined : checkDType(opts.dtype);
  const fd = openForRead(path);
  const out: Record<string, Tensor> = {};
  try {
    const header = parseHeaderFromFd(fd, path);
    // File order: the reads walk the file front to back.
    for (const e of header.entries.values()) {
      if (opts.filter && !opts.filter(e.name)) continue;
      const t = readEntry(fd, header, e);
      setOwn(out, e.name, isFloating(t.dtype) ? withDType(t, dtype) : t);
    }
    return out;
  } catch (err) {
    for (const t of Object.values(out)) t.dispose();
    throw err;
  } finally { fs.closeSync(fd); }
}

// ---- writing ------------------------------------------------------------------------------

interface PlannedTensor { name: string; tensor: Tensor; fileDtype: string; fileShape: number[]; nbytes: number }

function i4FileShape(shape: readonly number[]): number[] {
  const last = shape[shape.length - 1];
  if (last !== undefined && last % 2 === 0) return [...shape.slice(0, -1), last / 2];
  return [byteSize('i4', numelOf(shape))];
}

/** A CPU, contiguous, byte-aligned copy or view of t; `owned` tensors are disposed after writing. */
function hostContiguous(t: Tensor): { t: Tensor; owned: boolean } {
  let cur = t;
  let owned = false;
  // Make it dense on its own device first (i4 views starting mid-byte need repacking as much as
  // strided ones), so a device transfer is always one dense block.
  if (!cur.isContiguous() || (cur.dtype === 'i4' && cur.offset % 2 !== 0)) { cur = castRaw(cur, cur.dtype); owned = true; }
  if (cur.device !== 'cpu') {
    const host = moveRaw(cur, 'cpu');
    if (owned) cur.dispose();
    cur = host;
    owned = true;
  }
  return { t: cur, owned };
}

function tensorBytes(t: Tensor, nbytes: number): Uint8Array {
  const d = t.cpuData();
  const start = t.dtype === 'i4' ? t.offset / 2 : t.offset * d.BYTES_PER_ELEMENT;
  return new Uint8Array(d.buffer, d.byteOffset + start, nbytes);
}

function* dataChunks(header: Uint8Array, planned: PlannedTensor[]): Generator<Uint8Array> {
  yield header;
  for (const p of planned) {
    if (p.nbytes === 0) continue;
    // Copies (non-contiguous or device tensors) are made one at a time, just before they are written.
    const { t, owned } = hostContiguous(p.tensor);
    try { yield tensorBytes(t, p.nbytes); } finally { if (owned) t.dispose(); }
  }
}

/**
 * Writes tensors (sorted by name) and string metadata to `path` atomically. i4 tensors follow the
 * qdm convention described at the top of this file.
 */
export function saveSafetensors(path: string, tensors: Record<string, Tensor> | Map<string, Tensor>, metadata: Record<string, string> = {}): void {
  checkLittleEndian();
  const pairs = tensors instanceof Map ? [...tensors.entries()] : Object.entries(tensors);
  if (!isPlainObject(metadata)) throw new ArgumentError(`saveSafetensors(${path}): metadata must be an object of strings`);
  const meta: Record<string, string> = {};
  for (const [k, v] of Object.entries(metadata)) {
    if (typeof v !== 'string') throw new ArgumentError(`saveSafetensors(${path}): metadata value for '${k}' must be a string (got ${typeof v})`);
    if (k.startsWith(I4_DTYPE_KEY) || k.startsWith(I4_SHAPE_KEY)) throw new ArgumentError(`saveSafetensors(${path}): metadata key '${k}' is reserved for the i4 convention`);
    setOwn(meta, k, v);
  }

  const planned: PlannedTensor[] = [];
  for (const [name, t] of pairs) {
    if (typeof name !== 'string') throw new ArgumentError(`saveSafetensors(${path}): tensor names must be strings`);
    if (name === '__metadata__') throw new ArgumentError(`saveSafetensors(${path}): '__metadata__' cannot be a tensor name`);
    if (!(t instanceof Tensor)) throw new ArgumentError(`saveSafetensors(${path}): '${name}' is not a Tensor`);
    t.assertLive();
    if (t.storage.meta) throw new ArgumentError(`saveSafetensors(${path}): '${name}' is shape-only (built under withMetaTensors) and has no data`);
    const nbytes = byteSize(t.dtype, numelOf(t.shape));
    if (t.dtype === 'i4') {
      planned.push({ name, tensor: t, fileDtype: 'U8', fileShape: i4FileShape(t.shape), nbytes });
      setOwn(meta, I4_DTYPE_KEY + name, 'i4');
      setOwn(meta, I4_SHAPE_KEY + name, JSON.stringify(t.shape));
    } else {
      planned.push({ name, tensor: t, fileDtype: WRITE_NAMES[t.dtype], fileShape: [...t.shape], nbytes });
    }
  }
  planned.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (let i = 1; i < planned.length; ++i) {
    if (planned[i]!.name === planned[i - 1]!.name) throw new ArgumentError(`saveSafetensors(${path}): duplicate tensor name '${planned[i]!.name}'`);
  }

  const json: Record<string, unknown> = {};
  const metaKeys = Object.keys(meta).sort();
  if (metaKeys.length) {
    const m: Record<string, string> = {};
    for (const k of metaKeys) setOwn(m, k, meta[k]!);
    json['__metadata__'] = m;
  }
  let offset = 0;
  for (const p of planned) {
    setOwn(json, p.name, { dtype: p.fileDtype, shape: p.fileShape, data_offsets: [offset, offset + p.nbytes] });
    offset += p.nbytes;
  }
  const text = Buffer.from(JSON.stringify(json), 'utf8');
  const headerLen = Math.ceil(text.byteLength / 8) * 8;
  const header = Buffer.alloc(8 + headerLen, 0x20);
  header.writeBigUInt64LE(BigInt(headerLen), 0);
  text.copy(header, 8);

  try {
    writeFileAtomicChunks(path, dataChunks(header, planned));
  } catch (err) {
    if (err instanceof QdmError) throw err;
    fail(path, `cannot write (${(err as Error).message})`, err);
  }
}
