/**
 * `node dist/bench/codec.js`: encode and decode time per frame of the CLI<->agent codec
 * (protocol/codec.ts, msgpackr) against the codec it replaced (@msgpack/msgpack with one
 * reused Encoder, as protocol/codec.ts had it), on the frames of the hot paths. Each figure
 * is the minimum over several rounds of many operations, so that a loaded machine inflates
 * it as little as possible. Needs no root.
 */
import { Encoder, decode as oldUnpack } from '@msgpack/msgpack';
import { decodeAgentMessage, decodeClientMessage, encode, unpackPlain } from '../protocol/codec.js';
import type { AgentMessage, ClientMessage } from '../protocol/messages.js';

const oldEncoder = new Encoder({ initialBufferSize: 256 * 1024 });
const oldEncode = (m: unknown): Buffer => {
  const bytes = oldEncoder.encode(m);
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
};

const frames: Array<{ name: string; message: ClientMessage | AgentMessage; from: 'client' | 'agent' }> = [
  { name: 'tcp.connect', from: 'client', message: { type: 'tcp.connect', id: 17, stream: 9, host: '10.96.0.12', port: 8080, family: 4, timeoutMs: 30000 } },
  { name: 'result (dns.lookup)', from: 'agent', message: { type: 'result', id: 17, value: { addresses: [{ family: 4, address: '10.244.1.7' }], canonname: 'echo.default.svc.cluster.local' } } },
  { name: 'data 64 B', from: 'client', message: { type: 'data', stream: 9, data: Buffer.alloc(64, 7) } },
  { name: 'data 64 KiB', from: 'agent', message: { type: 'data', stream: 9, data: Buffer.alloc(65536, 7) } },
  { name: 'window', from: 'client', message: { type: 'window', stream: 9, bytes: 262144 } },
];

/** ns per call: the least over `rounds` rounds of `n` calls. */
function time(n: number, f: () => unknown, rounds = 15): number {
  let best = Infinity;
  for (let r = 0; r < rounds; r++) {
    const t = process.hrtime.bigint();
    for (let i = 0; i < n; i++) f();
    best = Math.min(best, Number(process.hrtime.bigint() - t) / n);
  }
  return best;
}

function main(): void {
  process.stdout.write('frame                    encode: @msgpack/msgpack  msgpackr   decode: @msgpack/msgpack  msgpackr   +validation (ns/frame)\n');
  for (const { name, message, from } of frames) {
    const n = name.includes('KiB') ? 2000 : 50000;
    const bytes = encode(message);
    if (!oldEncode(message).equals(bytes) && Buffer.compare(Buffer.from(JSON.stringify(oldUnpack(bytes))), Buffer.from(JSON.stringify(oldUnpack(oldEncode(message))))) !== 0) {
      throw new Error(`${name}: the two codecs disagree`);
    }
    const decode = from === 'client' ? decodeClientMessage : decodeAgentMessage;
    const oldBytes = oldEncode(message);
    const eOld = time(n, () => oldEncode(message));
    const eNew = time(n, () => encode(message));
    const dOld = time(n, () => oldUnpack(oldBytes));
    const dNew = time(n, () => unpackPlain(bytes));
    const dFull = time(n, () => decode(bytes));
    const col = (v: number): string => v.toFixed(0).padStart(9);
    process.stdout.write(`${name.padEnd(24)} ${col(eOld).padStart(25)} ${col(eNew)}   ${col(dOld).padStart(24)} ${col(dNew)}   ${col(dFull)}\n`);
  }
  process.stdout.write('(+validation: decodeClientMessage/decodeAgentMessage, msgpackr and the field checks, what the wire runs per frame)\n');
}

main();
