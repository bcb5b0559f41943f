#!/usr/bin/env node
// Runs the whole vitest suite once and ends with the one line CI reads:
//   tests: N passed, N failed, N skipped
// Exits non-zero on any failure, or when no test ran.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const dir = mkdtempSync(join(tmpdir(), 'qdm-tests-'));
const report = join(dir, 'report.json');
const args = ['vitest', 'run', '--reporter=default', '--reporter=json', `--outputFile.json=${report}`, ...process.argv.slice(2)];
// Uninitialized CPU outputs are filled with NaN bytes (packages/core/src/memory.ts), so a kernel that
// leaves part of its output unwritten fails a test instead of passing on a zeroed buffer.
const env = { ...process.env, FORCE_COLOR: process.env.FORCE_COLOR ?? '0', QDM_POISON_UNINITIALIZED: process.env.QDM_POISON_UNINITIALIZED ?? '1' };
const r = spawnSync('npx', args, { stdio: 'inherit', env });

let passed = 0, failed = 0, skipped = 0, suitesFailed = 0;
if (existsSync(report)) {
  const j = JSON.parse(readFileSync(report, 'utf8'));
  passed = j.numPassedTests ?? 0;
  failed = j.numFailedTests ?? 0;
  skipped = (j.numPendingTests ?? 0) + (j.numTodoTests ?? 0);
  suitesFailed = j.numFailedTestSuites ?? 0;
}
// A file that fails to load counts as a failure even if it held no test.
if (failed === 0 && (suitesFailed > 0 || (r.status ?? 1) !== 0)) failed = Math.max(1, suitesFailed);
console.log(`tests: ${passed} passed, ${failed} failed, ${skipped} skipped`);
if (failed > 0) process.exit(1);
if (passed === 0) { console.error('no test ran'); process.exit(1); }
