// The commands fail cleanly: usage errors exit with 2 and one line on stderr, no stack trace.
import { describe, it, expect, vi } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { main } from '../src/main.js';

async function runCli(args: string[]): Promise<{ code: number; err: string; out: string }> {
  const err: string[] = [], out: string[] = [];
  const e = vi.spyOn(console, 'error').mockImplementation((...a) => { err.push(a.join(' ')); });
  const o = vi.spyOn(console, 'log').mockImplementation((...a) => { out.push(a.join(' ')); });
  try { return { code: await main(args), err: err.join('\n'), out: out.join('\n') }; } finally { e.mockRestore(); o.mockRestore(); }
}

describe('qdm commands', () => {
  it('quantize writes a checkpoint that sample runs on the integer GEMM', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'qdm-quantize-'));
    try {
      const file = join(dir, 'digits-w8a8.safetensors');
      const q = await runCli(['quantize', '--out', file, '--calib-n', '2', '--steps', '3', '--attention', '8', '--report', join(dir, 'rep')]);
      expect(q.code, q.err).toBe(0);
      expect(q.out).toMatch(/on the integer GEMM, 0 fake-quant/);
      const report = JSON.parse(readFileSync(join(dir, 'rep', 'quantize.json'), 'utf8'));
      expect(report.recipe.attention).toEqual({ bits: 8, granularity: 'tensor' });
      expect(report.recipe.attentionProbs).toEqual({ bits: 8, granularity: 'tensor', signed: false });
      expect(report.perStep).toHaveLength(3);
      for (const e of report.perStep) expect(e.relError).toBeLessThan(0.5);
      const s = await runCli(['sample', '--quantized', file, '--n', '2', '--steps', '2', '--out', join(dir, 's.png')]);
      expect(s.code, s.err).toBe(0);
      expect(existsSync(join(dir, 's.png'))).toBe(true);
    } finally { rmSync(dir, { recursive: true, force: true }); }
  }, 120_000);
  it('lists the commands and prints per-command help', async () => {
    const r = await runCli(['--help']);
    expect(r.code).toBe(0);
    for (const c of ['demo', 'sample', 'eval', 'quantize', 'info']) expect(r.out).toContain(c);
    const h = await runCli(['sample', '--help']);
    expect(h.code).toBe(0);
    expect(h.out).toMatch(/--steps/);
  });
  it('unknown commands and options, bad values and missing files exit 2 with one clear line', async () => {
    const cases: Array<[string[], RegExp]> = [
      [['frobnicate'], /unknown command 'frobnicate'/],
      [['sample', '--bogus'], /unknown option --bogus/],
      [['sample', '--steps', 'many'], /--steps must be an integer/],
      [['sample', '--scheduler', 'magic'], /--scheduler must be one of/],
      [['eval', '--n', '5'], /--n must be at least 20/],
      [['demo', '--variants', 'nope'], /not one of/],
      [['sample', '--model', '/definitely/not/here'], /no model at '\/definitely\/not\/here'/],
      [['sample', '--labels', 'a,b'], /--labels must be non-negative integers/],
      [['sample', '--quantized', '/no/such.safetensors'], /no quantized checkpoint at '\/no\/such.safetensors'/],
      [['quantize'], /--out FILE is required/],
      [['quantize', '--out', 'x.bin'], /must end in .safetensors/],
      [['quantize', '--weights', '9', '--out', 'x.safetensors'], /--weights must be at most 8/],
      [['quantize', '--acts', '1', '--out', 'x.safetensors'], /--acts must be 0/],
      [['quantize', '--attention', '1', '--out', 'x.safetensors'], /--attention must be 0/],
    ];
    for (const [args, re] of cases) {
      const r = await runCli(args);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.err).toMatch(re);
      expect(r.err).not.toMatch(/\n\s+at /);  // no stack trace
    }
  });
});
