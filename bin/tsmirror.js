#!/usr/bin/env node
// The CLI as `npm run build` bundles it (dist/cli-bundle: one file per lazily loaded part,
// ~25 ms quicker to start than the compiled modules), or those modules where no bundle
// was built or where they were compiled after it (a bundle left stale by a bare `tsc`).
// On Node 20, `tsmirror exec` runs from dist/cli-exec instead: see runExecBundle.
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import nodeModule from 'node:module';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import vm from 'node:vm';

// About a third of the CLI's start is compiling its JavaScript; V8 can keep that work
// between runs. Kept in the user's own cache directory, not the shared temporary one another
// local user could fill first.
const cacheRoot = join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'tsmirror');
const useCache = process.env.TSM_NO_COMPILE_CACHE === undefined;
// Node 22.1+ keeps the compiled code of ES modules itself.
const nodeCompileCache = typeof nodeModule.enableCompileCache === 'function';
if (nodeCompileCache && useCache) {
  try {
    nodeModule.enableCompileCache(join(cacheRoot, 'compile-cache'));
  } catch {
    // no cache: only slower
  }
}

const modules = fileURLToPath(new URL('../dist/cli/main.js', import.meta.url));
/** Built, and not older than the compiled modules (a bundle a bare `tsc` left stale is not used). */
const fresh = (file) => existsSync(file) && (!existsSync(modules) || statSync(file).mtimeMs >= statSync(modules).mtimeMs);

/** FNV-1a of a string, as 8 hex digits: a short name, not a check (V8 does the checking). */
function shortHash(text) {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193) >>> 0;
  return h.toString(16).padStart(8, '0');
}

/**
 * Runs one of dist/cli-exec's CommonJS scripts (cli/exec-bundle.mjs) and returns its
 * exports. V8's code cache of the script, when there is one, spares compiling it: made at
 * the end of a run that had none (or had one V8 refused: another Node, other V8 flags), in
 * the user's cache directory, named after the script's path and, for this build of it, its
 * inode, size and time and Node's version; the entry of an earlier build of the same path is
 * removed then. V8 checks the cache itself too (its version, flags and the source's length)
 * and compiles from the source when it does not match: a bad cache costs time, never behaviour.
 */
function runCommonJs(file, requireFor) {
  const st = statSync(file);
  const dir = join(cacheRoot, 'code-cache');
  const prefix = `${file.replace(/^.*\//, '').replace(/\.cjs$/, '')}-${shortHash(file)}-`;
  const cacheFile = join(dir, `${prefix}${st.size}-${shortHash(`${st.ino}\0${st.mtimeMs}\0${process.version}\0${process.arch}`)}.bin`);
  let cachedData;
  if (useCache) {
    try {
      cachedData = readFileSync(cacheFile);
    } catch {
      // first run: made at exit
    }
  }
  const script = new vm.Script(readFileSync(file, 'latin1'), { filename: file, ...(cachedData ? { cachedData } : {}) });
  if (useCache && (cachedData === undefined || script.cachedDataRejected)) {
    process.once('exit', () => {
      try {
        mkdirSync(dir, { recursive: true, mode: 0o700 });
        const partial = `${cacheFile}.${process.pid}`;
        writeFileSync(partial, script.createCachedData(), { mode: 0o600 });
        renameSync(partial, cacheFile);
        for (const name of readdirSync(dir)) {
          if (name.startsWith(prefix) && name.endsWith('.bin') && join(dir, name) !== cacheFile) rmSync(join(dir, name), { force: true });
        }
      } catch {
        // no cache: the next run compiles again
      }
    });
  }
  const module = { exports: {} };
  const nodeRequire = nodeModule.createRequire(file);
  const require = Object.assign((id) => requireFor(id) ?? nodeRequire(id), nodeRequire);
  script.runInThisContext()(module.exports, require, module, file, dirname(file), pathToFileURL(file).href);
  return module.exports;
}

/**
 * Node 20 keeps no compiled code of ES modules between runs, but does for a script: there,
 * `tsmirror exec` (the command whose start the user waits for, each time) runs from a
 * CommonJS build of the same modules with V8's code cache. kube.cjs (the Kubernetes client,
 * only for Kubernetes targets) stands in for @kubernetes/client-node, which Node 20 cannot
 * require().
 */
async function runExecBundle(execFile) {
  let kube;
  const requireFor = (id) => {
    if (id !== '@kubernetes/client-node') return undefined;
    kube ??= runCommonJs(join(dirname(execFile), 'kube.cjs'), () => undefined);
    return kube;
  };
  await runCommonJs(execFile, requireFor).runCli();
}

const execBundle = fileURLToPath(new URL('../dist/cli-exec/exec.cjs', import.meta.url));
if (!nodeCompileCache && process.argv[2] === 'exec' && fresh(execBundle)) {
  await runExecBundle(execBundle);
} else {
  const bundle = fileURLToPath(new URL('../dist/cli-bundle/main.js', import.meta.url));
  await import(pathToFileURL(fresh(bundle) ? bundle : modules).href);
}
