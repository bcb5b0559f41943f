// A small, strict argument parser: every command declares its options, so an unknown option,
// a missing value or a bad number is a UsageError with a one-line message (no stack trace).

export class UsageError extends Error {
  constructor(message: string) { super(message); this.name = 'UsageError'; }
}

export type OptionType = 'string' | 'number' | 'integer' | 'boolean' | 'list';

export interface OptionSpec {
  type: OptionType;
  description: string;
  default?: string | number | boolean | string[];
  /** Allowed values for strings and list items. */
  choices?: readonly string[];
  min?: number;
  max?: number;
}

export interface CommandSpec {
  name: string;
  summary: string;
  usage?: string;
  options: Record<string, OptionSpec>;
  /** Number of positional arguments accepted: [min, max]. */
  positionals?: [number, number];
}

export type ParsedOptions = Record<string, string | number | boolean | string[] | undefined>;

export function parseArgs(spec: CommandSpec, argv: string[]): { options: ParsedOptions; positionals: string[]; help: boolean } {
  const options: ParsedOptions = {};
  const positionals: string[] = [];
  let help = false;
  for (let i = 0; i < argv.length; ++i) {
    const arg = argv[i]!;
    if (arg === '--help' || arg === '-h') { help = true; continue; }
    if (!arg.startsWith('--')) { positionals.push(arg); continue; }
    const eq = arg.indexOf('=');
    const name = arg.slice(2, eq >= 0 ? eq : undefined);
    const opt = spec.options[name];
    if (!opt) throw new UsageError(`qdm ${spec.name}: unknown option --${name} (see qdm ${spec.name} --help)`);
    let raw: string | undefined = eq >= 0 ? arg.slice(eq + 1) : undefined;
    if (opt.type === 'boolean') {
      if (raw === undefined) { options[name] = true; continue; }
      if (raw !== 'true' && raw !== 'false') throw new UsageError(`qdm ${spec.name}: --${name} takes true or false, got '${raw}'`);
      options[name] = raw === 'true';
      continue;
    }
    if (raw === undefined) {
      raw = argv[++i];
      if (raw === undefined || raw.startsWith('--')) throw new UsageError(`qdm ${spec.name}: --${name} needs a value`);
    }
    options[name] = convert(spec.name, name, opt, raw);
  }
  for (const [name, opt] of Object.entries(spec.options)) if (options[name] === undefined && opt.default !== undefined) options[name] = opt.default;
  const [lo, hi] = spec.positionals ?? [0, 0];
  if (!help && (positionals.length < lo || positionals.length > hi)) {
    throw new UsageError(`qdm ${spec.name}: expected ${lo === hi ? lo : `${lo} to ${hi}`} argument(s), got ${positionals.length}${positionals.length ? ` (${positionals.join(' ')})` : ''}`);
  }
  return { options, positionals, help };
}

function convert(cmd: string, name: string, opt: OptionSpec, raw: string): string | number | string[] {
  if (opt.type === 'number' || opt.type === 'integer') {
    const v = Number(raw);
    if (raw.trim() === '' || !Number.isFinite(v) || (opt.type === 'integer' && !Number.isInteger(v))) throw new UsageError(`qdm ${cmd}: --${name} must be ${opt.type === 'integer' ? 'an integer' : 'a number'}, got '${raw}'`);
    if (opt.min !== undefined && v < opt.min) throw new UsageError(`qdm ${cmd}: --${name} must be at least ${opt.min}, got ${v}`);
    if (opt.max !== undefined && v > opt.max) throw new UsageError(`qdm ${cmd}: --${name} must be at most ${opt.max}, got ${v}`);
    return v;
  }
  if (opt.type === 'list') {
    const items = raw.split(',').map((s) => s.trim()).filter(Boolean);
    if (opt.choices) for (const it of items) if (!opt.choices.includes(it)) throw new UsageError(`qdm ${cmd}: --${name} item '${it}' is not one of ${opt.choices.join(', ')}`);
    return items;
  }
  if (opt.choices && !opt.choices.includes(raw)) throw new UsageError(`qdm ${cmd}: --${name} must be one of ${opt.choices.join(', ')}, got '${raw}'`);
  return raw;
}

export function helpText(spec: CommandSpec): string {
  const lines = [`qdm ${spec.name}: ${spec.summary}`, '', `usage: ${spec.usage ?? `qdm ${spec.name} [options]`}`, '', 'options:'];
  const names = Object.keys(spec.options);
  const w = Math.max(10, ...names.map((n) => n.length + 12));
  for (const n of names) {
    const o = spec.options[n]!;
    const head = `  --${n}${o.type === 'boolean' ? '' : ` <${o.type === 'list' ? 'a,b' : o.type}>`}`;
    const def = o.default !== undefined ? ` (default: ${Array.isArray(o.default) ? o.default.join(',') : o.default})` : '';
    const ch = o.choices ? ` [${o.choices.join('|')}]` : '';
    lines.push(`${head.padEnd(w)} ${o.description}${ch}${def}`);
  }
  lines.push(`${'  --help'.padEnd(w)} show this help`);
  return lines.join('\n');
}
