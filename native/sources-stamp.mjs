// Whether build/Release was built from the native sources as they are now: `write` (after
// node-gyp) records a hash of binding.gyp, native/shim, native/addon, native/launcher and native/supervisor next to the built
// files; `check` exits 1 when the hash differs or a built file is missing, so `npm test`
// rebuilds the shim and the addon only when they changed (a rebuild takes about a minute).
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const release = join(root, 'build', 'Release');
const stamp = join(release, 'native-sources.sha256');
const built = ['libtsmirror.so', 'tsmirror_addon.node', 'tsmirror-launch', 'tsmirror-supervise'].map((name) => join(release, name));

function sourcesHash() {
  const hash = createHash('sha256');
  const files = ['binding.gyp', ...['native/shim', 'native/addon', 'native/launcher', 'native/supervisor'].flatMap((dir) =>
    readdirSync(join(root, dir)).filter((name) => /\.(c|cc|h)$/.test(name)).map((name) => `${dir}/${name}`))].sort();
  for (const file of files) hash.update(`${file}\0`).update(readFileSync(join(root, file))).update('\0');
  return hash.digest('hex');
}

const [command] = process.argv.slice(2);
if (command === 'write') {
  writeFileSync(stamp, `${sourcesHash()}\n`);
} else if (command === 'check') {
  const current = built.every((file) => existsSync(file)) && existsSync(stamp) && readFileSync(stamp, 'utf8').trim() === sourcesHash();
  if (!current) process.stderr.write('the native build is missing or older than native/: rebuilding it\n');
  process.exitCode = current ? 0 : 1;
} else {
  process.stderr.write('usage: node native/sources-stamp.mjs check|write\n');
  process.exitCode = 2;
}
