#!/usr/bin/env node
// The CLI as `npm run build` bundles it (dist/cli-bundle: one file per lazily loaded part,
// ~25 ms quicker to start than the compiled modules), or those modules where no bundle
// was built.
import { existsSync } from 'node:fs';

const bundle = new URL('../dist/cli-bundle/main.js', import.meta.url);
await import(existsSync(bundle) ? bundle.href : '../dist/cli/main.js');
