// safetensors io: bit-exact round trips of every dtype (including the packed i4 convention),
// metadata, views, empty and scalar tensors, a file built by hand in the reference layout, the
// corrupt-file suite (each a SafetensorsError naming the problem), atomic writes that leave the
// target untouched on failure, and the reference fixture if present.
import { describe, it, expect, beforeAll, afterAll, afterEach } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  saveSafetensors, loadSafetensors, readSafetensorsHeader, readSafetensorsTensor, writeFileAtomic, SafetensorsError,
  ArgumentError, zeros, full, tensor, transpose, slice, Tensor, type DType,
} from '@qdm/core';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const fixtures = process.env.QDM_FIXTURES ?? path.resolve(repoRoot, '../shared/fixtures');
const fixtureFile = path.join(fixtures, 'unet/ddpm-tiny/diffusion_pytorch_model.safetensors');
const fixturePresent = fs.existsSync(fixtureFile);
if (!fixturePresent) console.warn(`safetensors.test: ${fixtureFile} not found (set QDM_FIXTURES); the fixture test is skipped`);

let dir = '';
beforeAll(() => { dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qdm-safetensors-')); });
afterAll(() => { fs.rmSync(dir, { recursive: true, force: true }); });
let n = 0;
const tmpFile = (): string => path.join(dir, `t${n++}.safetensors`);

/** Raw bytes of a tensor's storage (the tensors here are contiguous with offset 0). */
function rawBytes(t: Tensor): Uint8Array {
  const d = t.cpuData();
  return new Uint8Array(d.buffer, d.byteOffset, d.byteLength).slice();
}

/** A tensor of the dtype whose storage holds pseudo-random bytes (every bit pattern, NaNs included). */
function randomBits(shape: number[], dtype: DType, seed: number): Tensor {
  const t = zeros(shape, { dtype });
  const d = t.cpuData();
  const b = new Uint8Array(d.buffer, d.byteOffset, d.byteLength);
  let s = seed;
  for (let i = 0; i < b.length; ++i) { s = (s * 1103515245 + 12345) >>> 0; b[i] = s >>> 24; }
  return t;
}

const ALL: DType[] = ['f32', 'f16', 'bf16', 'i8', 'u8', 'i32', 'i64', 'i4', 'f8e4m3'];

/** Builds a file: u64 length, header text (not padded unless given so), data bytes. */
function buildFile(header: unknown, data: Uint8Array | number = 0, opts: { lengthOverride?: bigint } = {}): string {
  const text = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header), 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(opts.lengthOverride ?? BigInt(text.length));
  const body = typeof data === 'number' ? new Uint8Array(data) : data;
  const file = tmpFile();
  fs.writeFileSync(file, Buffer.concat([len, text, body]));
  return file;
}

function expectSafetensorsError(fn: () => unknown, pattern: RegExp, file?: string): void {
  let caught: unknown;
  try { fn(); } catch (err) { caught = err; }
  expect(caught, 'expected a SafetensorsError').toBeInstanceOf(SafetensorsError);
  const e = caught as SafetensorsError;
  expect(e.code).toBe('QDM_SAFETENSORS');
  expect(e.message).toMatch(pattern);
  if (file) expect(e.message).toContain(file);
}

describe('safetensors round trips', () => {
  it('every dtype is bit-exact, with dtype and shape restored', () => {
    const tensors: Record<string, Tensor> = {};
    ALL.forEach((dt, i) => { tensors[`w.${dt}`] = randomBits([3, 4], dt, i + 1); });
    tensors['odd.i4'] = randomBits([3, 5], 'i4', 99); // rows not byte-aligned
    const file = tmpFile();
    saveSafetensors(file, tensors);
    const back = loadSafetensors(file);
    expect(Object.keys(back).sort()).toEqual(Object.keys(tensors).sort());
    for (const [name, t] of Object.entries(tensors)) {
      expect(back[name]!.dtype, name).toBe(t.dtype);
      expect(back[name]!.shape, name).toEqual(t.shape);
      expect(rawBytes(back[name]!), name).toEqual(rawBytes(t));
    }
    // The i4 tensor is stored as U8 with a halved last dimension.
    const h = readSafetensorsHeader(file);
    expect(h.entries.get('w.i4')).toMatchObject({ dtype: 'i4', shape: [3, 4], fileDtype: 'U8', end: h.entries.get('w.i4')!.begin + 6 });
    expect(h.entries.get('odd.i4')).toMatchObject({ dtype: 'i4', shape: [3, 5], fileDtype: 'U8' });
    expect(h.metadata).toEqual({}); // the convention's keys are not user metadata
    const json = JSON.parse(fs.readFileSync(file).subarray(8, h.dataStart).toString('utf8'));
    expect(json['w.i4']).toMatchObject({ dtype: 'U8', shape: [3, 2] });
    expect(json['__metadata__']).toEqual({ 'qdm.dtype.odd.i4': 'i4', 'qdm.dtype.w.i4': 'i4', 'qdm.shape.odd.i4': '[3,5]', 'qdm.shape.w.i4': '[3,4]' });
  });

  it('metadata round trips; files are deterministic, sorted by name and 8-byte aligned', () => {
    const a = tensor([1, 2, 3]);
    const b = tensor([[4, 5]], { dtype: 'i64' });
    const meta = { format: 'pt', note: 'ünïcödé ✓', empty: '' };
    const f1 = tmpFile();
    const f2 = tmpFile();
    saveSafetensors(f1, { b, a }, meta);
    saveSafetensors(f2, new Map([['a', a], ['b', b]]), { empty: '', note: 'ünïcödé ✓', format: 'pt' });
    expect(fs.readFileSync(f1)).toEqual(fs.readFileSync(f2));
    const h = readSafetensorsHeader(f1);
    expect(h.metadata).toEqual(meta);
    expect(h.dataStart % 8).toBe(0);
    expect([...h.entries.keys()]).toEqual(['a', 'b']);
    expect(h.entries.get('a')).toMatchObject({ begin: 0, end: 12, dtype: 'f32', shape: [3] });
    const back = loadSafetensors(f1);
    expect(back['a']!.toArray()).toEqual([1, 2, 3]);
    expect(back['b']!.dtype).toBe('i64');
    expect(back['b']!.toArray()).toEqual([[4, 5]]);
  });

  it('writes non-contiguous views as their logical contents', () => {
    const base = tensor([[1, 2, 3], [4, 5, 6]]);
    const tr = transpose(base, 0, 1);
    const sl = slice(base, 1, 1, 3); // offset and strides
    const i4 = randomBits([4, 6], 'i4', 7);
    const i4t = transpose(i4, 0, 1);
    const file = tmpFile();
    saveSafetensors(file, { tr, sl, i4t });
    const back = loadSafetensors(file);
    expect(back['tr']!.toArray()).toEqual([[1, 4], [2, 5], [3, 6]]);
    expect(back['sl']!.toArray()).toEqual([[2, 3], [5, 6]]);
    expect(back['i4t']!.shape).toEqual([6, 4]);
    expect(back['i4t']!.toArray()).toEqual(i4t.toArray());
  });

  it('empty and scalar tensors', () => {
    const file = tmpFile();
    saveSafetensors(file, { e: zeros([0]), e2: zeros([2, 0], { dtype: 'i64' }), s: full([], 3.5), s4: randomBits([], 'i4', 3) });
    const h = readSafetensorsHeader(file);
    expect(h.entries.get('e')).toMatchObject({ shape: [0], begin: h.entries.get('e')!.end });
    const back = loadSafetensors(file);
    expect(back['e']!.shape).toEqual([0]);
    expect(back['e2']!.shape).toEqual([2, 0]);
    expect(back['s']!.shape).toEqual([]);
    expect(back['s']!.item()).toBe(3.5);
    expect(back['s4']!.shape).toEqual([]);
    // No tensors at all is a valid file too.
    const none = tmpFile();
    saveSafetensors(none, {});
    expect(readSafetensorsHeader(none).entries.size).toBe(0);
    expect(loadSafetensors(none)).toEqual({});
  });

  it('reads a file built by hand in the reference layout (unpadded header, F64, BOOL, metadata first or last)', () => {
    const data = Buffer.alloc(8 + 8 + 16 + 3 + 4);
    data.writeFloatLE(1.5, 0); data.writeFloatLE(-2, 4);
    data.writeBigInt64LE(-7n, 8);
    data.writeDoubleLE(0.25, 16); data.writeDoubleLE(1e300, 24);
    data.set([1, 0, 1], 32);
    data.writeUInt16LE(0x3c00, 35); data.writeUInt16LE(0xc000, 37); // f16 1, -2
    const header = '{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"n":{"shape":[1],"dtype":"I64","data_offsets":[8,16]},'
      + '"d":{"dtype":"F64","shape":[2,1],"data_offsets":[16,32]},"m":{"dtype":"BOOL","shape":[3],"data_offsets":[32,35]},'
      + '"h":{"dtype":"F16","shape":[2],"data_offsets":[35,39]},"__metadata__":{"format":"pt"}}';
    const file = buildFile(header, data);
    const h = readSafetensorsHeader(file);
    expect(h.metadata).toEqual({ format: 'pt' });
    expect(h.dataStart).toBe(8 + Buffer.byteLength(header));
    expect(h.entries.get('d')).toMatchObject({ dtype: 'f32', fileDtype: 'F64', shape: [2, 1] });
    const t = loadSafetensors(file);
    expect(t['x']!.toArray()).toEqual([1.5, -2]);
    expect(t['n']!.dtype).toBe('i64');
    expect((t['n']!.cpuData() as BigInt64Array)[0]).toBe(-7n);
    expect(t['d']!.toArray()).toEqual([[0.25], [Infinity]]);
    expect(t['m']!.dtype).toBe('u8');
    expect(t['m']!.toArray()).toEqual([1, 0, 1]);
    expect(t['h']!.dtype).toBe('f16');
    expect(t['h']!.toArray()).toEqual([1, -2]);
    expect(readSafetensorsTensor(h, 'h', { dtype: 'f32' }).toArray()).toEqual([1, -2]);
    // filter and dtype: floating tensors convert, integer ones keep their dtype.
    const some = loadSafetensors(file, { filter: (k) => k !== 'x', dtype: 'bf16' });
    expect(Object.keys(some).sort()).toEqual(['d', 'h', 'm', 'n']);
    expect(some['h']!.dtype).toBe('bf16');
    expect(some['n']!.dtype).toBe('i64');
  });

  it('reads a tensor past 4 GiB without reading the rest of the file (sparse file)', () => {
    const big = 2 ** 32 + 8;
    const header = Buffer.from(JSON.stringify({
      big: { dtype: 'U8', shape: [big], data_offsets: [0, big] },
      tail: { dtype: 'F32', shape: [2], data_offsets: [big, big + 8] },
    }));
    const len = Buffer.alloc(8); len.writeBigUInt64LE(BigInt(header.length));
    const file = tmpFile();
    const fd = fs.openSync(file, 'w');
    try {
      fs.writeSync(fd, Buffer.concat([len, header]), 0, 8 + header.length, 0);
      const tail = Buffer.alloc(8); tail.writeFloatLE(3.25, 0); tail.writeFloatLE(-1, 4);
      fs.writeSync(fd, tail, 0, 8, 8 + header.length + big); // the 4 GiB before it stay a hole
    } finally { fs.closeSync(fd); }
    try {
      const h = readSafetensorsHeader(file);
      expect(h.fileSize).toBe(8 + header.length + big + 8);
      expect(readSafetensorsTensor(h, 'tail').toArray()).toEqual([3.25, -1]);
      expect(loadSafetensors(file, { filter: (k) => k === 'tail' })['tail']!.toArray()).toEqual([3.25, -1]);
    } finally { fs.rmSync(file); }
  });

  it('readSafetensorsTensor reads one tensor and names some available ones for an unknown name', () => {
    const file = tmpFile();
    const tensors: Record<string, Tensor> = {};
    for (let i = 0; i < 8; ++i) tensors[`layer${i}.weight`] = tensor([i, i + 1]);
    saveSafetensors(file, tensors);
    const h = readSafetensorsHeader(file);
    expect(readSafetensorsTensor(h, 'layer5.weight').toArray()).toEqual([5, 6]);
    expectSafetensorsError(() => readSafetensorsTensor(h, 'layer9.weight'), /no tensor named 'layer9.weight' \(8 tensors: 'layer0.weight', .*\.\.\.\)/, file);
    // The file changing under a parsed header is caught.
    fs.appendFileSync(file, 'xx');
    expectSafetensorsError(() => readSafetensorsTensor(h, 'layer1.weight'), /changed since its header was read/);
  });

  it('rejects bad arguments on write with ArgumentError', () => {
    const file = tmpFile();
    expect(() => saveSafetensors(file, { a: tensor([1]) }, { n: 3 as unknown as string })).toThrow(ArgumentError);
    expect(() => saveSafetensors(file, { a: tensor([1]) }, { 'qdm.dtype.a': 'i4' })).toThrow(/reserved/);
    expect(() => saveSafetensors(file, { __metadata__: tensor([1]) })).toThrow(ArgumentError);
    expect(() => saveSafetensors(file, { a: [1, 2] as unknown as Tensor })).toThrow(/not a Tensor/);
    expect(fs.existsSync(file)).toBe(false);
  });

  it('a tensor named __proto__ is an ordinary entry', () => {
    const file = tmpFile();
    const m = new Map([['__proto__', tensor([1, 2])]]);
    saveSafetensors(file, m);
    const back = loadSafetensors(file);
    expect(Object.keys(back)).toEqual(['__proto__']);
    expect(back['__proto__']!.toArray()).toEqual([1, 2]);
  });
});

describe('corrupt safetensors files', () => {
  const f32 = (begin: number, end: number, shape = [(end - begin) / 4]): object => ({ dtype: 'F32', shape, data_offsets: [begin, end] });

  it('missing file and files too short', () => {
    const missing = path.join(dir, 'nope.safetensors');
    expectSafetensorsError(() => readSafetensorsHeader(missing), /no such file/, missing);
    expectSafetensorsError(() => loadSafetensors(missing), /no such file/, missing);
    const tiny = tmpFile();
    fs.writeFileSync(tiny, Buffer.from([1, 2, 3]));
    expectSafetensorsError(() => readSafetensorsHeader(tiny), /too short/, tiny);
  });

  it('truncated data', () => {
    const file = buildFile({ a: f32(0, 16) }, 12);
    expectSafetensorsError(() => loadSafetensors(file), /truncated: tensors need 16 data bytes but the file holds 12/, file);
  });

  it('header length past the end of the file', () => {
    const file = buildFile({ a: f32(0, 4) }, 4, { lengthOverride: 5000n });
    expectSafetensorsError(() => readSafetensorsHeader(file), /header length 5000 runs past the end of the file/, file);
  });

  it('header length over 100 MB', () => {
    const file = buildFile({}, 0, { lengthOverride: 100_000_001n });
    expectSafetensorsError(() => readSafetensorsHeader(file), /exceeds the 100000000-byte limit/, file);
    const huge = buildFile({}, 0, { lengthOverride: 2n ** 64n - 1n });
    expectSafetensorsError(() => readSafetensorsHeader(huge), /exceeds/, huge);
  });

  it('bad JSON, invalid UTF-8 and non-object JSON', () => {
    const bad = buildFile('{"a": {"dtype": "F32",', 0);
    expectSafetensorsError(() => readSafetensorsHeader(bad), /not valid JSON/, bad);
    const text = Buffer.from('{"a\xff":1}', 'latin1');
    const len = Buffer.alloc(8); len.writeBigUInt64LE(BigInt(text.length));
    const utf = tmpFile(); fs.writeFileSync(utf, Buffer.concat([len, text]));
    expectSafetensorsError(() => readSafetensorsHeader(utf), /not valid UTF-8/, utf);
    for (const h of ['[]', '"x"', 'null', '3']) {
      const f = buildFile(h, 0);
      expectSafetensorsError(() => readSafetensorsHeader(f), /must be a JSON object/, f);
    }
  });

  it('overlapping offsets', () => {
    const file = buildFile({ a: f32(0, 8), b: f32(4, 12) }, 12);
    expectSafetensorsError(() => readSafetensorsHeader(file), /tensor 'b' data_offsets \[4, 12\] overlap/, file);
    const same = buildFile({ a: f32(0, 8), b: f32(0, 8) }, 8);
    expectSafetensorsError(() => readSafetensorsHeader(same), /overlap/, same);
  });

  it('gapped offsets (including a first tensor not at 0)', () => {
    const file = buildFile({ a: f32(0, 8), b: f32(12, 16) }, 16);
    expectSafetensorsError(() => readSafetensorsHeader(file), /gap in the data section: bytes 8\.\.12/, file);
    const late = buildFile({ a: f32(4, 8) }, 8);
    expectSafetensorsError(() => readSafetensorsHeader(late), /gap in the data section: bytes 0\.\.4/, late);
  });

  it('trailing unaccounted bytes', () => {
    const file = buildFile({ a: f32(0, 8) }, 10);
    expectSafetensorsError(() => readSafetensorsHeader(file), /2 trailing bytes after the last tensor/, file);
    const noTensors = buildFile({}, 1);
    expectSafetensorsError(() => readSafetensorsHeader(noTensors), /1 trailing bytes/, noTensors);
  });

  it('size not matching shape x dtype, and huge declared shapes', () => {
    const file = buildFile({ a: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }, 8);
    expectSafetensorsError(() => readSafetensorsHeader(file), /tensor 'a': shape \[3\] of F32 needs 12 bytes but data_offsets \[0, 8\] hold 8/, file);
    const huge = buildFile({ a: { dtype: 'F32', shape: [2 ** 40, 2 ** 40], data_offsets: [0, 8] } }, 8);
    expectSafetensorsError(() => readSafetensorsHeader(huge), /needs 4835703278458516698824704 bytes/, huge);
    const overflow = buildFile({ a: { dtype: 'F64', shape: [2 ** 52, 2 ** 52, 2 ** 52], data_offsets: [0, 0] } }, 0);
    expectSafetensorsError(() => readSafetensorsHeader(overflow), /needs \d+ bytes/, overflow);
  });

  it('unknown and unsupported dtypes', () => {
    const unknown = buildFile({ a: { dtype: 'F33', shape: [1], data_offsets: [0, 4] } }, 4);
    expectSafetensorsError(() => readSafetensorsHeader(unknown), /tensor 'a': unknown dtype 'F33'/, unknown);
    const unsupported = buildFile({ a: { dtype: 'U16', shape: [2], data_offsets: [0, 4] } }, 4);
    expectSafetensorsError(() => readSafetensorsHeader(unsupported), /unsupported dtype 'U16'/, unsupported);
    const notString = buildFile({ a: { dtype: 4, shape: [1], data_offsets: [0, 4] } }, 4);
    expectSafetensorsError(() => readSafetensorsHeader(notString), /dtype must be a string/, notString);
  });

  it('negative, fractional and non-array shapes', () => {
    const neg = buildFile({ a: { dtype: 'F32', shape: [-1], data_offsets: [0, 4] } }, 4);
    expectSafetensorsError(() => readSafetensorsHeader(neg), /shape \[-1\] has a negative entry/, neg);
    const frac = buildFile({ a: { dtype: 'F32', shape: [1.5], data_offsets: [0, 4] } }, 4);
    expectSafetensorsError(() => readSafetensorsHeader(frac), /not an integer/, frac);
    const str = buildFile({ a: { dtype: 'F32', shape: '1', data_offsets: [0, 4] } }, 4);
    expectSafetensorsError(() => readSafetensorsHeader(str), /shape must be an array/, str);
  });

  it('entries with missing, extra or mistyped fields; bad offsets; bad __metadata__', () => {
    const missing = buildFile({ a: { dtype: 'F32', shape: [1] } }, 4);
    expectSafetensorsError(() => readSafetensorsHeader(missing), /exactly dtype, shape, data_offsets/, missing);
    const extra = buildFile({ a: { ...f32(0, 4), extra: 1 } }, 4);
    expectSafetensorsError(() => readSafetensorsHeader(extra), /exactly dtype, shape, data_offsets/, extra);
    const notObj = buildFile({ a: 5 }, 0);
    expectSafetensorsError(() => readSafetensorsHeader(notObj), /entry must be an object/, notObj);
    for (const offs of [[0], [0, 4, 8], [-4, 0], [0, '4'], [4, 0]]) {
      const f = buildFile({ a: { dtype: 'F32', shape: [1], data_offsets: offs } }, 4);
      expectSafetensorsError(() => readSafetensorsHeader(f), /data_offsets/, f);
    }
    for (const meta of [[], 'x', null, { a: 1 }]) {
      const f = buildFile({ __metadata__: meta }, 0);
      expectSafetensorsError(() => readSafetensorsHeader(f), /__metadata__/, f);
    }
  });

  it('a broken i4 convention is reported', () => {
    const wrongSize = buildFile({ __metadata__: { 'qdm.dtype.a': 'i4', 'qdm.shape.a': '[3,4]' }, a: { dtype: 'U8', shape: [4], data_offsets: [0, 4] } }, 4);
    expectSafetensorsError(() => readSafetensorsHeader(wrongSize), /i4 shape \[3, 4\] needs 6 packed bytes/, wrongSize);
    const noShape = buildFile({ __metadata__: { 'qdm.dtype.a': 'i4' }, a: { dtype: 'U8', shape: [4], data_offsets: [0, 4] } }, 4);
    expectSafetensorsError(() => readSafetensorsHeader(noShape), /'qdm.shape.a' is missing/, noShape);
    const notU8 = buildFile({ __metadata__: { 'qdm.dtype.a': 'i4', 'qdm.shape.a': '[2]' }, a: f32(0, 4) }, 4);
    expectSafetensorsError(() => readSafetensorsHeader(notU8), /stored as F32/, notU8);
    const noTensor = buildFile({ __metadata__: { 'qdm.dtype.b': 'i4', 'qdm.shape.b': '[2]' } }, 0);
    expectSafetensorsError(() => readSafetensorsHeader(noTensor), /not in the file/, noTensor);
  });
});

describe('atomic writes', () => {
  const original = fs.writeSync;
  afterEach(() => { fs.writeSync = original; });
  const leftovers = (file: string): string[] => fs.readdirSync(path.dirname(file)).filter((f) => f.startsWith(`${path.basename(file)}.tmp-`));

  it('a save rejected for a bad metadata value leaves the target unchanged', () => {
    const file = tmpFile();
    saveSafetensors(file, { a: tensor([1, 2]) });
    const before = fs.readFileSync(file);
    expect(() => saveSafetensors(file, { a: tensor([3, 4]) }, { bad: { x: 1 } as unknown as string })).toThrow(ArgumentError);
    expect(fs.readFileSync(file)).toEqual(before);
    expect(leftovers(file)).toEqual([]);
  });

  it('a write failing midway leaves the target unchanged and no temp file', () => {
    const file = tmpFile();
    saveSafetensors(file, { a: tensor([1, 2]) });
    const before = fs.readFileSync(file);
    let calls = 0;
    fs.writeSync = ((...args: Parameters<typeof fs.writeSync>) => {
      if (++calls === 2) throw Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' });
      return (original as (...a: unknown[]) => number)(...args);
    }) as typeof fs.writeSync;
    expectSafetensorsError(() => saveSafetensors(file, { a: tensor([3, 4]), b: tensor([5, 6]) }), /cannot write \(ENOSPC/, file);
    expect(calls).toBe(2);
    expect(fs.readFileSync(file)).toEqual(before);
    expect(leftovers(file)).toEqual([]);
    fs.writeSync = original;
    saveSafetensors(file, { a: tensor([3, 4]) });
    expect(loadSafetensors(file)['a']!.toArray()).toEqual([3, 4]);
  });

  it('writeFileAtomic writes strings, buffers and chunk lists, and cleans up on failure', () => {
    const file = path.join(dir, 'plain.txt');
    writeFileAtomic(file, 'hello ✓');
    expect(fs.readFileSync(file, 'utf8')).toBe('hello ✓');
    writeFileAtomic(file, [Buffer.from('ab'), new Uint8Array([99, 100])]);
    expect(fs.readFileSync(file, 'utf8')).toBe('abcd');
    writeFileAtomic(file, new Uint8Array([101]));
    expect(fs.readFileSync(file, 'utf8')).toBe('e');
    fs.writeSync = (() => { throw new Error('EIO: simulated'); }) as typeof fs.writeSync;
    expect(() => writeFileAtomic(file, 'never')).toThrow(/EIO/);
    fs.writeSync = original;
    expect(fs.readFileSync(file, 'utf8')).toBe('e');
    expect(leftovers(file)).toEqual([]);
    // A missing directory fails without creating anything.
    expect(() => writeFileAtomic(path.join(dir, 'no-such-dir', 'x'), 'y')).toThrow(/ENOENT/);
  });
});

describe('reference fixture', () => {
  it.skipIf(!fixturePresent)('reads the ddpm-tiny U-Net weights written by the Rust/Python library', () => {
    const h = readSafetensorsHeader(fixtureFile);
    expect(h.metadata['format']).toBe('pt');
    expect(h.entries.size).toBeGreaterThan(10);
    expect(h.entries.get('conv_in.weight')).toMatchObject({ dtype: 'f32', shape: [16, 3, 3, 3] });
    const all = loadSafetensors(fixtureFile);
    expect(Object.keys(all).length).toBe(h.entries.size);
    // Compare one tensor with the bytes read independently.
    const e = h.entries.get('conv_in.weight')!;
    const raw = fs.readFileSync(fixtureFile).subarray(h.dataStart + e.begin, h.dataStart + e.end);
    expect(rawBytes(all['conv_in.weight']!)).toEqual(new Uint8Array(raw));
    expect(rawBytes(readSafetensorsTensor(h, 'conv_in.weight'))).toEqual(new Uint8Array(raw));
    for (const t of Object.values(all)) expect(t.data().every(Number.isFinite)).toBe(true);
    // And it survives our own round trip byte for byte in its tensors.
    const copy = tmpFile();
    saveSafetensors(copy, all, h.metadata);
    const again = loadSafetensors(copy);
    // Buffer.equals: a deep toEqual over 1.6 MB of bytes takes seconds.
    for (const [k, t] of Object.entries(all)) expect(Buffer.from(rawBytes(again[k]!)).equals(rawBytes(t)), k).toBe(true);
  });
});
