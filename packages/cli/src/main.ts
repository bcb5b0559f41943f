#!/usr/bin/env node
// The qdm command. Each subcommand lives in commands/<name>.ts with its option spec.
import { QdmError } from '@qdm/core';
import { UsageError, parseArgs, helpText, type CommandSpec, type ParsedOptions } from './args.js';
import { infoSpec, runInfo } from './commands/info.js';
import { sampleSpec, runSample } from './commands/sample.js';
import { evalSpec, runEval } from './commands/eval.js';
import { demoSpec, runDemo } from './commands/demo.js';
import { quantizeSpec, runQuantize } from './commands/quantize.js';

interface Command { spec: CommandSpec; run(opts: ParsedOptions, positionals: string[]): Promise<void> }

const commands: Command[] = [
  { spec: demoSpec, run: runDemo },
  { spec: sampleSpec, run: runSample },
  { spec: evalSpec, run: runEval },
  { spec: quantizeSpec, run: runQuantize },
  { spec: infoSpec, run: runInfo },
];

function usage(): string {
  return ['usage: qdm <command> [options]', '', 'commands:', ...commands.map((c) => `  ${c.spec.name.padEnd(10)} ${c.spec.summary}`), '', 'qdm <command> --help for its options'].join('\n');
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') { console.log(usage()); return name ? 0 : 1; }
  const cmd = commands.find((c) => c.spec.name === name);
  try {
    if (!cmd) throw new UsageError(`qdm: unknown command '${name}'\n\n${usage()}`);
    const { options, positionals, help } = parseArgs(cmd.spec, rest);
    if (help) { console.log(helpText(cmd.spec)); return 0; }
    await cmd.run(options, positionals);
    return 0;
  } catch (err) {
    if (err instanceof UsageError) { console.error(err.message); return 2; }
    if (err instanceof QdmError) { console.error(`qdm ${name}: ${err.message} [${err.code}]`); return 1; }
    throw err;
  }
}

const isMain = process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href;
if (isMain) main(process.argv.slice(2)).then((code) => { process.exitCode = code; });
