import { describe, expect, it } from 'vitest';
import { parseIncomingFlags } from './incoming-flags.js';

const base = { httpHeader: [] as string[], portMap: [] as string[] };

describe('incoming flags', () => {
  it('mirror by default; filters imply steal', () => {
    expect(parseIncomingFlags(base)).toMatchObject({ mode: 'mirror', filter: undefined });
    expect(parseIncomingFlags({ ...base, steal: true })).toMatchObject({ mode: 'steal', filter: undefined });
    expect(parseIncomingFlags({ ...base, httpHeader: ['X-Dev:  alice '] })).toMatchObject({
      mode: 'steal', filter: { headers: [{ name: 'X-Dev', value: 'alice' }] },
    });
    expect(parseIncomingFlags({ ...base, httpPath: '/api/.*', httpMethod: 'post' }).filter).toEqual({ headers: [], path: '/api/.*', method: 'POST' });
  });

  it('port map and port list', () => {
    const o = parseIncomingFlags({ ...base, portMap: ['3000:8080'], ports: '8080,9090' });
    expect([...o.portMap]).toEqual([[3000, 8080]]);
    expect([...(o.ports ?? [])]).toEqual([8080, 9090]);
  });

  it('refuses contradictions and malformed values with what to do', () => {
    expect(() => parseIncomingFlags({ ...base, mirror: true, steal: true })).toThrow(/exclude each other/);
    expect(() => parseIncomingFlags({ ...base, mirror: true, httpHeader: ['x: y'] })).toThrow(/select requests to steal/);
    expect(() => parseIncomingFlags({ ...base, httpHeader: ['no-colon'] })).toThrow(/NAME: VALUE/);
    expect(() => parseIncomingFlags({ ...base, httpHeader: ['x: ('] })).toThrow(/not a valid regular expression/);
    // The agent's limits (common/http-filter.ts), refused before a session opens.
    expect(() => parseIncomingFlags({ ...base, httpPath: 'a'.repeat(513) })).toThrow('--http-path is longer than 512 characters');
    expect(() => parseIncomingFlags({ ...base, httpHeader: Array.from({ length: 33 }, (_, i) => `x-${i}: v`) })).toThrow('at most 32 header filters');
    expect(() => parseIncomingFlags({ ...base, portMap: ['3000'] })).toThrow(/LOCAL:REMOTE/);
    expect(() => parseIncomingFlags({ ...base, portMap: ['3000:70000'] })).toThrow(/not a port/);
    expect(() => parseIncomingFlags({ ...base, ports: '80,x' })).toThrow(/not a port/);
  });

  it('refuses filters that match every request: they would steal all traffic', () => {
    for (const flags of [{ httpPath: '.*' }, { httpPath: '/.*' }, { httpHeader: ['x-dev: .*'] }]) {
      expect(() => parseIncomingFlags({ ...base, ...flags }), JSON.stringify(flags)).toThrow('these HTTP filters match (nearly) every request, so they would steal all traffic');
    }
    expect(parseIncomingFlags({ ...base, httpHeader: ['x-dev: .*', 'x-tenant: acme'] }).filter?.headers).toHaveLength(2);
  });
});
