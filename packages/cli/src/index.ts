export { main } from './main.js';
export { parseArgs, helpText, UsageError, type CommandSpec, type OptionSpec } from './args.js';
export { Progress } from './progress.js';
