'use strict';
// Loads qdm.node. If it cannot be loaded, one error lists every place tried and what to do.
const path = require('node:path');
const fs = require('node:fs');

const candidates = [
  process.env.QDM_ADDON_PATH,
  path.join(__dirname, 'build', 'Release', 'qdm.node'),
  path.join(__dirname, 'build', 'Debug', 'qdm.node'),
].filter(Boolean);

let addon = null;
const reasons = [];
for (const file of candidates) {
  if (!fs.existsSync(file)) { reasons.push(`${file}: not found`); continue; }
  try { addon = require(file); break; } catch (err) { reasons.push(`${file}: ${err.message}`); }
}
if (!addon) {
  const err = new Error(
    'qdm: the native addon could not be loaded.\n' +
    reasons.map((r) => '  - ' + r).join('\n') +
    '\nBuild it with `pnpm --filter @qdm/native build` (needs cmake >= 3.20 and a C++17 compiler),' +
    ' or point QDM_ADDON_PATH at a built qdm.node.');
  err.code = 'QDM_ADDON_NOT_LOADED';
  throw err;
}
module.exports = addon;
