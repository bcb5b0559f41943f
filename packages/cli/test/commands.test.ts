// The commands fail cleanly: usage errors exit with 2 and one line on stderr, no stack trace.
import { describe, it, expect, vi } from 'vitest';
import { main } from '../src/main.js';

async function runCli(args: string[]): Promise<{ code: number; err: string; out: string }> {
  const err: string[] = [], out: string[] = [];
  const e = vi.spyOn(console, 'error').mockImplementation((...a) => { err.push(a.join(' ')); });
  const o = vi.spyOn(console, 'log').mockImplementation((...a) => { out.push(a.join(' ')); });
  try { return { code: await main(args), err: err.join('\n'), out: out.join('\n') }; } finally { e.mockRestore(); o.mockRestore(); }
}

describe('qdm commands', () => {
  it('lists the commands and prints per-command help', async () => {
    const r = await runCli(['--help']);
    expect(r.code).toBe(0);
    for (const c of ['demo', 'sample', 'eval', 'info']) expect(r.out).toContain(c);
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
    ];
    for (const [args, re] of cases) {
      const r = await runCli(args);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.err).toMatch(re);
      expect(r.err).not.toMatch(/\n\s+at /);  // no stack trace
    }
  });
});
