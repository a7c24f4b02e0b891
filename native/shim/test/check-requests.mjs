// Decodes every request frame dump_requests wrote with the TypeScript definition of the
// wire (protocol/shim-wire.ts, from dist/), and checks that every op was among them.
// usage: node check-requests.mjs REPO_ROOT DIR
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const [root, dir] = process.argv.slice(2);
const wire = await import(pathToFileURL(join(root, 'dist/protocol/shim-wire.js')).href);
const seen = new Set();
let failed = 0;
for (const name of readdirSync(dir).sort()) {
  try {
    seen.add(wire.decodeShimRequest(readFileSync(join(dir, name))).op);
  } catch (err) {
    console.log(`FAIL request frame ${name}: ${err.message}`);
    failed++;
  }
}
const missing = Object.keys(wire.SHIM_OPS).filter((op) => !seen.has(op));
if (missing.length > 0) {
  console.log(`FAIL the shim sent no ${missing.join(', ')} (add it to dump_requests.c)`);
  failed++;
}
process.exit(failed ? 1 : 0);
