#!/usr/bin/python3
"""A stand-in for the CLI's session proxy, for developing the shim (docs/shim-ipc.md).

"Remote" is this machine: made-up pod addresses map to loopback servers this script runs.
  10.250.0.1:80   tcp -> a small HTTP server ("hello from remote <path>")
  10.250.0.1:7    tcp/udp -> echo servers
  10.250.0.1:81   -> ECONNREFUSED (111)
  any:53 udp      -> a fake DNS server (A answers 10.250.0.1 for every name)
  127.0.0.0/8, ::1 -> action local
  anything else   -> ENETUNREACH (101)
Names: db, web, *.svc.cluster.local -> 10.250.0.1; nx.test -> EAI_NONAME; again.test ->
EAI_AGAIN; v6.test -> fd00::1; everything else (localhost, ...) -> local.
Reverse: 10.250.0.1 -> db.default.svc.cluster.local; 127.x/::1 -> local; else EAI_NONAME.

usage: fakeproxy.py SOCKET_PATH [LOG_PATH]   (prints "ready" when listening)
"""
import json, os, socket, struct, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# ---- minimal msgpack ----
def pack(o):
    if o is None: return b'\xc0'
    if o is True: return b'\xc3'
    if o is False: return b'\xc2'
    if isinstance(o, int):
        if 0 <= o <= 0x7f: return bytes([o])
        if -32 <= o < 0: return struct.pack('b', o)
        if 0 <= o <= 0xffff: return b'\xcd' + struct.pack('>H', o)
        if 0 <= o <= 0xffffffff: return b'\xce' + struct.pack('>I', o)
        return b'\xd3' + struct.pack('>q', o)
    if isinstance(o, float): return b'\xcb' + struct.pack('>d', o)
    if isinstance(o, str):
        b = o.encode()
        if len(b) < 32: return bytes([0xa0 | len(b)]) + b
        if len(b) < 256: return b'\xd9' + bytes([len(b)]) + b
        return b'\xda' + struct.pack('>H', len(b)) + b
    if isinstance(o, (list, tuple)):
        h = bytes([0x90 | len(o)]) if len(o) < 16 else b'\xdc' + struct.pack('>H', len(o))
        return h + b''.join(pack(x) for x in o)
    if isinstance(o, dict):
        h = bytes([0x80 | len(o)]) if len(o) < 16 else b'\xde' + struct.pack('>H', len(o))
        return h + b''.join(pack(k) + pack(v) for k, v in o.items())
    raise TypeError(o)

def unpack(b, i=0):
    t = b[i]; i += 1
    if t <= 0x7f: return t, i
    if t >= 0xe0: return t - 256, i
    if t & 0xf0 == 0x80: return unpack_map(b, i, t & 15)
    if t & 0xf0 == 0x90: return unpack_arr(b, i, t & 15)
    if t & 0xe0 == 0xa0: n = t & 31; return b[i:i+n].decode(), i + n
    if t == 0xc0: return None, i
    if t == 0xc2: return False, i
    if t == 0xc3: return True, i
    if t in (0xcc, 0xcd, 0xce, 0xcf):
        n = 1 << (t - 0xcc); return int.from_bytes(b[i:i+n], 'big'), i + n
    if t in (0xd0, 0xd1, 0xd2, 0xd3):
        n = 1 << (t - 0xd0); return int.from_bytes(b[i:i+n], 'big', signed=True), i + n
    if t in (0xd9, 0xda, 0xdb):
        k = 1 << (t - 0xd9); n = int.from_bytes(b[i:i+k], 'big'); i += k
        return b[i:i+n].decode(), i + n
    if t == 0xde: return unpack_map(b, i + 2, int.from_bytes(b[i:i+2], 'big'))
    if t == 0xdc: return unpack_arr(b, i + 2, int.from_bytes(b[i:i+2], 'big'))
    raise ValueError('type %x' % t)

def unpack_map(b, i, n):
    d = {}
    for _ in range(n):
        k, i = unpack(b, i); v, i = unpack(b, i); d[k] = v
    return d, i

def unpack_arr(b, i, n):
    a = []
    for _ in range(n):
        v, i = unpack(b, i); a.append(v)
    return a, i

# ---- backends ("the pod's network") ----
class Hello(BaseHTTPRequestHandler):
    def do_GET(self):
        body = ('hello from remote %s\n' % self.path).encode()
        self.send_response(200); self.send_header('Content-Length', str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass

def start_http():
    srv = ThreadingHTTPServer(('127.0.0.1', 0), Hello)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv.server_address[1]

def start_tcp_echo():
    s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(128)
    def serve(c):
        with c:
            while True:
                d = c.recv(65536)
                if not d: return
                c.sendall(d)
    def loop():
        while True:
            c, _ = s.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
    threading.Thread(target=loop, daemon=True).start()
    return s.getsockname()[1]

def start_udp(handler):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('127.0.0.1', 0))
    def loop():
        while True:
            d, a = s.recvfrom(65536)
            r = handler(d)
            if r is not None: s.sendto(r, a)
    threading.Thread(target=loop, daemon=True).start()
    return s.getsockname()[1]

def dns_answer(q):
    if len(q) < 12: return None
    tid = q[:2]; i = 12
    labels = []
    while q[i]:
        labels.append(q[i+1:i+1+q[i]].decode()); i += 1 + q[i]
    qend = i + 5; qtype = struct.unpack('>H', q[i+1:i+3])[0]
    question = q[12:qend]
    if qtype != 1:
        return tid + b'\x81\x80' + struct.pack('>HHHH', 1, 0, 0, 0) + question
    ans = b'\xc0\x0c' + struct.pack('>HHIH', 1, 1, 60, 4) + socket.inet_aton('10.250.0.1')
    return tid + b'\x81\x80' + struct.pack('>HHHH', 1, 1, 0, 0) + question + ans

# ---- the proxy ----
class Proxy:
    def __init__(self, path, logpath):
        self.path = path
        self.logf = open(logpath, 'a') if logpath else None
        self.lock = threading.Lock(); self.cv = threading.Condition(self.lock)
        self.streams = {}      # stream id -> remote socket
        self.attached = {}     # local port -> stream id
        self.next_stream = 1
        self.http = start_http(); self.echo = start_tcp_echo()
        self.udp_echo = start_udp(lambda d: d); self.dns = start_udp(dns_answer)
        self.listener = socket.socket(); self.listener.bind(('127.0.0.1', 0)); self.listener.listen(512)
        self.subscribed = set()
        self.stats = {'connect': 0, 'resolve': 0, 'reverse': 0, 'attach': 0, 'paired': 0, 'pids': set()}

    def log(self, *a):
        if self.logf:
            self.logf.write(' '.join(str(x) for x in a) + '\n'); self.logf.flush()

    def tcp_target(self, addr, port):
        if addr == '10.250.0.1' and port == 80: return ('127.0.0.1', self.http)
        if addr == '10.250.0.1' and port == 7: return ('127.0.0.1', self.echo)
        if addr == '10.250.0.1' and port == 81: return ('127.0.0.1', 1)  # nobody listens: refused
        return None

    def udp_target(self, addr, port):
        if port == 53: return ('127.0.0.1', self.dns)
        if addr == '10.250.0.1' and port == 7: return ('127.0.0.1', self.udp_echo)
        return None

    def is_local(self, addr):
        return addr.startswith('127.') or addr == '::1'

    def handle(self, m):
        op = m.get('op')
        if op == 'connect':
            self.stats['connect'] += 1
            addr, port, proto = m['addr'], m['port'], m['proto']
            if self.is_local(addr): return {'ok': True, 'action': 'local'}
            if proto == 'tcp':
                tgt = self.tcp_target(addr, port)
                if not tgt: return {'ok': False, 'errno': 101, 'message': 'no route in fake pod'}
                r = socket.socket()
                try:
                    r.connect(tgt)
                except OSError as e:
                    r.close()
                    return {'ok': False, 'errno': e.errno, 'message': str(e)}
                with self.lock:
                    sid = self.next_stream; self.next_stream += 1; self.streams[sid] = r
                return {'ok': True, 'action': 'proxy', 'proxyAddr': '127.0.0.1',
                        'proxyPort': self.listener.getsockname()[1], 'stream': sid,
                        'localAddr': '10.244.1.5', 'localPort': r.getsockname()[1]}
            tgt = self.udp_target(addr, port)
            if not tgt: return {'ok': False, 'errno': 101, 'message': 'no route in fake pod'}
            relay = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); relay.bind(('127.0.0.1', 0))
            threading.Thread(target=self.udp_relay, args=(relay, tgt), daemon=True).start()
            return {'ok': True, 'action': 'proxy', 'proxyAddr': '127.0.0.1',
                    'proxyPort': relay.getsockname()[1], 'stream': 0}
        if op == 'resolve':
            self.stats['resolve'] += 1
            name, fam = m['name'], m['family']
            if name in ('db', 'web') or name.endswith('.svc.cluster.local'):
                if fam == 6: return {'ok': False, 'eai': -5, 'message': 'no AAAA'}
                return {'ok': True, 'action': 'remote', 'addrs': [{'family': 4, 'addr': '10.250.0.1'}],
                        'canonname': 'db.default.svc.cluster.local'}
            if name == 'v6.test':
                if fam == 4: return {'ok': False, 'eai': -5, 'message': 'no A'}
                return {'ok': True, 'action': 'remote', 'addrs': [{'family': 6, 'addr': 'fd00::1'}]}
            if name == 'nx.test': return {'ok': False, 'eai': -2, 'message': 'NXDOMAIN'}
            if name == 'again.test': return {'ok': False, 'eai': -3, 'message': 'timeout'}
            return {'ok': True, 'action': 'local'}
        if op == 'reverse':
            self.stats['reverse'] += 1
            a = m['addr']
            if a == '10.250.0.1': return {'ok': True, 'action': 'remote', 'name': 'db.default.svc.cluster.local'}
            if self.is_local(a): return {'ok': True, 'action': 'local'}
            return {'ok': False, 'eai': -2, 'message': 'no PTR'}
        if op == 'listen':
            # One subscriber per port, like an unfiltered steal: a second listen is refused.
            port = m['port']
            with self.lock:
                if port in self.subscribed:
                    return {'ok': False, 'errno': 98, 'message': f'port {port} is already stolen by someone@elsewhere'}
                self.subscribed.add(port)
            return {'ok': True, 'action': 'remote'}
        if op == 'peer':
            # A connection from 127.0.0.1:31999 stands for the pod client 10.250.0.9:5555.
            if m['port'] == 31999:
                return {'ok': True, 'action': 'remote', 'addr': '10.250.0.9', 'port': 5555,
                        'localAddr': '10.244.1.5', 'localPort': 8080}
            return {'ok': True, 'action': 'local'}
        return {'ok': False, 'errno': 22, 'message': 'unknown op'}

    def udp_relay(self, relay, tgt):
        client = None
        relay.settimeout(120)
        try:
            while True:
                d, a = relay.recvfrom(65536)
                if a == tgt:
                    if client: relay.sendto(d, client)
                else:
                    client = a; relay.sendto(d, tgt)
        except OSError:
            relay.close()

    def serve_channel(self, c):
        with c:
            while True:
                hdr = b''
                while len(hdr) < 4:
                    d = c.recv(4 - len(hdr))
                    if not d: return
                    hdr += d
                n = struct.unpack('>I', hdr)[0]
                body = b''
                while len(body) < n:
                    d = c.recv(n - len(body))
                    if not d: return
                    body += d
                m, _ = unpack(body)
                cred = c.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize('3i'))
                pid = struct.unpack('3i', cred)[0]
                self.stats['pids'].add(pid)
                if m.get('op') == 'unlisten':
                    self.log('pid', pid, 'unlisten', json.dumps(m))
                    with self.lock:
                        self.subscribed.discard(m['port'])
                    continue
                if m.get('op') == 'attach':
                    self.stats['attach'] += 1
                    self.log('pid', pid, 'attach', json.dumps(m))
                    with self.cv:
                        self.attached[m['port']] = m['stream']; self.cv.notify_all()
                    continue
                r = self.handle(m)
                self.log('pid', pid, json.dumps(m), '->', json.dumps(r))
                out = pack(r)
                c.sendall(struct.pack('>I', len(out)) + out)

    def accept_loop(self):
        while True:
            c, a = self.listener.accept()
            threading.Thread(target=self.pair, args=(c, a[1]), daemon=True).start()

    def pair(self, c, port):
        with self.cv:
            ok = self.cv.wait_for(lambda: port in self.attached, timeout=5)
            if not ok:
                self.log('accepted port', port, 'never attached'); c.close(); return
            sid = self.attached.pop(port); r = self.streams.pop(sid)
            self.stats['paired'] += 1
        def pump(a, b):
            try:
                while True:
                    d = a.recv(65536)
                    if not d: break
                    b.sendall(d)
            except OSError:
                pass
            try: b.shutdown(socket.SHUT_WR)
            except OSError: pass
        threading.Thread(target=pump, args=(r, c), daemon=True).start()
        pump(c, r)

    def run(self):
        try: os.unlink(self.path)
        except FileNotFoundError: pass
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); srv.bind(self.path); srv.listen(512)
        threading.Thread(target=self.accept_loop, daemon=True).start()
        print('ready', flush=True)
        while True:
            c, _ = srv.accept()
            threading.Thread(target=self.serve_channel, args=(c,), daemon=True).start()

if __name__ == '__main__':
    Proxy(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None).run()
