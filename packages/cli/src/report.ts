// Reports: one row per variant, printed as a table and written as JSON and Markdown.
import { join } from 'node:path';
import { writeFileAtomic } from '@qdm/core';

export interface ReportRow {
  variant: string;
  fid?: number; classAccuracy?: number; precision?: number; recall?: number;
  psnrVsFull?: number; mseVsFull?: number;
  seconds?: number; speedup?: number; peakMB?: number; weightsMB?: number;
  note?: string;
}

const COLUMNS: Array<[keyof ReportRow, string, (v: number) => string]> = [
  ['fid', 'FID', (v) => v.toFixed(2)],
  ['classAccuracy', 'class acc.', (v) => `${(100 * v).toFixed(1)} %`],
  ['precision', 'precision', (v) => v.toFixed(3)],
  ['recall', 'recall', (v) => v.toFixed(3)],
  ['psnrVsFull', 'PSNR vs full (dB)', (v) => (Number.isFinite(v) ? v.toFixed(1) : 'inf')],
  ['seconds', 'time (s)', (v) => v.toFixed(1)],
  ['speedup', 'speed-up', (v) => `${v.toFixed(2)}x`],
  ['peakMB', 'peak mem (MB)', (v) => v.toFixed(1)],
  ['weightsMB', 'weights (MB)', (v) => v.toFixed(2)],
];

export function markdownTable(rows: ReportRow[]): string {
  const cols = COLUMNS.filter(([k]) => rows.some((r) => r[k] !== undefined));
  const head = `| variant | ${cols.map(([, h]) => h).join(' | ')} |`;
  const sep = `| --- | ${cols.map(() => '---:').join(' | ')} |`;
  const body = rows.map((r) => `| ${r.variant}${r.note ? ` (${r.note})` : ''} | ${cols.map(([k, , f]) => (r[k] === undefined ? '' : f(r[k] as number))).join(' | ')} |`);
  return [head, sep, ...body].join('\n');
}

export function writeReport(dir: string, name: string, title: string, rows: ReportRow[], settings: Record<string, unknown>): void {
  writeFileAtomic(join(dir, `${name}.json`), JSON.stringify({ title, settings, rows }, null, 2) + '\n');
  const md = [`# ${title}`, '', '```', JSON.stringify(settings), '```', '', markdownTable(rows), ''].join('\n');
  writeFileAtomic(join(dir, `${name}.md`), md);
}
