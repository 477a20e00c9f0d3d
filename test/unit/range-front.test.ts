/**
 * The piece servers' socket front: piece requests answered on the socket,
 * everything else handed with its connection to the HTTP server behind it.
 * Real sockets on loopback, through a PieceUploader (the front plus its HTTP
 * handler) and the peer's piece client.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as path from 'node:path';
import { randomBytes, createHash } from 'node:crypto';
import { once } from 'node:events';
import { RangeFront, parseRangeHead } from '../../src/common/range-front';
import { createLogger } from '../../src/common/logger';
import { RateLimiter } from '../../src/common/ratelimit';
import { PieceClient } from '../../src/peer/piece-client';
import { PieceUploader, dataFilePath } from '../../src/peer/uploader';
import { tempDirSync } from '../helpers/tmp';

const TASK = 'a1'.repeat(32);
const PEER = 'host-1-abc';
const PIECE = `/pieces/${TASK}?peer=${PEER}`;

async function uploader(data: Buffer, opts: { limiter?: RateLimiter } = {}) {
  const dataDir = tempDirSync('df-front-');
  fs.writeFileSync(dataFilePath(dataDir, TASK, PEER), data);
  let served = 0;
  const u = new PieceUploader({
    dataDir, logger: createLogger('test', 'silent'), limiter: opts.limiter,
    onServe: () => { served++; },
    extraRoute: (req, res, url) => {
      if (url.pathname !== '/alive' || req.method !== 'POST') return false;
      res.end('alive');
      return true;
    },
  });
  const port = await u.start(0, '127.0.0.1');
  return { u, port, served: () => served };
}

/** Sends `text` on a new connection (in `parts` pieces), half-closes, and returns everything the server sent until it closed. */
async function exchange(port: number, text: string, parts = 1): Promise<string> {
  const s = net.connect(port, '127.0.0.1');
  await once(s, 'connect');
  let got = '';
  s.on('data', (d: Buffer) => { got += d.toString('latin1'); });
  const step = Math.ceil(text.length / parts);
  for (let i = 0; i < text.length; i += step) {
    s.write(text.slice(i, i + step));
    // Each part its own segment: wait until the kernel has taken it.
    await new Promise<void>((r) => s.write('', () => r()));
  }
  s.end();
  await once(s, 'close');
  return got;
}

/** Splits a byte string of HTTP/1.1 responses into status codes and bodies (Content-Length framed). */
function responses(raw: string): Array<{ status: number; headers: string; body: string }> {
  const out: Array<{ status: number; headers: string; body: string }> = [];
  let rest = raw;
  while (rest.length > 0) {
    const end = rest.indexOf('\r\n\r\n');
    assert.ok(end > 0, `no response head in ${JSON.stringify(rest.slice(0, 80))}`);
    const head = rest.slice(0, end);
    const m = /^HTTP\/1\.1 (\d{3})/.exec(head);
    assert.ok(m, `not a status line: ${head.split('\r\n')[0]}`);
    const len = Number(/\r\ncontent-length: (\d+)/i.exec(head)?.[1] ?? 0);
    out.push({ status: Number(m[1]), headers: head, body: rest.slice(end + 4, end + 4 + len) });
    rest = rest.slice(end + 4 + len);
  }
  return out;
}

const get = (target: string, extra = '') => `GET ${target} HTTP/1.1\r\nHost: x\r\n${extra}\r\n`;

test('piece requests: exact bytes over one kept-alive connection, counted, in pieces of every size', async (t) => {
  const data = randomBytes(2 * 1024 * 1024 + 333);
  const { u, port, served } = await uploader(data);
  t.after(() => u.close());
  const client = new PieceClient();
  t.after(() => client.close());
  const ranges: Array<[number, number]> = [[0, 1], [7, 256 * 1024], [300_000, 1024 * 1024 + 5], [0, data.length], [data.length - 2, 2]];
  let total = 0;
  for (const [offset, length] of ranges) {
    const h = createHash('sha256');
    await client.fetch({ addr: `127.0.0.1:${port}`, path: PIECE, offset, length, timeoutMs: 5000, onData: (c) => { h.update(c); } });
    assert.equal(h.digest('hex'), createHash('sha256').update(data.subarray(offset, offset + length)).digest('hex'), `range ${offset}+${length}`);
    total += length;
  }
  assert.equal(u.uploadedBytes, total);
  assert.equal(served(), ranges.length);
  assert.equal(u.activeUploads, 0);
});

test('pipelined requests: pieces, then one for the HTTP server, then a piece again, answered in order on one connection', async (t) => {
  const data = Buffer.from('0123456789abcdefghij');
  const { u, port } = await uploader(data);
  t.after(() => u.close());
  const raw = await exchange(port,
    get(PIECE, 'Range: bytes=2-5\r\n') + get(PIECE, 'Range: bytes=10-12\r\n') + get('/healthz') + get(PIECE, 'Range: bytes=0-1\r\n'));
  const r = responses(raw);
  assert.deepEqual(r.map((x) => [x.status, x.body]), [[206, '2345'], [206, 'abc'], [200, 'ok'], [206, '01']]);
  assert.match(r[0].headers, /\r\nContent-Range: bytes 2-5\/20(\r\n|$)/);
  assert.match(r[1].headers, /\r\nContent-Length: 3(\r\n|$)/);
  // The third and fourth came from the HTTP server (it adds a Date), the first two did not.
  assert.deepEqual(r.map((x) => /\r\nDate: /i.test(x.headers)), [false, false, true, true]);
});

test('a request head arriving a few bytes at a time is answered the same', async (t) => {
  const { u, port } = await uploader(Buffer.from('0123456789'));
  t.after(() => u.close());
  const r = responses(await exchange(port, get(PIECE, 'Range: bytes=3-6\r\n'), 9));
  assert.deepEqual(r.map((x) => [x.status, x.body]), [[206, '3456']]);
});

test('every error and every other route is the HTTP server\'s answer', async (t) => {
  const { u, port } = await uploader(Buffer.from('0123456789'));
  t.after(() => u.close());
  const cases: Array<[string, number, string]> = [
    [get(`/pieces/${'b'.repeat(64)}?peer=${PEER}`, 'Range: bytes=0-1\r\n'), 404, 'task not held here'],
    [get(PIECE), 400, 'a single byte range is required'],
    [get(PIECE, 'Range: bytes=0-1,4-5\r\n'), 400, 'a single byte range is required'],
    [get(PIECE, 'Range: bytes=50-60\r\n'), 416, 'range not available'],
    [get(`/pieces/${TASK}?peer=bad%20id`, 'Range: bytes=0-1\r\n'), 404, 'not found'],
    [`POST /alive?ms=5 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n`, 200, 'alive'],
    [`DELETE ${PIECE} HTTP/1.1\r\nHost: x\r\nRange: bytes=0-1\r\n\r\n`, 405, 'method not allowed'],
    [get('http://[::1'), 400, 'bad request target'],
  ];
  for (const [req, status, body] of cases) {
    const r = responses(await exchange(port, req));
    assert.deepEqual(r.map((x) => [x.status, x.body]), [[status, body]], req.split('\r\n')[0]);
  }
  // Not HTTP at all: the HTTP server's 400, and the connection closed.
  assert.match(await exchange(port, 'HELLO\r\n\r\n'), /^HTTP\/1\.1 400 /);
  // A GET with a body is not a piece request: the HTTP server reads the body and answers.
  const withBody = responses(await exchange(port, `GET ${PIECE} HTTP/1.1\r\nHost: x\r\nRange: bytes=0-1\r\nContent-Length: 3\r\n\r\nxyz${get('/healthz')}`));
  assert.deepEqual(withBody.map((x) => [x.status, x.body]), [[206, '01'], [200, 'ok']]);
  assert.equal(u.uploadedBytes, 2);
});

test('Connection: close gets its piece and then the end of the connection', async (t) => {
  const { u, port } = await uploader(Buffer.from('0123456789'));
  t.after(() => u.close());
  const raw = await exchange(port, get(PIECE, 'Range: bytes=0-3\r\nConnection: close\r\n') + get(PIECE, 'Range: bytes=4-5\r\n'));
  const r = responses(raw);
  assert.deepEqual(r.map((x) => [x.status, x.body]), [[206, '0123']]);
  assert.match(r[0].headers, /\r\nConnection: close(\r\n|$)/);
});

test('a client that leaves mid-piece ends that upload only: the next client gets its bytes', async (t) => {
  const data = randomBytes(1024 * 1024);
  // 256 KiB/s: the first client leaves long before its 1 MiB could be sent.
  const { u, port } = await uploader(data, { limiter: new RateLimiter(256 * 1024, { burstBytes: 64 * 1024 }) });
  t.after(() => u.close());
  const s = net.connect(port, '127.0.0.1');
  s.write(get(PIECE, `Range: bytes=0-${data.length - 1}\r\n`));
  await once(s, 'data');
  assert.equal(u.activeUploads, 1);
  s.destroy();
  const client = new PieceClient();
  t.after(() => client.close());
  let got = Buffer.alloc(0);
  await client.fetch({ addr: `127.0.0.1:${port}`, path: PIECE, offset: 100, length: 1000, timeoutMs: 5000, onData: (c) => { got = Buffer.concat([got, c]); } });
  assert.deepEqual(got, data.subarray(100, 1100));
  assert.ok(u.uploadedBytes < data.length, `${u.uploadedBytes} bytes counted`);
});

test('parseRangeHead takes a plain GET with one Range and a Host, and leaves everything else', () => {
  const ok = parseRangeHead(`GET ${PIECE} HTTP/1.1\r\nHost: x\r\nRange: bytes=0-9\r\nUser-Agent: y`);
  assert.deepEqual(ok, { target: PIECE, range: 'bytes=0-9', close: false });
  assert.equal(parseRangeHead(`GET ${PIECE} HTTP/1.1\r\nhost: x\r\nrange: bytes=0-9\r\nConnection: keep-alive, Close`)?.close, true);
  const refused = [
    `get ${PIECE} HTTP/1.1\r\nHost: x\r\nRange: bytes=0-9`,
    `GET ${PIECE} HTTP/1.0\r\nHost: x\r\nRange: bytes=0-9`,
    `GET ${PIECE} HTTP/1.1\r\nRange: bytes=0-9`,
    `GET ${PIECE} HTTP/1.1\r\nHost: x`,
    `GET ${PIECE} HTTP/1.1\r\nHost: x\r\nRange: bytes=0-9\r\nRange: bytes=0-9`,
    `GET ${PIECE} HTTP/1.1\r\nHost: x\r\nHost: y\r\nRange: bytes=0-9`,
    `GET ${PIECE} HTTP/1.1\r\nHost: x\r\nRange: bytes=0-9\r\n continued`,
    `GET ${PIECE} HTTP/1.1\r\nHost: x\r\nRange: bytes=0-9\r\nContent-Length: 0`,
    `GET ${PIECE} HTTP/1.1\r\nHost: x\r\nRange: bytes=0-9\r\nTransfer-Encoding: chunked`,
    `GET ${PIECE} HTTP/1.1\r\nHost: x\r\nRange: bytes=0-9\r\nExpect: 100-continue`,
    `GET ${PIECE} HTTP/1.1\r\nHost: x\r\nRange: bytes=0-9\r\nUpgrade: h2c`,
    `GET ${PIECE} HTTP/1.1\r\nHost: x\r\nRange: bytes=0-9\r\nBad Name: v`,
    `GET ${PIECE} HTTP/1.1\r\nHost: x\r\nRange: bytes=0-9\r\nX: a\x00b`,
    `GET /a\x01b HTTP/1.1\r\nHost: x\r\nRange: bytes=0-9`,
    `GET  ${PIECE} HTTP/1.1\r\nHost: x\r\nRange: bytes=0-9`,
  ];
  for (const head of refused) assert.equal(parseRangeHead(head), undefined, JSON.stringify(head));
});

test('a head with bare LF line endings is the HTTP server\'s to refuse, at once', { timeout: 10_000 }, async (t) => {
  const { u, port } = await uploader(Buffer.from('0123456789'));
  t.after(() => u.close());
  for (const req of ['GET /healthz HTTP/1.1\nHost: x\n\n', `GET ${PIECE} HTTP/1.1\r\nHost: x\nRange: bytes=0-1\n\n`]) {
    // The connection stays open from our side: the answer must not wait for an end or a timeout.
    const s = net.connect(port, '127.0.0.1');
    t.after(() => s.destroy());
    await once(s, 'connect');
    s.write(req);
    const [first] = await once(s, 'data') as [Buffer];
    assert.match(first.toString('latin1'), /^HTTP\/1\.1 400 /, JSON.stringify(req));
  }
  assert.equal(u.uploadedBytes, 0);
});

test('a head longer than the front takes goes to the HTTP server, which refuses it', async (t) => {
  const { u, port } = await uploader(Buffer.from('0123456789'));
  t.after(() => u.close());
  const raw = await exchange(port, get(PIECE, `Range: bytes=0-1\r\nX-Pad: ${'p'.repeat(20 * 1024)}\r\n`));
  // Node's HTTP server takes heads up to 16 KiB by default.
  assert.match(raw, /^HTTP\/1\.1 431 /);
  assert.equal(u.uploadedBytes, 0);
});

test('connections that only hold a socket are closed: silence, a head that trickles in, and half a head left to the HTTP server', async (t) => {
  const dataDir = tempDirSync('df-front-');
  fs.writeFileSync(path.join(dataDir, 'f'), 'abc');
  const httpServer = http.createServer({ connectionsCheckingInterval: 50 }, (_req, res) => res.end('ok'));
  httpServer.headersTimeout = 400;
  httpServer.requestTimeout = 400;
  const front = new RangeFront(httpServer, {
    resolve: (target) => (target === '/f' ? { filePath: path.join(dataDir, 'f'), available: 3, total: 3 } : undefined),
    idleTimeoutMs: 300, logger: createLogger('test', 'silent'),
  });
  const port = await front.listen(0, '127.0.0.1');
  t.after(() => front.close());
  const closed = async (s: net.Socket) => {
    let got = '';
    s.on('data', (d: Buffer) => { got += d.toString('latin1'); });
    await once(s, 'close');
    return got;
  };
  // Silent: closed by the idle timeout, nothing sent.
  const silent = net.connect(port, '127.0.0.1');
  assert.equal(await closed(silent), '');
  // A byte every 100 ms never makes the connection idle, but its head takes too long.
  const trickle = net.connect(port, '127.0.0.1');
  const timer = setInterval(() => trickle.write('X'), 100);
  t.after(() => clearInterval(timer));
  const started = performance.now();
  assert.equal(await closed(trickle), '');
  clearInterval(timer);
  assert.ok(performance.now() - started >= 300, 'closed before its head was late');
  // On a connection handed to the HTTP server (a request for another path),
  // half of a second head: the HTTP server's headersTimeout answers 408.
  const half = net.connect(port, '127.0.0.1');
  half.write('GET /other HTTP/1.1\r\nHost: x\r\n\r\nGET /other HTTP/1.1\r\nHost: x\r\n');
  const got = await closed(half);
  assert.match(got, /^HTTP\/1\.1 200 [^]*\r\n\r\nokHTTP\/1\.1 408 /);
  // And a whole request still works.
  assert.deepEqual(responses(await exchange(port, get('/f', 'Range: bytes=1-2\r\n'))).map((x) => [x.status, x.body]), [[206, 'bc']]);
});
