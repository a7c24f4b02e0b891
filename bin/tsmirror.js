#!/usr/bin/env node
// The CLI as `npm run build` bundles it (dist/cli-bundle: one file per lazily loaded part,
// ~25 ms quicker to start than the compiled modules), or those modules where no bundle
// was built or where they were compiled after it (a bundle left stale by a bare `tsc`).
import { existsSync, statSync } from 'node:fs';

const bundle = new URL('../dist/cli-bundle/main.js', import.meta.url);
const modules = new URL('../dist/cli/main.js', import.meta.url);
const fresh = existsSync(bundle) && (!existsSync(modules) || statSync(bundle).mtimeMs >= statSync(modules).mtimeMs);
await import(fresh ? bundle.href : modules.href);
