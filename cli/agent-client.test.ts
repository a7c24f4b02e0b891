import { describe, expect, it } from 'vitest';
import { backoffMs } from './agent-client.js';
import { describeSessionState } from './status.js';

describe('reconnect backoff', () => {
  it('starts near 100 ms, doubles, never exceeds 5 s, and is jittered', () => {
    expect(backoffMs(0, () => 0)).toBe(50);
    expect(backoffMs(0, () => 0.999)).toBeLessThanOrEqual(100);
    expect(backoffMs(3, () => 1)).toBe(800);
    for (let attempt = 0; attempt < 40; attempt++) expect(backoffMs(attempt)).toBeLessThanOrEqual(5000);
    expect(backoffMs(30, () => 0)).toBe(2500);
    const spread = new Set(Array.from({ length: 20 }, () => backoffMs(10)));
    expect(spread.size).toBeGreaterThan(1);
  });
});

describe('tsmirror status: a session\'s connection', () => {
  it('says connected or resuming since when, resumes, bytes sent again, new sessions and dropped mirror copies', () => {
    const base = { id: 'a', user: 'u', host: 'h', target: 't', startedAt: 0, streams: 1 };
    expect(describeSessionState(base)).toBe(''); // an agent older than resumable sessions
    expect(describeSessionState({ ...base, state: 'connected', resumes: 0 })).toBe(', connected');
    expect(describeSessionState({ ...base, state: 'resuming', resumingSince: 1000, resumes: 2, lastGapMs: 1500, longestGapMs: 3200, bytesResent: 4096, reestablished: 1, mirrorDropped: 3 }, 13_000))
      .toBe(', resuming since 12s ago, resumed 2× (last gap 1.5 s, longest 3.2 s), 4096 bytes sent again, re-established 1×, 3 mirror copies dropped during gaps');
    expect(describeSessionState({ ...base, state: 'connected', resumes: 0, mirrorCut: 2, mirrorBytesDropped: 5000 }))
      .toBe(', connected, 2 mirror copies cut, the session behind (5000 bytes not copied)');
  });
});
