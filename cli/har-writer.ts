/**
 * Writes a HAR file (common/har.ts) as exchanges arrive: entries go to a temporary file
 * next to the destination (mode 0600, created exclusively), and `finish` writes the end of
 * the document, syncs it and renames it into place, so the destination is either absent
 * or a whole, valid file, whenever the recording stops.
 */
import { closeSync, fsyncSync, openSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { TsmError } from '../protocol/errors.js';
import type { RecordedBody, RecordedExchange } from '../protocol/messages.js';
import { HAR_CREATOR_NAME, HAR_VERSION, type HarEntry, type HarNameValue, type HarTsmirrorInfo } from '../common/har.js';

/** Where an exchange came from: its connection. */
export interface ConnectionInfo {
  /** Unique per client connection in this file. */
  id: string;
  remoteAddress: string;
  remotePort: number;
  localAddress: string;
  localPort: number;
}

const hostPort = (address: string, port: number): string => (address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`);
const utf8 = new TextDecoder('utf-8', { fatal: true });

function nameValues(fields: Array<[string, string]>): HarNameValue[] {
  return fields.map(([name, value]) => ({ name, value }));
}

function queryString(target: string): HarNameValue[] {
  const q = target.indexOf('?');
  if (q < 0) return [];
  try {
    return [...new URLSearchParams(target.slice(q + 1))].map(([name, value]) => ({ name, value }));
  } catch {
    return [];
  }
}

function mimeType(fields: Array<[string, string]>): string {
  return fields.find(([n]) => n.toLowerCase() === 'content-type')?.[1] ?? '';
}

/** A body as HAR text: UTF-8 as it is, anything else base64; above the limit only its hash. */
function bodyText(b: RecordedBody): { text?: string; encoding?: string; _sha256?: string } {
  if (b.data === undefined) return b.sha256 ? { _sha256: b.sha256 } : {};
  const bytes = Buffer.from(b.data.buffer, b.data.byteOffset, b.data.byteLength);
  try {
    return { text: utf8.decode(bytes) };
  } catch {
    return { text: bytes.toString('base64'), encoding: 'base64' };
  }
}

/** One recorded exchange as a HAR 1.2 entry with the tsmirror fields. */
export function harEntry(x: RecordedExchange, c: ConnectionInfo): HarEntry {
  const ms = (a: number, b: number): number => Math.max(0, Math.round((b - a) * 1000) / 1000);
  const send = ms(x.started, x.requestDone);
  const wait = ms(x.requestDone, x.responseStarted);
  const receive = ms(x.responseStarted, x.responseDone);
  const url = /^https?:\/\//i.test(x.target) ? x.target : `http://${x.authority || hostPort(c.localAddress, c.localPort)}${x.target}`;
  const entry: HarEntry = {
    startedDateTime: new Date(x.started).toISOString(),
    time: Math.round((send + wait + receive) * 1000) / 1000,
    request: {
      method: x.method,
      url,
      httpVersion: x.version,
      cookies: [],
      headers: nameValues(x.requestHeaders),
      queryString: queryString(x.target),
      headersSize: x.requestHeadSize,
      bodySize: x.requestBody.size,
    },
    response: {
      status: x.status,
      statusText: x.statusText,
      httpVersion: x.version,
      cookies: [],
      headers: nameValues(x.responseHeaders),
      content: { size: x.responseBody.size, mimeType: mimeType(x.responseHeaders), ...bodyText(x.responseBody) },
      redirectURL: '',
      headersSize: x.responseHeadSize,
      bodySize: x.responseBody.size,
      ...(x.trailers.length > 0 ? { _trailers: nameValues(x.trailers) } : {}),
    },
    cache: {},
    timings: { blocked: -1, dns: -1, connect: -1, send, wait, receive, ssl: -1 },
    serverIPAddress: c.localAddress,
    connection: c.id,
    _clientAddress: hostPort(c.remoteAddress, c.remotePort),
    _port: c.localPort,
  };
  if (x.requestBody.size > 0 || x.requestBody.sha256 !== undefined) {
    entry.request.postData = { mimeType: mimeType(x.requestHeaders), ...bodyText(x.requestBody), _size: x.requestBody.size };
  }
  return entry;
}

export class HarWriter {
  readonly path: string;
  readonly #temp: string;
  #fd: number;
  #entries = 0;
  #bytes = 0;
  #done = false;

  /** Creates the temporary file now, so that an unwritable destination fails before recording. */
  constructor(path: string, creatorVersion: string) {
    this.path = path;
    this.#temp = join(dirname(path), `.${basename(path)}.${process.pid}.tmp`);
    try {
      this.#fd = openSync(this.#temp, 'wx', 0o600);
    } catch (err) {
      throw new TsmError('TSM_ERR_USAGE', `cannot write the recording next to ${path}: ${(err as Error).message}`,
        { hint: 'choose an -o path in a directory you can write' });
    }
    this.#write(`{"log":{"version":${JSON.stringify(HAR_VERSION)},"creator":${JSON.stringify({ name: HAR_CREATOR_NAME, version: creatorVersion })},"pages":[],"entries":[`);
  }

  get entries(): number {
    return this.#entries;
  }

  /** Bytes written so far. */
  get bytes(): number {
    return this.#bytes;
  }

  #write(text: string): void {
    const buf = Buffer.from(text, 'utf8');
    let off = 0;
    while (off < buf.byteLength) off += writeSync(this.#fd, buf, off);
    this.#bytes += buf.byteLength;
  }

  add(entry: HarEntry): void {
    if (this.#done) return;
    this.#write(`${this.#entries === 0 ? '\n' : ',\n'}${JSON.stringify(entry)}`);
    this.#entries++;
  }

  /** Ends the document, syncs it, and renames it to its path. */
  finish(info: HarTsmirrorInfo): void {
    if (this.#done) return;
    this.#write(`\n],"_tsmirror":${JSON.stringify(info)}}}\n`);
    this.#done = true;
    fsyncSync(this.#fd);
    closeSync(this.#fd);
    renameSync(this.#temp, this.path);
  }

  /** Drops the temporary file (nothing was recorded worth keeping, or the recording failed to start). */
  abort(): void {
    if (this.#done) return;
    this.#done = true;
    closeSync(this.#fd);
    try {
      unlinkSync(this.#temp);
    } catch {
      // already gone
    }
  }
}
