import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { kustomizeBase } from './manifests.js';

const dir = join(import.meta.dirname, '..', 'daemonset');

describe('daemonset/ kustomize base', () => {
  it('is exactly what cli/manifests.ts generates (run `npm run build:ts && npm run manifests` after editing it)', () => {
    const generated = kustomizeBase();
    const onDisk = readdirSync(dir).filter((f) => f.endsWith('.yaml'));
    expect(onDisk.sort()).toEqual(Object.keys(generated).sort());
    for (const [file, text] of Object.entries(generated)) expect(readFileSync(join(dir, file), 'utf8'), file).toBe(text);
  });
});
