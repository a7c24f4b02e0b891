import { describe, expect, it } from 'vitest';
import { backoffMs, connectAgent } from './agent-client.js';
import { PortForwardSocket } from './portforward.js';
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

describe('connecting through a stream the CLI was given (a port-forward)', () => {
  // ws's handshakeTimeout never reached such a stream: an upgrade nobody answered (an agent
  // starting behind the kubelet's forward) waited until the far end closed, 30 s in the
  // survive test, and the session came back that much later.
  it('gives up on an upgrade nobody answers within its timeout, and says so', async () => {
    const silent = new PortForwardSocket('pod tsmirror-system/agent port 7777');
    // Swallows the upgrade request; nothing ever comes back.
    Object.defineProperty(silent, '_write', { value: (_c: Buffer, _e: BufferEncoding, cb: () => void) => cb() });
    const started = Date.now();
    const err = await connectAgent({ url: 'ws://agent.tsmirror-system/', target: { kind: 'pid', pid: 1 }, timeoutMs: 300, createConnection: () => silent })
      .then(() => undefined, (e: unknown) => e as { code?: string; message?: string });
    expect(err?.code).toBe('TSM_ERR_AGENT_UNREACHABLE');
    expect(err?.message).toMatch(/did not answer the WebSocket upgrade within 300 ms/);
    expect(Date.now() - started).toBeLessThan(5000);
    expect(silent.destroyed).toBe(true); // the stream was let go, not left open
  }, 10000);
});
