// Fixed-rate HTTP load (open loop, like wrk2): `node load-client.mjs URL RATE SECONDS [HEADER]`.
// Request i is due at start + i/RATE; its latency runs from when it was due (so a stall
// counts against every request it delays: no coordinated omission) to the end of its
// answer. Keep-alive connections, up to 64. The first second warms up (connections open,
// code is compiled) and is reported apart: steady-state p50/p99/max and the warm-up's
// max, in µs, with sent and errors, as JSON.
import http from 'node:http';

const [url = '', rate = '2000', seconds = '5', header = ''] = process.argv.slice(2);
const colon = header.indexOf(':');
const headers = colon > 0 ? { [header.slice(0, colon)]: header.slice(colon + 1).trim() } : {};
const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
const warmup = Number(rate);
const total = warmup + Number(rate) * Number(seconds);
const lat = [];
const warm = [];
let errors = 0;
let done = 0;

function fire(index, due) {
  const req = http.get(url, { agent, headers }, (res) => {
    res.resume();
    res.on('end', () => {
      (index < warmup ? warm : lat).push(Number(process.hrtime.bigint() - due) / 1000);
      finish();
    });
  });
  req.on('error', () => {
    errors++;
    finish();
  });
}
let resolveAll;
const all = new Promise((r) => (resolveAll = r));
function finish() {
  if (++done === total) resolveAll();
}
const start = process.hrtime.bigint() + 50_000_000n;
const step = BigInt(Math.round(1e9 / Number(rate)));
let i = 0;
function tick() {
  const now = process.hrtime.bigint();
  while (i < total && start + BigInt(i) * step <= now) {
    fire(i, start + BigInt(i) * step);
    i++;
  }
  if (i < total) setImmediate(tick);
}
setImmediate(tick);
await all;
agent.destroy();
const xs = lat.sort((a, b) => a - b);
const pct = (p) => Math.round(xs[Math.min(xs.length - 1, Math.floor(xs.length * p))] ?? 0);
process.stdout.write(`${JSON.stringify({ p50_us: pct(0.5), p99_us: pct(0.99), max_us: Math.round(xs[xs.length - 1] ?? 0), warmup_max_us: Math.round(Math.max(0, ...warm)), sent: total, errors })}\n`);
