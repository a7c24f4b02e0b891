// Answers the shim with @msgpack/msgpack (the session proxy's codec) to check that the shim's
// C decoder reads what the TypeScript side writes, and logs the shim's requests as
// the codec decodes them. usage: node codec-proxy.mjs SOCKET_PATH
import net from 'node:net';
import fs from 'node:fs';
import { decode, encode } from '@msgpack/msgpack';

const packr = { unpack: decode, pack: (v) => Buffer.from(encode(v)) };
const path = process.argv[2];
fs.rmSync(path, { force: true });
const answers = {
  connect: (m) => m.port === 1 ? { ok: false, errno: 111, message: 'refused '.repeat(40) }
    : { ok: false, errno: 113, eai: -3, message: 'no route' },
  resolve: (m) => m.name === 'big' ? { ok: true, action: 'remote', canonname: 'big.default.svc.cluster.local',
      addrs: Array.from({ length: 100 }, (_, i) => ({ family: 4, addr: `10.1.${i >> 8}.${i & 255}`, ttl: 30.5, extra: { deep: [1, 2, { x: null }] } })) }
    : m.name === 'nx' ? { ok: false, eai: -2, message: 'NXDOMAIN' }
    : { ok: true, action: 'remote', addrs: [{ family: 4, addr: '10.250.0.1' }, { family: 6, addr: 'fd00::1' }], canonname: 'db.default.svc.cluster.local' },
  reverse: () => ({ ok: true, action: 'remote', name: 'x'.repeat(200) + '.cluster.local' }),
};
net.createServer((c) => {
  let buf = Buffer.alloc(0);
  c.on('data', (d) => {
    buf = Buffer.concat([buf, d]);
    while (buf.length >= 4 && buf.length >= 4 + buf.readUInt32BE(0)) {
      const n = buf.readUInt32BE(0);
      const m = packr.unpack(buf.subarray(4, 4 + n));
      buf = buf.subarray(4 + n);
      console.log(JSON.stringify(m));
      const body = packr.pack(answers[m.op](m));
      const h = Buffer.alloc(4); h.writeUInt32BE(body.length);
      c.write(Buffer.concat([h, body]));
    }
  });
}).listen(path, () => console.log('ready'));
