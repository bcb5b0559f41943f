import { describe, it, expect } from 'vitest';
import { parseArgs, UsageError, helpText, type CommandSpec } from '../src/args.js';

const spec: CommandSpec = {
  name: 'demo', summary: 'x', positionals: [0, 1],
  options: {
    steps: { type: 'integer', description: 'steps', default: 10, min: 1 },
    scale: { type: 'number', description: 'scale' },
    mode: { type: 'string', description: 'mode', choices: ['a', 'b'] },
    fast: { type: 'boolean', description: 'fast' },
    bits: { type: 'list', description: 'bits', choices: ['w8a8', 'w4a8'] },
  },
};

describe('qdm argument parsing', () => {
  it('parses values, defaults and forms', () => {
    const r = parseArgs(spec, ['--steps', '5', '--scale=1.5', '--mode', 'b', '--fast', '--bits', 'w8a8,w4a8', 'out']);
    expect(r.options).toEqual({ steps: 5, scale: 1.5, mode: 'b', fast: true, bits: ['w8a8', 'w4a8'] });
    expect(r.positionals).toEqual(['out']);
    expect(parseArgs(spec, []).options.steps).toBe(10);
  });
  it('rejects unknown options, missing and bad values with one-line messages', () => {
    expect(() => parseArgs(spec, ['--nope'])).toThrow(UsageError);
    expect(() => parseArgs(spec, ['--nope'])).toThrow(/unknown option --nope/);
    expect(() => parseArgs(spec, ['--steps'])).toThrow(/needs a value/);
    expect(() => parseArgs(spec, ['--steps', 'x'])).toThrow(/must be an integer/);
    expect(() => parseArgs(spec, ['--steps', '0'])).toThrow(/at least 1/);
    expect(() => parseArgs(spec, ['--mode', 'c'])).toThrow(/one of a, b/);
    expect(() => parseArgs(spec, ['--bits', 'w2a2'])).toThrow(/not one of/);
    expect(() => parseArgs(spec, ['a', 'b'])).toThrow(/expected 0 to 1 argument/);
  });
  it('prints help with defaults', () => {
    expect(helpText(spec)).toMatch(/--steps <integer>.*default: 10/);
  });
});
