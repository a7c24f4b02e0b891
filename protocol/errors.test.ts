import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ErrorCodes } from './errors.js';

describe('error codes', () => {
  it('every TSM_ERR_* code is explained in docs/troubleshooting.md', () => {
    const doc = readFileSync(new URL('../docs/troubleshooting.md', import.meta.url).pathname.replace('/dist/', '/'), 'utf8');
    const missing = Object.keys(ErrorCodes).filter((code) => !new RegExp(`^###.*\\b${code}\\b`, 'm').test(doc));
    expect(missing).toEqual([]);
  });
});
