/**
 * dfdaemon end to end over real sockets: a fake upstream registry (node:http),
 * a fake storage server that blob redirects point at, and a fake in-memory
 * BlobSource standing in for the P2P network.
 */
import { after, before, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer as createHttpsServer } from 'node:https';
import * as path from 'node:path';
import { createServer, request as httpRequest, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Readable } from 'node:stream';
import { DfError } from '../../src/common/errors';
import { metricValue, newRegistry } from '../../src/common/metrics';
import { RangeNotSatisfiable, type BlobRange, type BlobRequest, type BlobSource, type OpenedBlob } from '../../src/peer/blob-source';
import { defaultConfig, type DfdaemonConfig, type ProxyRule, type RegistryAuth } from '../../src/dfdaemon/config';
import { DfdaemonServer } from '../../src/dfdaemon/server';
import { tempDirSync } from '../helpers/tmp';

const sha256 = (b: Buffer | string) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

// ---------- content the fake registry serves ----------

const GOOD = randomBytes(100 * 1024);
const GOOD_DIGEST = sha256(GOOD);
/** Served under a digest its bytes do not have (several chunks long). */
const BAD = randomBytes(300 * 1024);
const BAD_DIGEST = sha256(Buffer.from('what the bytes should have been'));
/** Served by the registry as a 307 to the storage server. */
const REDIR = randomBytes(50 * 1024);
const REDIR_DIGEST = sha256(REDIR);
const UNKNOWN_DIGEST = sha256(Buffer.from('nobody has this'));
/** Larger than what the sockets between dfdaemon and a client that does not read can hold. */
const BIG = randomBytes(16 * 1024 * 1024);
const BIG_DIGEST = sha256(BIG);
const MANIFEST = JSON.stringify({
  schemaVersion: 2,
  mediaType: 'application/vnd.oci.image.manifest.v1+json',
  layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: GOOD_DIGEST, size: GOOD.length }],
});
const MANIFEST_DIGEST = sha256(MANIFEST);
const MANIFEST_TYPE = 'application/vnd.oci.image.manifest.v1+json';

const USER = 'puller';
const PASS = 'p@ss:word';
const BASIC = `Basic ${Buffer.from(`${USER}:${PASS}`).toString('base64')}`;
const TOKEN = 'tok-123';

interface Seen { method: string; path: string; query: string; headers: IncomingHttpHeaders; body: Buffer }

class FakeRegistry {
  server!: Server;
  url = '';
  /** What the registry asks clients for. */
  auth: 'none' | 'basic' | 'bearer' = 'none';
  /** The next this-many requests get 503 (with Retry-After when set). */
  failNext = 0;
  retryAfter?: string;
  seen: Seen[] = [];
  storage!: Server;
  storageUrl = '';
  storageSeen: Seen[] = [];

  async start(): Promise<void> {
    this.storage = await listen((req, res, body) => {
      this.storageSeen.push(record(req, body));
      const hex = new URL(req.url ?? '/', 'http://x').pathname.replace('/store/', '');
      if (`sha256:${hex}` === REDIR_DIGEST) serveBytes(req, res, REDIR, { 'content-type': 'application/octet-stream' });
      else json(res, 404, '<Error>NoSuchKey</Error>', 'application/xml');
    });
    this.storageUrl = `http://127.0.0.1:${(this.storage.address() as AddressInfo).port}`;
    this.server = await listen((req, res, body) => this.handle(req, res, body));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  async close(): Promise<void> {
    for (const s of [this.server, this.storage]) {
      s.closeAllConnections();
      await new Promise((r) => s.close(r));
    }
  }

  /** Requests the registry saw whose path contains `part`. */
  saw(part: string, method?: string): Seen[] {
    return this.seen.filter((s) => s.path.includes(part) && (method === undefined || s.method === method));
  }

  private handle(req: IncomingMessage, res: ServerResponse, body: Buffer): void {
    const rec = record(req, body);
    this.seen.push(rec);
    if (this.failNext > 0) {
      this.failNext--;
      return json(res, 503, registryError('UNAVAILABLE', 'try again later'), 'application/json', this.retryAfter ? { 'retry-after': this.retryAfter } : {});
    }
    const p = rec.path;
    if (p === '/token') {
      if (req.headers.authorization !== BASIC) return json(res, 401, '{"details":"bad credentials"}');
      return json(res, 200, JSON.stringify({ token: TOKEN, expires_in: 300 }));
    }
    const name = /^\/v2\/(.+?)\/(?:manifests|blobs|tags)\//.exec(p)?.[1];
    if (this.auth === 'basic' && req.headers.authorization !== BASIC) {
      return json(res, 401, registryError('UNAUTHORIZED', 'authentication required'), 'application/json', { 'www-authenticate': 'Basic realm="fake registry"' });
    }
    if (this.auth === 'bearer' && req.headers.authorization !== `Bearer ${TOKEN}`) {
      const scope = name ? `,scope="repository:${name}:pull"` : '';
      return json(res, 401, registryError('UNAUTHORIZED', 'authentication required'), 'application/json',
        { 'www-authenticate': `Bearer realm="${this.url}/token",service="fake"${scope}` });
    }
    if (p === '/v2/') return json(res, 200, '{}');
    let m = /^\/v2\/(.+)\/manifests\/([^/]+)$/.exec(p);
    if (m) {
      if (m[2] !== 'latest' && m[2] !== MANIFEST_DIGEST) return json(res, 404, registryError('MANIFEST_UNKNOWN', 'manifest unknown'));
      return json(res, 200, MANIFEST, MANIFEST_TYPE, { 'docker-content-digest': MANIFEST_DIGEST, etag: `"${MANIFEST_DIGEST}"` });
    }
    m = /^\/v2\/(.+)\/blobs\/uploads\/$/.exec(p);
    if (m && req.method === 'POST') {
      res.writeHead(202, { location: `/v2/${m[1]}/blobs/uploads/u-1`, 'docker-upload-uuid': 'u-1', 'content-length': 0 });
      res.end();
      return;
    }
    m = /^\/v2\/(.+)\/blobs\/(sha256:[a-f0-9]{64})$/.exec(p);
    if (m) {
      const digest = m[2];
      if (digest === REDIR_DIGEST) {
        res.writeHead(307, { location: `${this.storageUrl}/store/${digest.slice(7)}?sig=signed`, 'content-length': 0 });
        res.end();
        return;
      }
      const bytes = digest === GOOD_DIGEST ? GOOD : digest === BAD_DIGEST ? BAD : digest === BIG_DIGEST ? BIG : undefined;
      if (!bytes) return json(res, 404, registryError('BLOB_UNKNOWN', 'blob unknown to registry'));
      return serveBytes(req, res, bytes, { 'content-type': 'application/octet-stream', 'docker-content-digest': digest });
    }
    json(res, 404, registryError('UNSUPPORTED', 'not here'));
  }
}

function registryError(code: string, message: string): string {
  return JSON.stringify({ errors: [{ code, message }] });
}

function record(req: IncomingMessage, body: Buffer): Seen {
  const u = new URL(req.url ?? '/', 'http://x');
  return { method: req.method ?? '', path: u.pathname, query: u.search, headers: req.headers, body };
}

function json(res: ServerResponse, status: number, body: string, type = 'application/json', extra: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body), 'docker-distribution-api-version': 'registry/2.0', ...extra });
  res.end(res.req.method === 'HEAD' ? undefined : body);
}

/** Serves bytes with single-range support, as a registry or storage does. */
function serveBytes(req: IncomingMessage, res: ServerResponse, bytes: Buffer, headers: Record<string, string>): void {
  const range = req.headers.range;
  let start = 0;
  let end = bytes.length - 1;
  let status = 200;
  if (range) {
    const m = /^bytes=(\d*)-(\d*)$/.exec(range);
    if (!m) return json(res, 416, registryError('RANGE_INVALID', 'bad range'));
    if (m[1] === '') start = Math.max(0, bytes.length - Number(m[2]));
    else {
      start = Number(m[1]);
      if (m[2] !== '') end = Math.min(Number(m[2]), end);
    }
    if (start >= bytes.length) return json(res, 416, registryError('RANGE_INVALID', 'bad range'), 'application/json', { 'content-range': `bytes */${bytes.length}` });
    status = 206;
    headers = { ...headers, 'content-range': `bytes ${start}-${end}/${bytes.length}` };
  }
  res.writeHead(status, { ...headers, 'content-length': end - start + 1 });
  res.end(req.method === 'HEAD' ? undefined : bytes.subarray(start, end + 1));
}

async function listen(handler: (req: IncomingMessage, res: ServerResponse, body: Buffer) => void): Promise<Server> {
  const s = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => handler(req, res, Buffer.concat(chunks)));
  });
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  return s;
}

// ---------- a fake P2P network ----------

/**
 * fail-midway: 1 KiB, then the P2P download fails; corrupt-midway: the same,
 * with that 1 KiB wrong; pooled: the body is read into a few buffers, each
 * filled again only once the consumer gave it back (OpenedBlob.recycle).
 */
type Mode = 'ok' | 'unreachable' | 'fail-midway' | 'corrupt-midway' | 'pooled' | { status: number };

/** The buffers of a 'pooled' body: POOL_BUFFERS of POOL_BYTES, handed out and given back. */
const POOL_BUFFERS = 2;
const POOL_BYTES = 64 * 1024;

class Pool {
  private readonly free: Buffer[] = Array.from({ length: POOL_BUFFERS }, () => Buffer.alloc(POOL_BYTES));
  private readonly lent = new Set<Buffer>();
  private wake?: () => void;
  given = 0;
  /** Resolves the first time the body waits for a buffer to come back. */
  readonly starved: Promise<void>;
  private onStarved!: () => void;
  /** Resolves once the body has read its last byte. */
  readonly produced: Promise<void>;
  private onProduced!: () => void;

  constructor() {
    this.starved = new Promise((r) => { this.onStarved = r; });
    this.produced = new Promise((r) => { this.onProduced = r; });
  }

  async *body(part: Buffer): AsyncGenerator<Buffer> {
    for (let at = 0; at < part.length; at += POOL_BYTES) {
      while (this.free.length === 0) {
        this.onStarved();
        await new Promise<void>((r) => { this.wake = r; });
      }
      const b = this.free.pop()!;
      const n = part.copy(b, 0, at, Math.min(at + POOL_BYTES, part.length));
      const chunk = n === POOL_BYTES ? b : b.subarray(0, n);
      this.lent.add(chunk);
      yield chunk;
    }
    this.onProduced();
  }

  recycle(chunk: Buffer): void {
    assert.ok(this.lent.delete(chunk), 'only a chunk of this body, and only once');
    this.given++;
    this.free.push(Buffer.from(chunk.buffer, chunk.byteOffset, POOL_BYTES));
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }
}

class FakeBlobSource implements BlobSource {
  calls: Array<{ req: BlobRequest; range?: BlobRange }> = [];
  mode: Mode = 'ok';
  pool?: Pool;
  private readonly blobs = new Map<string, Buffer>([[GOOD_DIGEST, GOOD], [REDIR_DIGEST, REDIR], [BIG_DIGEST, BIG]]);

  async open(req: BlobRequest, range?: BlobRange): Promise<OpenedBlob> {
    this.calls.push({ req, range });
    const mode = this.mode;
    if (mode === 'unreachable') throw new DfError('DF_ERR_SUPERNODE_UNAVAILABLE', 'no supernode answered');
    if (typeof mode === 'object') throw new DfError('DF_ERR_SOURCE_STATUS', `upstream answered ${mode.status}`, { status: mode.status });
    const blob = this.blobs.get(req.digest);
    if (!blob) throw new DfError('DF_ERR_SOURCE_STATUS', 'upstream answered 404', { status: 404 });
    const start = range?.start ?? 0;
    const end = Math.min(range?.end ?? blob.length - 1, blob.length - 1);
    // As the P2P source does: a range past the end is refused, with the length.
    if (start >= blob.length && blob.length > 0) throw new RangeNotSatisfiable(blob.length, `the range starts at byte ${start} of a blob of ${blob.length} bytes`);
    const part = start < blob.length ? blob.subarray(start, end + 1) : Buffer.alloc(0);
    if (mode === 'fail-midway' || mode === 'corrupt-midway') {
      // As a download whose source sent these bytes: its pieces' digests are theirs.
      const served = Buffer.from(blob);
      if (mode === 'corrupt-midway') served[start + 100] ^= 0xff;
      const pieceSize = 16 * 1024;
      const sha256 = new Map<number, string>();
      for (let i = 0; i * pieceSize < served.length; i++) {
        sha256.set(i, createHash('sha256').update(served.subarray(i * pieceSize, (i + 1) * pieceSize)).digest('hex'));
      }
      const body = new Readable({ read() { /* pushed below */ } });
      body.push(served.subarray(start, start + 1024));
      setImmediate(() => body.destroy(new DfError('DF_ERR_P2P_FAILED', 'all peers failed')));
      return { length: blob.length, body, pieces: () => ({ pieceSize, sha256 }) };
    }
    if (mode === 'pooled') {
      const pool = new Pool();
      this.pool = pool;
      return { length: blob.length, body: Readable.from(pool.body(part), { highWaterMark: 2 }), recycle: (c) => pool.recycle(c) };
    }
    // Several chunks, as pieces landing.
    const chunks: Buffer[] = [];
    for (let i = 0; i < part.length; i += 16 * 1024) chunks.push(part.subarray(i, i + 16 * 1024));
    return { length: blob.length, body: Readable.from(chunks) };
  }

  async close(): Promise<void> { /* nothing held */ }
}

// ---------- a client ----------

interface Reply { status: number; headers: IncomingHttpHeaders; body: Buffer; complete: boolean; error?: Error }

function fetchRaw(url: string, opts: { method?: string; headers?: Record<string, string>; body?: Buffer } = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    // The path is sent raw (a URL parser would resolve "..", hiding what we test).
    const m = /^http:\/\/([^/:]+):(\d+)(\/.*)$/.exec(url);
    if (!m) throw new Error(`bad test URL ${url}`);
    const target = { host: m[1], port: Number(m[2]), path: m[3] };
    const req = httpRequest({ ...target, method: opts.method ?? 'GET', headers: opts.headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      let error: Error | undefined;
      const done = () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks), complete: res.complete && !error, error });
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', (e) => { error = e; });
      res.on('close', done);
    });
    req.on('error', reject);
    req.end(opts.body);
  });
}

function errorCode(r: Reply): string {
  const parsed = JSON.parse(r.body.toString('utf8')) as { errors: Array<{ code: string; message: string }> };
  assert.ok(Array.isArray(parsed.errors) && parsed.errors.length > 0, 'registry error format');
  assert.equal(typeof parsed.errors[0].message, 'string');
  return parsed.errors[0].code;
}

// ---------- wiring ----------

const reg = new FakeRegistry();
before(() => reg.start());
after(() => reg.close());

interface Daemon { url: string; server: DfdaemonServer; source: FakeBlobSource; metrics: () => Promise<string> }

async function startDaemon(t: TestContext, opts: {
  source?: FakeBlobSource | null;
  proxies?: ProxyRule[];
  auth?: RegistryAuth;
  remote?: string;
  insecure?: boolean;
  certs?: string[];
} = {}): Promise<Daemon> {
  const source = opts.source ?? new FakeBlobSource();
  const config: DfdaemonConfig = {
    ...defaultConfig(),
    port: 0,
    hostIp: '127.0.0.1',
    rateLimitBytesPerSec: 100 * 1024 * 1024,
    registryMirror: {
      remote: opts.remote ?? reg.url,
      insecure: opts.insecure ?? true,
      certs: opts.certs ?? [],
      ...(opts.auth ? { auth: opts.auth } : {}),
    },
    proxies: opts.proxies ?? [],
  };
  const registry = newRegistry();
  const server = new DfdaemonServer({ config, blobSource: opts.source === null ? undefined : source, metricsRegistry: registry, shutdownGraceMs: 500 });
  t.after(() => server.close());
  const { port } = await server.start();
  return { url: `http://127.0.0.1:${port}`, server, source, metrics: () => registry.metrics() };
}

function resetRegistry(): void {
  reg.seen = [];
  reg.storageSeen = [];
  reg.auth = 'none';
  reg.failNext = 0;
  reg.retryAfter = undefined;
}

// ---------- tests ----------

test('GET /v2/ passes through', async (t) => {
  resetRegistry();
  const d = await startDaemon(t);
  const r = await fetchRaw(`${d.url}/v2/`);
  assert.equal(r.status, 200);
  assert.equal(r.headers['docker-distribution-api-version'], 'registry/2.0');
  assert.equal(reg.saw('/v2/').length, 1);
});

test('manifests GET and HEAD pass through with Accept, query and upstream headers', async (t) => {
  resetRegistry();
  const d = await startDaemon(t);
  const accept = `${MANIFEST_TYPE}, application/vnd.docker.distribution.manifest.v2+json`;
  const get = await fetchRaw(`${d.url}/v2/library/alpine/manifests/latest?ns=docker.io`, { headers: { accept, authorization: 'Bearer client-token' } });
  assert.equal(get.status, 200);
  assert.equal(get.headers['content-type'], MANIFEST_TYPE);
  assert.equal(get.headers['docker-content-digest'], MANIFEST_DIGEST);
  assert.equal(get.headers['content-length'], String(Buffer.byteLength(MANIFEST)));
  assert.equal(get.body.toString(), MANIFEST);
  const seen = reg.saw('/v2/library/alpine/manifests/latest', 'GET');
  assert.equal(seen.length, 1);
  assert.equal(seen[0].headers.accept, accept);
  assert.equal(seen[0].headers.authorization, 'Bearer client-token');
  assert.equal(seen[0].query, '?ns=docker.io');

  const head = await fetchRaw(`${d.url}/v2/library/alpine/manifests/${MANIFEST_DIGEST}`, { method: 'HEAD', headers: { accept } });
  assert.equal(head.status, 200);
  assert.equal(head.headers['docker-content-digest'], MANIFEST_DIGEST);
  assert.equal(head.headers['content-length'], String(Buffer.byteLength(MANIFEST)));
  assert.equal(head.body.length, 0);
  assert.equal(reg.saw(`/manifests/${MANIFEST_DIGEST}`, 'HEAD').length, 1);

  const missing = await fetchRaw(`${d.url}/v2/library/alpine/manifests/nope`);
  assert.equal(missing.status, 404);
  assert.equal(errorCode(missing), 'MANIFEST_UNKNOWN');
  assert.equal(d.source.calls.length, 0, 'manifests never go through P2P');
});

test('blob GET goes through the BlobSource with the upstream URL, headers and digest', async (t) => {
  resetRegistry();
  const d = await startDaemon(t);
  const r = await fetchRaw(`${d.url}/v2/library/alpine/blobs/${GOOD_DIGEST}`, { headers: { authorization: 'Bearer client-token' } });
  assert.equal(r.status, 200);
  assert.ok(r.complete);
  assert.ok(r.body.equals(GOOD));
  assert.equal(r.headers['content-type'], 'application/octet-stream');
  assert.equal(r.headers['docker-content-digest'], GOOD_DIGEST);
  assert.equal(r.headers['content-length'], String(GOOD.length));
  assert.equal(d.source.calls.length, 1);
  const call = d.source.calls[0];
  assert.equal(call.req.url, `${reg.url}/v2/library/alpine/blobs/${GOOD_DIGEST}`);
  assert.equal(call.req.digest, GOOD_DIGEST);
  assert.equal(call.req.headers.authorization, 'Bearer client-token');
  assert.match(call.req.headers['user-agent'], /^dfdaemon\//);
  assert.equal(call.range, undefined);
  assert.equal(reg.saw('/blobs/', 'GET').length, 0, 'the upstream is not asked for the bytes');
  assert.equal(reg.saw(`/blobs/${GOOD_DIGEST}`, 'HEAD').length, 1, 'the client\'s right to the blob is checked upstream first');
  const m = await d.metrics();
  assert.equal(metricValue(m, 'dragonfly_dfdaemon_requests_total', { route: 'blob', via: 'p2p', status: '200' }), 1);
  assert.equal(metricValue(m, 'dragonfly_dfdaemon_blob_bytes_total', { via: 'p2p' }), GOOD.length);
});

test('a P2P body read into reused buffers: each goes back only once the client took its bytes', async (t) => {
  resetRegistry();
  const d = await startDaemon(t);
  d.source.mode = 'pooled';
  const target = new URL(`${d.url}/v2/library/alpine/blobs/${BIG_DIGEST}`);
  const { status, body } = await new Promise<{ status: number; body: Buffer }>((resolve, reject) => {
    const req = httpRequest({ host: target.hostname, port: target.port, path: target.pathname, agent: false }, (res) => {
      // Not read until the sockets are full and the body has had to wait for
      // its buffers (or has read everything, which it could only do if its
      // buffers came back while their bytes were still waiting to be sent).
      res.pause();
      const pool = d.source.pool!;
      void Promise.race([pool.starved, pool.produced]).then(() => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
        res.on('error', reject);
        res.resume();
      });
    });
    req.on('error', reject);
    req.end();
  });
  assert.equal(status, 200);
  assert.equal(body.length, BIG.length);
  assert.ok(body.equals(BIG), 'every byte as the source read it, none overwritten by a later chunk');
  assert.equal(d.source.pool!.given, BIG.length / POOL_BYTES, 'every chunk given back');
});

test('blob HEAD goes straight to the upstream', async (t) => {
  resetRegistry();
  const d = await startDaemon(t);
  const r = await fetchRaw(`${d.url}/v2/library/alpine/blobs/${GOOD_DIGEST}`, { method: 'HEAD' });
  assert.equal(r.status, 200);
  assert.equal(r.headers['content-length'], String(GOOD.length));
  assert.equal(r.headers['docker-content-digest'], GOOD_DIGEST);
  assert.equal(d.source.calls.length, 0);
  assert.equal(reg.saw(`/blobs/${GOOD_DIGEST}`, 'HEAD').length, 1);
});

test('ranges: 206 with Content-Range through P2P, suffix direct, unsatisfiable and malformed 416', async (t) => {
  resetRegistry();
  const d = await startDaemon(t);
  const url = `${d.url}/v2/library/alpine/blobs/${GOOD_DIGEST}`;

  const a = await fetchRaw(url, { headers: { range: 'bytes=2-5' } });
  assert.equal(a.status, 206);
  assert.equal(a.headers['content-range'], `bytes 2-5/${GOOD.length}`);
  assert.equal(a.headers['content-length'], '4');
  assert.ok(a.body.equals(GOOD.subarray(2, 6)));
  assert.deepEqual(d.source.calls[0].range, { start: 2, end: 5 });

  const b = await fetchRaw(url, { headers: { range: 'bytes=1000-' } });
  assert.equal(b.status, 206);
  assert.equal(b.headers['content-range'], `bytes 1000-${GOOD.length - 1}/${GOOD.length}`);
  assert.ok(b.body.equals(GOOD.subarray(1000)));
  assert.deepEqual(d.source.calls[1].range, { start: 1000 });

  const clamp = await fetchRaw(url, { headers: { range: `bytes=${GOOD.length - 3}-${GOOD.length + 100}` } });
  assert.equal(clamp.status, 206);
  assert.ok(clamp.body.equals(GOOD.subarray(GOOD.length - 3)));

  const beyond = await fetchRaw(url, { headers: { range: `bytes=${GOOD.length}-` } });
  assert.equal(beyond.status, 416);
  assert.equal(beyond.headers['content-range'], `bytes */${GOOD.length}`);
  assert.equal(errorCode(beyond), 'RANGE_INVALID');

  for (const bad of ['bytes=abc', 'bytes=5-1', 'bytes=0-1,4-5']) {
    const r = await fetchRaw(url, { headers: { range: bad } });
    assert.equal(r.status, 416, bad);
    assert.equal(errorCode(r), 'RANGE_INVALID');
  }

  const callsBefore = d.source.calls.length;
  const suffix = await fetchRaw(url, { headers: { range: 'bytes=-4' } });
  assert.equal(suffix.status, 206);
  assert.equal(suffix.headers['content-range'], `bytes ${GOOD.length - 4}-${GOOD.length - 1}/${GOOD.length}`);
  assert.ok(suffix.body.equals(GOOD.subarray(GOOD.length - 4)));
  assert.equal(d.source.calls.length, callsBefore, 'a suffix range goes direct');
  assert.equal(reg.saw(`/blobs/${GOOD_DIGEST}`, 'GET')[0].headers.range, 'bytes=-4');
});

test('supernode unreachable: blobs come from the upstream directly, verified', async (t) => {
  resetRegistry();
  const d = await startDaemon(t);
  d.source.mode = 'unreachable';
  const r = await fetchRaw(`${d.url}/v2/library/alpine/blobs/${GOOD_DIGEST}`, { headers: { authorization: 'Bearer client-token' } });
  assert.equal(r.status, 200);
  assert.ok(r.complete);
  assert.ok(r.body.equals(GOOD));
  assert.equal(r.headers['docker-content-digest'], GOOD_DIGEST);
  assert.equal(d.source.calls.length, 1);
  const seen = reg.saw(`/blobs/${GOOD_DIGEST}`, 'GET');
  assert.equal(seen.length, 1);
  assert.equal(seen[0].headers.authorization, 'Bearer client-token');
  const range = await fetchRaw(`${d.url}/v2/library/alpine/blobs/${GOOD_DIGEST}`, { headers: { range: 'bytes=10-19' } });
  assert.equal(range.status, 206);
  assert.ok(range.body.equals(GOOD.subarray(10, 20)));
  const whole = await fetchRaw(`${d.url}/v2/library/alpine/blobs/${GOOD_DIGEST}`, { headers: { range: 'bytes=0-' } });
  assert.equal(whole.status, 206);
  assert.ok(whole.complete);
  assert.ok(whole.body.equals(GOOD), 'a whole-blob range that verifies arrives whole');
  const m = await d.metrics();
  assert.equal(metricValue(m, 'dragonfly_dfdaemon_requests_total', { route: 'blob', via: 'direct', status: '200' }), 1);
});

test('no BlobSource at all: blobs are fetched directly', async (t) => {
  resetRegistry();
  const d = await startDaemon(t, { source: null });
  const r = await fetchRaw(`${d.url}/v2/library/alpine/blobs/${GOOD_DIGEST}`);
  assert.equal(r.status, 200);
  assert.ok(r.body.equals(GOOD));
});

test('direct path follows a 307 to storage without leaking Authorization', async (t) => {
  resetRegistry();
  const d = await startDaemon(t, { proxies: [{ regx: /./, direct: true }] });
  const r = await fetchRaw(`${d.url}/v2/library/alpine/blobs/${REDIR_DIGEST}`, { headers: { authorization: 'Bearer client-token' } });
  assert.equal(r.status, 200);
  assert.ok(r.complete);
  assert.ok(r.body.equals(REDIR));
  assert.equal(r.headers['docker-content-digest'], REDIR_DIGEST);
  assert.equal(reg.saw(`/blobs/${REDIR_DIGEST}`, 'GET')[0].headers.authorization, 'Bearer client-token');
  assert.equal(reg.storageSeen.length, 1);
  assert.equal(reg.storageSeen[0].query, '?sig=signed');
  assert.equal(reg.storageSeen[0].headers.authorization, undefined, 'storage on another origin never sees the credentials');
  assert.equal(d.source.calls.length, 0);
});

test('direct path digest mismatch: the client gets a broken body, the daemon lives on', async (t) => {
  resetRegistry();
  const d = await startDaemon(t);
  d.source.mode = 'unreachable';
  const r = await fetchRaw(`${d.url}/v2/library/alpine/blobs/${BAD_DIGEST}`);
  assert.equal(r.status, 200);
  assert.equal(r.headers['content-length'], String(BAD.length));
  assert.equal(r.complete, false, 'the response is cut');
  assert.ok(r.body.length < BAD.length, 'never the whole (corrupt) blob');
  // A range that is the whole blob is checked as a whole blob is.
  for (const range of ['bytes=0-', `bytes=0-${BAD.length - 1}`, `bytes=0-${BAD.length + 10}`]) {
    const whole = await fetchRaw(`${d.url}/v2/library/alpine/blobs/${BAD_DIGEST}`, { headers: { range } });
    assert.equal(whole.status, 206, range);
    assert.equal(whole.complete, false, `${range}: the response is cut`);
    assert.ok(whole.body.length < BAD.length, `${range}: never the whole (corrupt) blob`);
  }
  const health = await fetchRaw(`${d.url}/healthz`);
  assert.equal(health.status, 200);
  const again = await fetchRaw(`${d.url}/v2/library/alpine/blobs/${GOOD_DIGEST}`);
  assert.ok(again.body.equals(GOOD));
});

test('a P2P body failing midway is finished from the upstream, checked; a range goes on with a range request', async (t) => {
  resetRegistry();
  const d = await startDaemon(t);
  d.source.mode = 'fail-midway';
  const r = await fetchRaw(`${d.url}/v2/library/alpine/blobs/${GOOD_DIGEST}`);
  assert.equal(r.status, 200);
  assert.equal(r.complete, true);
  assert.ok(r.body.equals(GOOD), 'the whole blob, 1 KiB over P2P and the rest from the upstream');
  const gets = reg.saw(`/blobs/${GOOD_DIGEST}`, 'GET');
  assert.equal(gets.length, 1, 'one upstream GET');
  assert.equal(gets[0].headers.range, undefined, 'the whole blob again, to check it and the KiB already sent');
  const m = await d.metrics();
  assert.equal(metricValue(m, 'dragonfly_dfdaemon_blob_bytes_total', { via: 'p2p' }), 1024);
  assert.equal(metricValue(m, 'dragonfly_dfdaemon_blob_bytes_total', { via: 'direct' }), GOOD.length - 1024);

  // A range the client asked for goes on from where the P2P bytes stopped.
  resetRegistry();
  const part = await fetchRaw(`${d.url}/v2/library/alpine/blobs/${GOOD_DIGEST}`, { headers: { range: 'bytes=2-50001' } });
  assert.equal(part.status, 206);
  assert.equal(part.headers['content-range'], `bytes 2-50001/${GOOD.length}`);
  assert.equal(part.complete, true);
  assert.ok(part.body.equals(GOOD.subarray(2, 50002)));
  assert.equal(reg.saw(`/blobs/${GOOD_DIGEST}`, 'GET')[0].headers.range, 'bytes=1026-50001');
});

test('P2P bytes that differ from the upstream\'s, then finished from the upstream: the response is cut, never complete', async (t) => {
  resetRegistry();
  const d = await startDaemon(t);
  d.source.mode = 'corrupt-midway';
  const r = await fetchRaw(`${d.url}/v2/library/alpine/blobs/${GOOD_DIGEST}`);
  assert.equal(r.status, 200);
  assert.equal(r.complete, false, 'the response is cut');
  assert.ok(r.body.length < GOOD.length, 'never the whole (corrupt) blob');
  assert.equal(reg.saw(`/blobs/${GOOD_DIGEST}`, 'GET').length, 1, 'the upstream was asked');
  assert.equal((await fetchRaw(`${d.url}/healthz`)).status, 200);
});

test('upstream 404 reaches the client as BLOB_UNKNOWN, both paths', async (t) => {
  resetRegistry();
  const d = await startDaemon(t);
  const p2p = await fetchRaw(`${d.url}/v2/library/alpine/blobs/${UNKNOWN_DIGEST}`);
  assert.equal(p2p.status, 404);
  assert.equal(errorCode(p2p), 'BLOB_UNKNOWN');
  // The authorization HEAD already learned the blob is unknown: no swarm is started for it.
  assert.equal(d.source.calls.length, 0);
  d.source.mode = 'unreachable';
  const direct = await fetchRaw(`${d.url}/v2/library/alpine/blobs/${UNKNOWN_DIGEST}`);
  assert.equal(direct.status, 404);
  assert.equal(errorCode(direct), 'BLOB_UNKNOWN');
});

test('upstream 401 reaches the client with the real WWW-Authenticate challenge', async (t) => {
  resetRegistry();
  reg.auth = 'basic';
  t.after(() => { reg.auth = 'none'; });
  const d = await startDaemon(t);
  const base = await fetchRaw(`${d.url}/v2/`);
  assert.equal(base.status, 401);
  assert.equal(base.headers['www-authenticate'], 'Basic realm="fake registry"');

  d.source.mode = { status: 401 };
  const blob = await fetchRaw(`${d.url}/v2/library/alpine/blobs/${GOOD_DIGEST}`);
  assert.equal(blob.status, 401);
  assert.equal(blob.headers['www-authenticate'], 'Basic realm="fake registry"');
  assert.equal(errorCode(blob), 'UNAUTHORIZED');

  // With the client's own credentials the pull works.
  d.source.mode = 'unreachable';
  const authed = await fetchRaw(`${d.url}/v2/library/alpine/blobs/${GOOD_DIGEST}`, { headers: { authorization: BASIC } });
  assert.equal(authed.status, 200);
  assert.ok(authed.body.equals(GOOD));
});

test('bad requests get 4xx in the registry error format, never 5xx', async (t) => {
  resetRegistry();
  const d = await startDaemon(t);
  const cases: Array<[string, number, string, string?]> = [
    ['/v2/library/../etc/manifests/latest', 400, 'NAME_INVALID'],
    ['/v2/a/%2e%2e/b/manifests/latest', 400, 'NAME_INVALID'],
    ['/v2/Library/Alpine/manifests/latest', 400, 'NAME_INVALID'],
    ['/v2/alpine/blobs/sha256:1234', 400, 'DIGEST_INVALID'],
    ['/v2/alpine/blobs/not-a-digest', 400, 'DIGEST_INVALID'],
    ['/v2/alpine/manifests/sha256:zz', 400, 'DIGEST_INVALID'],
    ['/v2/alpine/manifests/-bad-tag', 400, 'TAG_INVALID'],
    ['/v2/alpine/whatever', 404, 'UNSUPPORTED'],
    ['/', 404, 'UNSUPPORTED'],
    ['/index.html', 404, 'UNSUPPORTED'],
    ['/metrics', 405, 'UNSUPPORTED', 'POST'],
  ];
  for (const [path, status, code, method] of cases) {
    const r = await fetchRaw(d.url + path, { method });
    assert.equal(r.status, status, path);
    assert.equal(errorCode(r), code, path);
    assert.match(String(r.headers['content-type']), /application\/json/);
  }
  // A head too large for the parser: 431 in the same format, not a bare 400.
  const big = await fetchRaw(`${d.url}/v2/`, { headers: { 'x-big': 'a'.repeat(20_000) } });
  assert.equal(big.status, 431);
  assert.equal(errorCode(big), 'UNSUPPORTED');
  assert.equal(reg.seen.length, 0, 'nothing invalid reaches the upstream');
  assert.equal(d.source.calls.length, 0);
});

test('proxy rules override the default, first match wins', async (t) => {
  resetRegistry();
  const d = await startDaemon(t, {
    proxies: [
      { regx: /^\/v2\/team\/public\//, direct: false },
      { regx: /^\/v2\/team\//, direct: true },
    ],
  });
  const direct = await fetchRaw(`${d.url}/v2/team/app/blobs/${GOOD_DIGEST}`);
  assert.equal(direct.status, 200);
  assert.ok(direct.body.equals(GOOD));
  assert.equal(d.source.calls.length, 0);
  assert.equal(reg.saw(`/v2/team/app/blobs/${GOOD_DIGEST}`, 'GET').length, 1);

  const p2p = await fetchRaw(`${d.url}/v2/team/public/app/blobs/${GOOD_DIGEST}`);
  assert.ok(p2p.body.equals(GOOD));
  assert.equal(d.source.calls.length, 1);
  const other = await fetchRaw(`${d.url}/v2/other/blobs/${GOOD_DIGEST}`);
  assert.ok(other.body.equals(GOOD));
  assert.equal(d.source.calls.length, 2);
});

test('configured credentials: Basic upstream gets them, and without them the client gets 401 not 500', async (t) => {
  resetRegistry();
  reg.auth = 'basic';
  t.after(() => { reg.auth = 'none'; });
  const d = await startDaemon(t, { auth: { username: USER, password: PASS } });
  const m = await fetchRaw(`${d.url}/v2/library/alpine/manifests/latest`);
  assert.equal(m.status, 200);
  assert.equal(reg.saw('/manifests/latest')[0].headers.authorization, BASIC);
  const b = await fetchRaw(`${d.url}/v2/library/alpine/blobs/${GOOD_DIGEST}`);
  assert.equal(b.status, 200);
  assert.equal(d.source.calls[0].req.headers.authorization, BASIC, 'the P2P side gets the credentials for its source fetch');
  // A client with its own Authorization keeps it.
  await fetchRaw(`${d.url}/v2/library/alpine/manifests/latest`, { headers: { authorization: 'Bearer mine' } });
  assert.equal(reg.saw('/manifests/latest')[1].headers.authorization, 'Bearer mine');
  const metrics = await d.metrics();
  assert.ok(!metrics.includes(PASS) && !metrics.includes(BASIC.slice(6)), 'no credentials in metrics');

  const anon = await startDaemon(t);
  anon.source.mode = 'unreachable';
  const r = await fetchRaw(`${anon.url}/v2/library/alpine/manifests/latest`);
  assert.equal(r.status, 401);
  const rb = await fetchRaw(`${anon.url}/v2/library/alpine/blobs/${GOOD_DIGEST}`);
  assert.equal(rb.status, 401);
  assert.equal(errorCode(rb), 'UNAUTHORIZED');
});

test('configured credentials: a Bearer upstream gets a token fetched with them', async (t) => {
  resetRegistry();
  reg.auth = 'bearer';
  t.after(() => { reg.auth = 'none'; });
  const d = await startDaemon(t, { auth: { username: USER, password: PASS } });
  const m = await fetchRaw(`${d.url}/v2/library/alpine/manifests/latest`);
  assert.equal(m.status, 200);
  const token = reg.saw('/token');
  assert.equal(token.length, 1);
  assert.equal(token[0].headers.authorization, BASIC);
  assert.match(token[0].query, /scope=repository%3Alibrary%2Falpine%3Apull/);
  assert.match(token[0].query, /service=fake/);
  // The cached token is used from then on, for P2P too.
  const b = await fetchRaw(`${d.url}/v2/library/alpine/blobs/${GOOD_DIGEST}`);
  assert.equal(b.status, 200);
  assert.equal(d.source.calls[0].req.headers.authorization, `Bearer ${TOKEN}`);
  await fetchRaw(`${d.url}/v2/library/alpine/manifests/latest`);
  assert.equal(reg.saw('/token').length, 1);
  assert.equal(reg.saw('/manifests/latest').at(-1)?.headers.authorization, `Bearer ${TOKEN}`);

  // Wrong credentials: the client gets the registry's own 401.
  const wrong = await startDaemon(t, { auth: { username: USER, password: 'nope' } });
  const r = await fetchRaw(`${wrong.url}/v2/library/alpine/manifests/latest`);
  assert.equal(r.status, 401);
  assert.match(String(r.headers['www-authenticate']), /^Bearer realm=/);
  assert.equal(errorCode(r), 'UNAUTHORIZED');
});

test('non-GET requests pass through with their body', async (t) => {
  resetRegistry();
  const d = await startDaemon(t);
  const r = await fetchRaw(`${d.url}/v2/library/alpine/blobs/uploads/`, { method: 'POST', body: Buffer.from('hello'), headers: { 'content-type': 'application/octet-stream' } });
  assert.equal(r.status, 202);
  assert.equal(r.headers.location, '/v2/library/alpine/blobs/uploads/u-1');
  const seen = reg.saw('/blobs/uploads/', 'POST');
  assert.equal(seen.length, 1);
  assert.equal(seen[0].body.toString(), 'hello');
});

test('upstream 503: a GET or HEAD is tried again (3 tries in all, Retry-After honoured); one that lasts reaches the client; a POST is sent once', async (t) => {
  const d = await startDaemon(t);
  resetRegistry();
  reg.failNext = 2;
  reg.retryAfter = '1';
  const started = Date.now();
  const ok = await fetchRaw(`${d.url}/v2/library/alpine/manifests/latest`);
  assert.equal(ok.status, 200);
  assert.equal(reg.saw('/manifests/latest', 'GET').length, 3);
  assert.ok(Date.now() - started >= 2000, 'Retry-After: 1 was not waited for');

  resetRegistry();
  reg.failNext = 3;
  const head = await fetchRaw(`${d.url}/v2/library/alpine/manifests/latest`, { method: 'HEAD' });
  assert.equal(head.status, 503);
  assert.equal(reg.saw('/manifests/latest', 'HEAD').length, 3);
  const still = await fetchRaw(`${d.url}/v2/library/alpine/manifests/latest`);
  assert.equal(still.status, 200, 'the fault was over');

  resetRegistry();
  reg.failNext = 1;
  const post = await fetchRaw(`${d.url}/v2/library/alpine/blobs/uploads/`, { method: 'POST', body: Buffer.from('x') });
  assert.equal(post.status, 503);
  assert.equal(errorCode(post), 'UNAVAILABLE');
  assert.equal(reg.saw('/blobs/uploads/', 'POST').length, 1, 'a POST was repeated');
});

test('upstream unreachable: 502 in the registry format, no crash', async (t) => {
  const closed = createServer();
  await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
  const port = (closed.address() as AddressInfo).port;
  await new Promise((r) => closed.close(r));
  const d = await startDaemon(t, { remote: `http://127.0.0.1:${port}` });
  d.source.mode = 'unreachable';
  for (const path of ['/v2/', `/v2/library/alpine/manifests/latest`, `/v2/library/alpine/blobs/${GOOD_DIGEST}`]) {
    const r = await fetchRaw(d.url + path);
    assert.equal(r.status, 502, path);
    assert.equal(errorCode(r), 'UNKNOWN');
  }
});

test('TLS upstream: refused by default, accepted with insecure or with its CA in certs', async (t) => {
  const dir = tempDirSync('dfdaemon-tls-');
  const key = path.join(dir, 'key.pem');
  const cert = path.join(dir, 'cert.pem');
  const gen = spawnSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=127.0.0.1',
    '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', key, '-out', cert], { encoding: 'utf8' });
  if (gen.status !== 0) {
    t.skip(`openssl cannot make a test certificate: ${gen.error?.message ?? gen.stderr}`);
    return;
  }
  const tls = createHttpsServer({ key: readFileSync(key), cert: readFileSync(cert) }, (_req, res) => json(res, 200, '{}'));
  await new Promise<void>((r) => tls.listen(0, '127.0.0.1', r));
  t.after(() => { tls.closeAllConnections(); tls.close(); });
  const remote = `https://127.0.0.1:${(tls.address() as AddressInfo).port}`;

  const strict = await startDaemon(t, { remote, insecure: false });
  const refused = await fetchRaw(`${strict.url}/v2/`);
  assert.equal(refused.status, 502);
  assert.equal(errorCode(refused), 'UNKNOWN');

  const insecure = await startDaemon(t, { remote, insecure: true });
  assert.equal((await fetchRaw(`${insecure.url}/v2/`)).status, 200);

  const trusted = await startDaemon(t, { remote, insecure: false, certs: [cert] });
  assert.equal((await fetchRaw(`${trusted.url}/v2/`)).status, 200);
});

test('/metrics and /healthz, and close() is idempotent', async (t) => {
  const d = await startDaemon(t);
  const h = await fetchRaw(`${d.url}/healthz`);
  assert.equal(h.status, 200);
  const m = await fetchRaw(`${d.url}/metrics`);
  assert.equal(m.status, 200);
  assert.match(m.body.toString(), /dragonfly_dfdaemon_requests_total/);
  await Promise.all([d.server.close(), d.server.close()]);
  await d.server.close();
});
