/**
 * PortForwardSocket's socket timeout: http's req.setTimeout arms it and waits for
 * 'timeout'; a no-op left a request never answered through a port-forward waiting until the
 * API server closed the stream. (ws's handshakeTimeout never arms it: agent-client.test.ts.)
 */
import { once } from 'node:events';
import { describe, expect, it } from 'vitest';
import { PortForwardSocket } from './portforward.js';

describe('PortForwardSocket.setTimeout', () => {
  it("emits 'timeout' after that long without a byte, not before; bytes in restart the clock", async () => {
    const s = new PortForwardSocket('pod ns/p port 1');
    let fired = 0;
    const started = Date.now();
    s.setTimeout(300, () => fired++);
    await new Promise((r) => setTimeout(r, 150));
    s.output.write(Buffer.from('x')); // activity: the clock starts again
    await new Promise((r) => setTimeout(r, 200));
    expect(fired).toBe(0);
    await once(s, 'timeout');
    expect(Date.now() - started).toBeGreaterThanOrEqual(440);
    expect(fired).toBe(1);
    s.destroy();
  });

  it('0 turns it off; a destroyed socket never times out', async () => {
    const s = new PortForwardSocket('pod ns/p port 1');
    let fired = 0;
    s.on('timeout', () => fired++);
    s.setTimeout(100);
    s.setTimeout(0);
    const d = new PortForwardSocket('pod ns/p port 2');
    d.on('timeout', () => fired++);
    d.setTimeout(100);
    d.destroy();
    await new Promise((r) => setTimeout(r, 250));
    expect(fired).toBe(0);
  });
});
