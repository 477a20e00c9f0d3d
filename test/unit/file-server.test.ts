/** sendFileRange (piece servers) and the peer's piece client, over real sockets on loopback. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as path from 'node:path';
import { randomBytes, createHash } from 'node:crypto';
import { once } from 'node:events';
import { sendFileRange, sendText } from '../../src/common/file-server';
import { uplinkLimiter } from '../../src/common/ratelimit';
import { PieceClient } from '../../src/peer/piece-client';
import { tempDirSync } from '../helpers/tmp';

async function serve(handler: http.RequestListener): Promise<{ addr: string; close: () => Promise<void> }> {
  const server = http.createServer(handler);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as net.AddressInfo;
  return {
    addr: `127.0.0.1:${port}`,
    close: () => new Promise<void>((r) => { server.closeAllConnections(); server.close(() => r()); }),
  };
}

function tempFile(bytes: Buffer): string {
  const dir = tempDirSync('df-fs-');
  const f = path.join(dir, 'data');
  fs.writeFileSync(f, bytes);
  return f;
}

test('sendFileRange sends exactly the range, over many requests on one kept-alive connection', async (t) => {
  const data = randomBytes(3 * 1024 * 1024 + 12345);
  const file = tempFile(data);
  const srv = await serve((req, res) => {
    const [s, e] = String(req.headers.range).replace('bytes=', '').split('-').map(Number);
    sendFileRange(res, file, s, e, data.length).catch(() => res.destroy());
  });
  t.after(() => srv.close());
  const client = new PieceClient();
  t.after(() => client.close());
  // Ranges smaller than, equal to, and spanning several read buffers, and the tail.
  const ranges: Array<[number, number]> = [[0, 1], [5, 256 * 1024], [1000, 1024 * 1024 + 7], [0, data.length], [data.length - 3, 3]];
  for (const [offset, length] of ranges) {
    const h = createHash('sha256');
    let got = 0;
    await client.fetch({ addr: srv.addr, path: '/x', offset, length, timeoutMs: 5000, onData: (c) => { h.update(c); got += c.length; } });
    assert.equal(got, length);
    assert.equal(h.digest('hex'), createHash('sha256').update(data.subarray(offset, offset + length)).digest('hex'), `range ${offset}+${length}`);
  }
});

test('sendFileRange answers HEAD with headers only, and rejects before any header for a missing file', async (t) => {
  const data = randomBytes(1000);
  const file = tempFile(data);
  const srv = await serve((req, res) => {
    const target = req.url === '/missing' ? file + '.nope' : file;
    sendFileRange(res, target, 10, 19, data.length).catch((err: NodeJS.ErrnoException) => sendText(res, 404, String(err.code)));
  });
  t.after(() => srv.close());
  const head = await fetch(`http://${srv.addr}/x`, { method: 'HEAD' });
  assert.equal(head.status, 206);
  assert.equal(head.headers.get('content-range'), 'bytes 10-19/1000');
  assert.equal(head.headers.get('content-length'), '10');
  assert.equal((await head.arrayBuffer()).byteLength, 0);
  const missing = await fetch(`http://${srv.addr}/missing`);
  assert.equal(missing.status, 404);
  assert.equal(await missing.text(), 'ENOENT');
});

test('a file shorter than the range ends the response early: the client gets an error, never short data as complete', async (t) => {
  const data = randomBytes(100_000);
  const file = tempFile(data);
  let rejected: Error | undefined;
  const srv = await serve((_req, res) => {
    sendFileRange(res, file, 0, 199_999, 200_000).catch((err: Error) => { rejected = err; });
  });
  t.after(() => srv.close());
  const client = new PieceClient();
  t.after(() => client.close());
  let got = 0;
  await assert.rejects(client.fetch({ addr: srv.addr, path: '/x', offset: 0, length: 200_000, timeoutMs: 5000, onData: (c) => { got += c.length; } }),
    (err: Error & { code?: string }) => err.code === 'DF_ERR_PEER_UNREACHABLE');
  assert.ok(got < 200_000);
  assert.match(String(rejected?.message), /shorter than the range/);
});

test('a client that leaves mid-response makes sendFileRange reject, and the server keeps serving', async (t) => {
  const data = randomBytes(8 * 1024 * 1024);
  const file = tempFile(data);
  const outcomes: string[] = [];
  const settled: Array<() => void> = [];
  const srv = await serve((req, res) => {
    const [s, e] = String(req.headers.range).replace('bytes=', '').split('-').map(Number);
    sendFileRange(res, file, s, e, data.length).then(() => outcomes.push('ok'), () => outcomes.push('rejected')).finally(() => settled.shift()?.());
  });
  t.after(() => srv.close());
  const gone = new Promise<void>((r) => settled.push(r));
  const sock = net.connect(Number(srv.addr.split(':')[1]), '127.0.0.1');
  sock.write(`GET /x HTTP/1.1\r\nHost: x\r\nRange: bytes=0-${data.length - 1}\r\n\r\n`);
  await once(sock, 'data');
  sock.destroy();
  await gone;
  assert.deepEqual(outcomes, ['rejected']);
  const client = new PieceClient();
  t.after(() => client.close());
  let got = 0;
  await client.fetch({ addr: srv.addr, path: '/x', offset: 0, length: 4096, timeoutMs: 5000, onData: (c) => { got += c.length; } });
  assert.equal(got, 4096);
});

test('the piece client reads a response head split over several reads', async (t) => {
  const body = randomBytes(5000);
  const server = net.createServer((s) => {
    s.once('data', () => {
      const head = `HTTP/1.1 206 Partial Content\r\nContent-Length: ${body.length}\r\nContent-Range: bytes 0-${body.length - 1}/${body.length}\r\n\r\n`;
      // Every byte of the head in its own write, with the socket flushed between.
      const parts = [...Buffer.from(head)].map((b) => Buffer.from([b]));
      const next = () => {
        const p = parts.shift();
        if (p) s.write(p, () => setImmediate(next));
        else s.write(body);
      };
      next();
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const client = new PieceClient();
  // The client's kept-alive connection goes first, so the server can close at once.
  t.after(async () => {
    client.close();
    await new Promise<void>((r) => server.close(() => r()));
  });
  const chunks: Buffer[] = [];
  await client.fetch({
    addr: `127.0.0.1:${(server.address() as net.AddressInfo).port}`, path: '/x', offset: 0, length: body.length, timeoutMs: 5000,
    onData: (c) => { chunks.push(Buffer.from(c)); },
  });
  assert.deepEqual(Buffer.concat(chunks), body);
});

test('under an uplink limiter the range goes out in writes no larger than its burst, and no faster than its rate', async (t) => {
  const data = randomBytes(512 * 1024);
  const file = tempFile(data);
  const limiter = uplinkLimiter(1024 * 1024)!;
  const writes: number[] = [];
  const srv = await serve((req, res) => {
    const write = res.write.bind(res) as (chunk: Buffer, cb?: (err?: Error | null) => void) => boolean;
    (res as unknown as { write: typeof write }).write = (chunk, cb) => { writes.push(chunk.length); return write(chunk, cb); };
    sendFileRange(res, file, 0, data.length - 1, data.length, { limiter }).catch(() => res.destroy());
  });
  t.after(() => srv.close());
  const client = new PieceClient();
  t.after(() => client.close());
  const started = performance.now();
  const h = createHash('sha256');
  await client.fetch({ addr: srv.addr, path: '/x', offset: 0, length: data.length, timeoutMs: 5000, onData: (c) => h.update(c) });
  const ms = performance.now() - started;
  assert.equal(h.digest('hex'), createHash('sha256').update(data).digest('hex'));
  assert.equal(writes.reduce((a, b) => a + b, 0), data.length);
  assert.ok(Math.max(...writes) <= limiter.burst, `largest write ${Math.max(...writes)} bytes`);
  // The burst (64 KiB at 1 MiB/s) goes at once; the other 448 KiB take at least 437 ms.
  assert.ok(ms >= (data.length - limiter.burst) / limiter.bytesPerSec * 1000 - 5, `took ${ms.toFixed(0)} ms`);
});
