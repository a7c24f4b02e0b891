import { describe, expect, it } from 'vitest';
import { normalizeContainerId } from './container-id.js';

const id = 'a'.repeat(8) + '0123456789abcdef'.repeat(3) + 'b'.repeat(8);

describe('container ids', () => {
  it('accepts runtime prefixes and short ids, and refuses non-ids', () => {
    expect(normalizeContainerId(`containerd://${id}`)).toBe(id);
    expect(normalizeContainerId(`cri-o://${id.toUpperCase()}`)).toBe(id);
    expect(normalizeContainerId(id.slice(0, 12))).toBe(id.slice(0, 12));
    expect(() => normalizeContainerId('nginx')).toThrow(/not a container id/);
  });

  it('refuses ids shorter than 12 or longer than 64 hex digits, and unknown separators', () => {
    expect(() => normalizeContainerId(id.slice(0, 11))).toThrow(/not a container id/);
    expect(() => normalizeContainerId(`${id}a`)).toThrow(/not a container id/);
    expect(() => normalizeContainerId(`containerd:/${id}`)).toThrow(/not a container id/);
  });
});
