// Builds dist/cli-exec (part of `npm run build:bundle`): `tsmirror exec` as two CommonJS
// scripts, which bin/tsmirror.js runs on Node 20 through vm.Script with a V8 code cache
// (Node 20 keeps no compiled code for ES modules; Node 22.1+ runs the ESM bundle with its
// compile cache instead).
//
// exec.cjs   cli/program.js with everything `exec` can run: the commands' definitions, the
//            session, the proxy. The other commands' actions (agent, record, replay, …)
//            are left out: bin/tsmirror.js sends only `tsmirror exec …` here.
// kube.cjs   @kubernetes/client-node (ESM only, so not require()-able on Node 20), loaded
//            only when exec's target is a Kubernetes one.
//
// Both are written without comments or indentation (fewer bytes to read and hold; names are
// kept, so stacks still say which function) and in plain ASCII (esbuild escapes the rest;
// checked below), so the loader reads them as latin1: one byte a character in V8's heap.
import { readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const out = join(root, 'dist', 'cli-exec');
rmSync(out, { recursive: true, force: true });

const common = {
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  charset: 'ascii',
  minifyWhitespace: true,
  logLevel: 'error',
  // The loader passes the script's own file URL as `__tsmMetaUrl` (cli/ and native/ find
  // the package's files from it, as the ES modules do from import.meta.url).
  define: { 'import.meta.url': '__tsmMetaUrl' },
  // The file is one function expression, CommonJS's own wrapper plus that URL: the loader
  // compiles it as it is (no second copy of the text to add a wrapper).
  banner: { js: '(function (exports, require, module, __filename, __dirname, __tsmMetaUrl) {' },
  footer: { js: '\n})' },
};

/** The dynamic imports of cli/commands/ that `exec` never reaches. */
const notExec = {
  name: 'not-exec',
  setup(b) {
    b.onResolve({ filter: /.*/ }, (args) => {
      if (args.kind !== 'dynamic-import' || !args.importer.includes(`${join('dist', 'cli', 'commands')}`)) return undefined;
      if (args.path === '../exec.js') return undefined;
      return { path: args.path, namespace: 'not-exec' };
    });
    b.onLoad({ filter: /.*/, namespace: 'not-exec' }, (args) => ({
      contents: `throw new Error(${JSON.stringify(`${args.path} is not part of the exec bundle (bin/tsmirror.js sends only exec here)`)});`,
      loader: 'js',
    }));
  },
};

await build({
  ...common,
  entryPoints: [join(root, 'dist', 'cli', 'program.js')],
  outfile: join(out, 'exec.cjs'),
  // kube.cjs stands in for it (bin/tsmirror.js's require).
  external: ['@kubernetes/client-node'],
  plugins: [notExec],
});

/**
 * The names the compiled modules import from @kubernetes/client-node: kube.cjs exports those
 * (all of its exports would be twice the size: esbuild cannot drop what `export *` names).
 */
function kubeClientImports() {
  const names = new Set();
  const walk = (dir) => {
    for (const name of readdirSync(dir)) {
      const path = join(dir, name);
      if (statSync(path).isDirectory()) walk(path);
      else if (path.endsWith('.js') && !path.endsWith('.test.js')) {
        for (const m of readFileSync(path, 'utf8').matchAll(/^import\s+([^;]*?)\s+from\s+['"]@kubernetes\/client-node['"]/gms)) {
          const clause = /^\{([^}]*)\}$/s.exec(m[1].trim());
          if (!clause) throw new Error(`${relative(root, path)}: import ${m[1]} from @kubernetes/client-node: only named imports can be bundled into kube.cjs`);
          for (const part of clause[1].split(',')) {
            const imported = part.trim().split(/\s+as\s+/)[0];
            if (imported) names.add(imported);
          }
        }
      }
    }
  };
  for (const dir of ['cli', 'agent', 'common', 'protocol', 'native']) walk(join(root, 'dist', dir));
  return [...names].sort();
}

await build({
  ...common,
  stdin: { contents: `export { ${kubeClientImports().join(', ')} } from '@kubernetes/client-node';`, resolveDir: root, sourcefile: 'kube-client.js', loader: 'js' },
  outfile: join(out, 'kube.cjs'),
});

for (const name of ['exec.cjs', 'kube.cjs']) {
  const text = readFileSync(join(out, name));
  const at = text.findIndex((byte) => byte > 0x7f);
  if (at >= 0) throw new Error(`${relative(root, join(out, name))}: a non-ASCII byte at offset ${at}; the loader reads it as latin1`);
  // A script run by vm.Script has no module loader for import() (and needs none: esbuild
  // turned every import of what it bundled into a require).
  const dynamicImport = /(?<![\w$.])import\(/.exec(text.toString('latin1'));
  if (dynamicImport) throw new Error(`${relative(root, join(out, name))}: an import() at offset ${dynamicImport.index}, which vm.Script cannot run`);
}
