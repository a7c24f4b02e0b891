import { existsSync } from 'node:fs';
import * as published from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import * as client from './kubernetes-client.js';

describe('kubernetes-client', () => {
  it('loads the bundle built by npm run build, and every value it hands out is there', () => {
    expect(existsSync(client.bundlePath), `${client.bundlePath} is missing: run npm run build:vendor`).toBe(true);
    // The bundle's classes, not the package's: the fast path is the one taken.
    expect(client.KubeConfig).not.toBe(published.KubeConfig);
    for (const [name, value] of Object.entries(client)) {
      if (name === 'bundlePath') continue;
      expect(['function', 'object'], name).toContain(typeof value);
      expect(typeof (published as Record<string, unknown>)[name], name).toBe(typeof value);
    }
  });

  it('a KubeConfig from the bundle reads a kubeconfig and makes API clients', () => {
    const kc = new client.KubeConfig();
    kc.loadFromOptions({
      clusters: [{ name: 'c', server: 'https://127.0.0.1:6443', skipTLSVerify: true }],
      users: [{ name: 'u', token: 't' }],
      contexts: [{ name: 'x', cluster: 'c', user: 'u', namespace: 'shop' }],
      currentContext: 'x',
    });
    expect(kc.getContextObject('x')?.namespace).toBe('shop');
    expect(kc.makeApiClient(client.CoreV1Api)).toBeInstanceOf(client.CoreV1Api);
  });
});
