#!/usr/bin/env node
// The CLI as `npm run build` bundles it (dist/cli-bundle: one file per lazily loaded part,
// ~25 ms quicker to start than the compiled modules), or those modules where no bundle
// was built or where they were compiled after it (a bundle left stale by a bare `tsc`).
import { existsSync, statSync } from 'node:fs';
import nodeModule from 'node:module';
import { homedir } from 'node:os';
import { join } from 'node:path';

// TSM_TRACE_START (cli/start-trace.ts): when this file started running.
if (process.env.TSM_TRACE_START) performance.mark('tsmirror: bin/tsmirror.js runs');

// Node 22.1+ can keep V8's compiled code of the modules between runs (about a third of the
// CLI's start is compiling its JavaScript). Kept in the user's own cache directory, not the
// shared temporary one another local user could fill first. Node 20 has no such call (its
// options, a startup snapshot or vm.Script cachedData, do not apply to ES modules).
if (typeof nodeModule.enableCompileCache === 'function' && process.env.TSM_NO_COMPILE_CACHE === undefined) {
  try {
    nodeModule.enableCompileCache(join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'tsmirror', 'compile-cache'));
  } catch {
    // no cache: only slower
  }
}

const bundle = new URL('../dist/cli-bundle/main.js', import.meta.url);
const modules = new URL('../dist/cli/main.js', import.meta.url);
const fresh = existsSync(bundle) && (!existsSync(modules) || statSync(bundle).mtimeMs >= statSync(modules).mtimeMs);
await import(fresh ? bundle.href : modules.href);
