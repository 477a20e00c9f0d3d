/**
 * The P2P core with real processes and sockets: an origin that counts bytes,
 * a supernode, and dfget peers.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import * as http from 'node:http';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import * as net from 'node:net';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { sendFileRange } from '../../src/common/file-server';
import { metricValue } from '../../src/common/metrics';
import { silentLogger } from '../../src/common/logger';
import { P2PDownload } from '../../src/peer/downloader';
import { ensureUploader } from '../../src/peer/uploader-launcher';
import { pidAlive, readUploaderInfo } from '../../src/peer/uploader-files';
import { SupernodeClient } from '../../src/supernode/client';
import { DEFAULT_SCHEDULER_OPTIONS } from '../../src/supernode/scheduler';
import { sha256File, tempDir } from '../helpers/origin';
import { fixture, runCli, startSupernode, stderrLines, stopUploader } from '../helpers/procs';

const MiB = 1024 * 1024;

/** Downloads url once so the supernode holds it, then lets that peer leave. */
async function warmSupernode(dir: string, url: string, node: string, home: string): Promise<void> {
  const w = await runCli('dfget', ['--url', url, '-o', path.join(dir, 'warm.out'), '--node', node, '--home', home, '--ratelimit', '500M', '--notbs']);
  assert.equal(w.code, 0, w.stderr);
  await stopUploader(home);
}

/** Registers peerId for url on port peerPort and tells the supernode it holds every piece. */
async function claimEveryPiece(t: TestContext, node: string, url: string, peerId: string, peerPort: number) {
  const client = new SupernodeClient(node);
  t.after(() => client.close());
  const reg = await client.register({
    url, headers: {}, filter: [], identifier: '', expectedDigest: '', peerId, peerIp: '127.0.0.1', peerPort, hostname: peerId,
  }, 5_000);
  const call = client.pieces();
  t.after(() => call.cancel());
  call.on('error', () => undefined);
  const firstUpdate = new Promise((r) => call.once('data', r));
  call.write({ hello: { taskId: reg.taskId, peerId, have: Array.from({ length: reg.pieceCount }, (_, i) => i) } });
  await firstUpdate;
  return { reg, call };
}

/** A piece server for filePath on 127.0.0.1 that records the Range of every request it gets. */
async function servePieces(t: TestContext, filePath: string, size: number): Promise<{ asked: string[]; port: number }> {
  const asked: string[] = [];
  const server = http.createServer((req, res) => {
    asked.push(String(req.headers.range));
    const m = /bytes=(\d+)-(\d+)/.exec(String(req.headers.range));
    if (!m) { res.writeHead(400).end(); return; }
    sendFileRange(res, filePath, Number(m[1]), Number(m[2]), size).catch(() => res.destroy());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  t.after(() => new Promise<void>((r) => { server.closeAllConnections(); server.close(() => r()); }));
  return { asked, port: (server.address() as AddressInfo).port };
}

test('6 peers share one 64 MiB file: every copy verifies, the origin sends it about once, pieces move peer to peer', async (t) => {
  const { dir, file, origin, sn, home } = await fixture(t, 64 * MiB);
  const homes = Array.from({ length: 6 }, (_, i) => home(`peer${i}`));
  const results = await Promise.all(homes.map((home, i) => runCli('dfget', [
    '--url', origin.url('f.bin'), '-o', path.join(dir, `out${i}`), '--node', sn.addr,
    '--home', home, '--ratelimit', '500M', '--alivetime', '1m', '--notbs',
  ])));
  for (const r of results) assert.equal(r.code, 0, r.stderr);
  for (let i = 0; i < 6; i++) assert.equal(await sha256File(path.join(dir, `out${i}`)), file.sha256);

  assert.ok(origin.bytesSent() <= 1.05 * 64 * MiB, `origin sent ${origin.bytesSent()} bytes`);
  const m = await sn.metrics();
  const fromPeers = metricValue(m, 'dragonfly_supernode_pieces_scheduled_total', { holder: 'peer' });
  const fromSupernode = metricValue(m, 'dragonfly_supernode_pieces_scheduled_total', { holder: 'supernode' });
  assert.ok(fromPeers > 0, `no piece moved peer to peer (supernode served ${fromSupernode})`);
  assert.equal(metricValue(m, 'dragonfly_supernode_source_bytes_total'), 64 * MiB);
});

test('a peer that serves corrupt bytes is avoided and the file is still correct', async (t) => {
  const { dir, file, origin, sn, home: peerHome } = await fixture(t, 16 * MiB);

  // Warm the supernode's cache with a first download, then let that peer leave.
  await warmSupernode(dir, origin.url('f.bin'), sn.addr, peerHome('warm'));

  // A peer that claims every piece and answers with random bytes.
  const evilRequests: string[] = [];
  const evil = http.createServer((req, res) => {
    evilRequests.push(String(req.headers.range));
    const m = /bytes=(\d+)-(\d+)/.exec(String(req.headers.range));
    const len = m ? Number(m[2]) - Number(m[1]) + 1 : 0;
    res.writeHead(206, { 'Content-Length': String(len) });
    res.end(randomBytes(len));
  });
  await new Promise<void>((r) => evil.listen(0, '127.0.0.1', () => r()));
  t.after(() => new Promise<void>((r) => { evil.closeAllConnections(); evil.close(() => r()); }));
  const { reg } = await claimEveryPiece(t, sn.addr, origin.url('f.bin'), 'evil-peer', (evil.address() as AddressInfo).port);
  assert.ok(reg.pieceCount > 8);

  const home = peerHome('victim');
  const r = await runCli('dfget', ['--url', origin.url('f.bin'), '-o', path.join(dir, 'out'), '--node', sn.addr, '--home', home, '--ratelimit', '500M', '--notbs']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(await sha256File(path.join(dir, 'out')), file.sha256);
  // Peers are preferred to the supernode, so the evil peer was asked; after its
  // first corrupt piece it is avoided: at most the pieces already in flight.
  assert.ok(evilRequests.length >= 1, 'the corrupt peer was never asked');
  const round = Math.min(DEFAULT_SCHEDULER_OPTIONS.maxInFlightPerPeer, DEFAULT_SCHEDULER_OPTIONS.maxUploadsPerHolder);
  assert.ok(reg.pieceCount > 4 * round, 'too few pieces for the test to tell avoidance apart');
  assert.ok(evilRequests.length <= round, `the corrupt peer was asked ${evilRequests.length} times`);
  const m = await sn.metrics();
  assert.ok(metricValue(m, 'dragonfly_supernode_piece_results_total', { holder: 'peer', result: 'failure' }) >= 1);
  assert.equal(origin.bytesFor('f.bin'), 16 * MiB);
});

test('a supernode restarted between two downloads serves the second from its disk cache', async (t) => {
  const { dir, file, origin, home } = await fixture(t, 8 * MiB, { supernode: false });
  const snHome = path.join(dir, 'sn');

  const sn1 = await startSupernode(snHome);
  const h1 = home('p1');
  const r1 = await runCli('dfget', ['--url', origin.url('f.bin'), '-o', path.join(dir, 'o1'), '--node', sn1.addr, '--home', h1, '--ratelimit', '500M', '--notbs']);
  assert.equal(r1.code, 0, r1.stderr);
  await sn1.stop();
  await stopUploader(h1);

  const sn2 = await startSupernode(snHome);
  t.after(() => sn2.stop());
  const h2 = home('p2');
  const r2 = await runCli('dfget', ['--url', origin.url('f.bin'), '-o', path.join(dir, 'o2'), '--node', sn2.addr, '--home', h2, '--ratelimit', '500M', '--notbs']);
  assert.equal(r2.code, 0, r2.stderr);
  assert.equal(await sha256File(path.join(dir, 'o2')), file.sha256);
  assert.equal(origin.bytesSent(), 8 * MiB, 'the origin sent the file more than once');
  assert.equal(metricValue(await sn2.metrics(), 'dragonfly_supernode_source_bytes_total'), 0);
});

test('--md5 over P2P: a wrong one leaves no FILE; with the right one FILE is a link to the piece file the uploader serves', async (t) => {
  const { dir, file, origin, sn, home } = await fixture(t, 4 * MiB);
  const md5 = createHash('md5').update(await fs.readFile(file.path)).digest('hex');
  const h = home('p');
  const args = (out: string, sum: string) => ['--url', origin.url('f.bin'), '-o', path.join(dir, out), '--node', sn.addr, '--home', h, '--ratelimit', '500M', '--notbs', '--md5', sum];

  const bad = await runCli('dfget', args('bad', '0'.repeat(32)));
  assert.equal(bad.code, 5, bad.stderr);
  assert.match(bad.stderr, /DF_ERR_DIGEST_MISMATCH: downloaded file has md5 [0-9a-f]{32}, expected 0{32}/);
  assert.deepEqual((await fs.readdir(dir)).filter((f) => f.includes('bad')), []);

  const good = await runCli('dfget', args('good', md5));
  assert.equal(good.code, 0, good.stderr);
  assert.equal(await sha256File(path.join(dir, 'good')), file.sha256);
  const served = (await fs.readdir(path.join(h, 'data'))).filter((f) => !f.endsWith('.json'));
  assert.equal(served.length, 1, served.join(', '));
  assert.equal((await fs.stat(path.join(dir, 'good'))).ino, (await fs.stat(path.join(h, 'data', served[0]))).ino);
});

test('a download longer than --alivetime keeps its uploader, and so its place in the swarm', async (t) => {
  const { dir, file, origin, sn, home: peerHome } = await fixture(t, 6 * MiB);
  const home = peerHome('home');
  // 6 MiB at 2 MiB/s: about 3 s, three times the alive time.
  const r = await runCli('dfget', ['--url', origin.url('f.bin'), '-o', path.join(dir, 'out'), '--node', sn.addr, '--home', home,
    '--ratelimit', '2M', '--alivetime', '1s', '--notbs']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(await sha256File(path.join(dir, 'out')), file.sha256);
});

/** One fast peer downloads a file of `size` bytes from a fresh supernode started with snArgs; resolves with how long it took, once verified. */
async function timeOnePeer(t: TestContext, size: number, snArgs: string[]): Promise<number> {
  const { dir, file, origin } = await fixture(t, size, { supernode: false });
  const sn = await startSupernode(path.join(dir, 'sn'), snArgs);
  t.after(() => sn.stop());
  const home = path.join(dir, 'home');
  t.after(() => stopUploader(home));
  const r = await runCli('dfget', ['--url', origin.url('f.bin'), '-o', path.join(dir, 'out'), '--node', sn.addr, '--home', home,
    '--ratelimit', '500M', '--notbs']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(await sha256File(path.join(dir, 'out')), file.sha256);
  return r.ms;
}

test('--max-bandwidth caps what the supernode pulls from the source', async (t) => {
  // The peer may go at 500 MiB/s; the source fetch behind it may not: 8 MiB at 4 MiB/s is 2 s.
  const ms = await timeOnePeer(t, 8 * MiB, ['--max-bandwidth', '4M']);
  assert.ok(ms >= 1800, `the source fetch was not capped: ${ms} ms`);
});

test('--upload-rate caps what the supernode sends to peers, not what it pulls', async (t) => {
  // The only peer gets every piece from the supernode: 4 MiB at 2 MiB/s, less
  // one burst, is at least 1.9 s, however fast the source is.
  const ms = await timeOnePeer(t, 4 * MiB, ['--upload-rate', '2M']);
  assert.ok(ms >= 1900, `the uploads were not capped: ${ms} ms`);
});

/** Most pieces a dfget had in flight at once, from its --verbose 'piece done' lines (each with its end time and duration). */
function maxPiecesInFlight(stderr: string): { pieces: number; max: number } {
  const edges: [number, number][] = [];
  for (const line of stderr.split('\n')) {
    if (!line.startsWith('{')) continue;
    const rec = JSON.parse(line) as { msg?: string; time: number; ms: number };
    if (rec.msg !== 'piece done') continue;
    edges.push([rec.time - rec.ms, 1], [rec.time, -1]);
  }
  // An end and a start at the same millisecond do not overlap: ends first.
  edges.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  let now = 0;
  let max = 0;
  for (const [, d] of edges) max = Math.max(max, now += d);
  return { pieces: edges.length / 2, max };
}

test('--peer-down-limit caps the pieces a peer fetches at once', async (t) => {
  const { dir, file, origin } = await fixture(t, 1 * MiB, { supernode: false });
  for (const limit of [1, 3]) {
    const sn = await startSupernode(path.join(dir, `sn${limit}`), ['--piece-size', '64K', '--peer-down-limit', String(limit)]);
    t.after(() => sn.stop());
    // With every piece already there, the first assignments fill all the slots at once.
    await warmSupernode(dir, origin.url('f.bin'), sn.addr, path.join(dir, `warm${limit}`));
    const home = path.join(dir, `home${limit}`);
    t.after(() => stopUploader(home));
    const out = path.join(dir, `out${limit}`);
    const r = await runCli('dfget', ['--url', origin.url('f.bin'), '-o', out, '--node', sn.addr, '--home', home, '--ratelimit', '500M', '--notbs', '--verbose']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(await sha256File(out), file.sha256);
    assert.deepEqual(maxPiecesInFlight(r.stderr), { pieces: 16, max: limit });
  }
});

test('a peer that registered before its piece server was up is asked for pieces only once it sends its port', async (t) => {
  const { dir, file, origin, sn, home: peerHome } = await fixture(t, 8 * MiB);
  await warmSupernode(dir, origin.url('f.bin'), sn.addr, peerHome('warm'));

  // A peer holding every piece, whose piece server serves the real bytes.
  const { asked, port } = await servePieces(t, file.path, 8 * MiB);
  const { call } = await claimEveryPiece(t, sn.addr, origin.url('f.bin'), 'late-server', 0);
  const status = new Promise<{ code: number; details: string }>((r) => call.once('status', r));

  // Not serving yet: a download gets everything elsewhere.
  const first = await runCli('dfget', ['--url', origin.url('f.bin'), '-o', path.join(dir, 'a.out'), '--node', sn.addr, '--home', peerHome('a'), '--ratelimit', '500M', '--notbs']);
  assert.equal(first.code, 0, first.stderr);
  assert.equal(await sha256File(path.join(dir, 'a.out')), file.sha256);
  assert.deepEqual(asked, [], 'a peer with no port was asked for pieces');

  // Serving now: the next download is sent to it (peers first).
  call.write({ serving: { peerPort: port } });
  const second = await runCli('dfget', ['--url', origin.url('f.bin'), '-o', path.join(dir, 'b.out'), '--node', sn.addr, '--home', peerHome('b'), '--ratelimit', '500M', '--notbs']);
  assert.equal(second.code, 0, second.stderr);
  assert.equal(await sha256File(path.join(dir, 'b.out')), file.sha256);
  assert.ok(asked.length >= 1, 'the peer was never asked after it sent its port');

  // A port out of range ends the stream with INVALID_ARGUMENT.
  call.write({ serving: { peerPort: 70000 } });
  const st = await status;
  assert.equal(st.code, 3);
  assert.match(st.details, /serving.peer_port/);
  assert.equal(origin.bytesFor('f.bin'), 8 * MiB);
});

test('a download done before its piece server is up keeps its stream open until it sent the port, so the host is asked afterwards', async (t) => {
  const { dir, file, origin, sn, home: peerHome } = await fixture(t, 1 * MiB);
  await warmSupernode(dir, origin.url('f.bin'), sn.addr, peerHome('warm'));

  const { asked, port } = await servePieces(t, file.path, 1 * MiB);

  const d = new P2PDownload({
    nodes: [sn.addr], url: origin.url('f.bin'), headers: {}, filter: [], identifier: '', expectedDigest: '',
    peerId: 'slow-server', uploadPort: 0, dataPath: (taskId) => path.join(dir, `slow-${taskId}`),
    logger: silentLogger(), connectTimeoutMs: 5_000,
  });
  let pieces = 0;
  let allPieces!: () => void;
  const gotAll = new Promise<void>((r) => { allPieces = r; });
  d.on('piece', () => { if (++pieces === d.pieceCount) allPieces(); });
  let settled = false;
  const run = d.run().finally(() => { settled = true; });
  // Every piece is in, the server is not up yet: the download is not over.
  await gotAll;
  await new Promise<void>((r) => setImmediate(r));
  assert.equal(settled, false, 'the download ended before its port went out');
  d.serving(port);
  const r = await run;
  assert.equal(await sha256File(r.dataPath), file.sha256);

  // The supernode now sends the next peer to it (peers first).
  const next = await runCli('dfget', ['--url', origin.url('f.bin'), '-o', path.join(dir, 'next.out'), '--node', sn.addr, '--home', peerHome('next'), '--ratelimit', '500M', '--notbs']);
  assert.equal(next.code, 0, next.stderr);
  assert.equal(await sha256File(path.join(dir, 'next.out')), file.sha256);
  assert.ok(asked.length >= 1, 'the host was never asked for a piece after it sent its port');
});

test('an uploader whose home was removed under it leaves the next uploader\'s files alone when it exits', async (t) => {
  const home = path.join(await tempDir('df-up-'), 'home');
  const first = await ensureUploader({ home, uploadRateBytesPerSec: 1024 * 1024, aliveTimeMs: 300 });
  await fs.rm(home, { recursive: true, force: true });
  const second = await ensureUploader({ home, uploadRateBytesPerSec: 1024 * 1024, aliveTimeMs: 60_000 });
  t.after(() => stopUploader(home));
  assert.notEqual(second.pid, first.pid);
  // The first is a detached process of its own: there is no exit event to wait on.
  const deadline = Date.now() + 10_000;
  while (pidAlive(first.pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  assert.equal(pidAlive(first.pid), false, 'the first uploader did not exit after its alive time');
  assert.equal((await readUploaderInfo(home))?.pid, second.pid);
  assert.equal(Number(await fs.readFile(path.join(home, 'uploader.lock'), 'utf8')), second.pid);
});

test('an uploader that died without leaving is taken out of the swarm by the next uploader of its home, which removes its pieces', async (t) => {
  const { dir, file, origin, sn, home: peerHome } = await fixture(t, 2 * MiB);
  const home = peerHome('crashed');
  const args = (out: string, h: string) => ['--url', origin.url('f.bin'), '-o', path.join(dir, out), '--node', sn.addr, '--home', h, '--ratelimit', '500M', '--notbs'];
  const first = await runCli('dfget', args('first.out', home));
  assert.equal(first.code, 0, first.stderr);
  const info = await readUploaderInfo(home);
  assert.ok(info, 'no uploader after the first download');
  process.kill(info.pid, 'SIGKILL');
  // Detached, not our child: there is no exit event to wait on.
  const deadline = Date.now() + 10_000;
  while (pidAlive(info.pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  const dataDir = path.join(home, 'data');
  assert.equal((await fs.readdir(dataDir)).length, 2, 'the piece file and its sidecar should outlive the killed uploader');

  // The new uploader answers once the supernode was told and the files are gone.
  await ensureUploader({ home, uploadRateBytesPerSec: 0, aliveTimeMs: 60_000 });
  assert.deepEqual(await fs.readdir(dataDir), []);
  // Nobody is sent to the dead peer's port any more.
  const second = await runCli('dfget', args('second.out', peerHome('second')));
  assert.equal(second.code, 0, second.stderr);
  assert.equal(await sha256File(path.join(dir, 'second.out')), file.sha256);
  assert.equal(metricValue(await sn.metrics(), 'dragonfly_supernode_piece_results_total', { holder: 'peer', result: 'failure' }), 0);
});

test('a stream opened just after its task failed is told why the task failed, not that it is unknown', async (t) => {
  const { origin, sn } = await fixture(t, 300_000);
  const client = new SupernodeClient(sn.addr);
  t.after(() => client.close());
  const peerId = 'late-peer';
  const reg = await client.register({
    url: origin.url('f.bin'), headers: {}, filter: [], identifier: '', expectedDigest: `sha256:${'0'.repeat(64)}`,
    peerId, peerIp: '127.0.0.1', peerPort: 1, hostname: peerId,
  }, 5_000);
  // The whole file has come and failed its digest before the stream opens.
  await stderrLines(sn, '"msg":"task failed"', 1, 10_000);
  const call = client.pieces();
  t.after(() => call.cancel());
  call.on('error', () => undefined);
  const status = new Promise<{ code: number; details: string }>((r) => call.once('status', r));
  call.write({ hello: { taskId: reg.taskId, peerId, have: [] } });
  assert.match((await status).details, /^DF_ERR_DIGEST_MISMATCH/);
});

test('a download that cannot write its data file fails with DF_ERR_OUTPUT_PATH and blames no holder', async (t) => {
  const { dir, origin, sn, home: peerHome } = await fixture(t, 1 * MiB);
  await warmSupernode(dir, origin.url('f.bin'), sn.addr, peerHome('warm'));
  const failuresBefore = metricValue(await sn.metrics(), 'dragonfly_supernode_piece_results_total', { holder: 'supernode', result: 'failure' });

  // Every write to /dev/full fails with ENOSPC, as on a full disk.
  const d = new P2PDownload({
    nodes: [sn.addr], url: origin.url('f.bin'), headers: {}, filter: [], identifier: '', expectedDigest: '',
    peerId: 'disk-full', uploadPort: 0, dataPath: () => '/dev/full', logger: silentLogger(), connectTimeoutMs: 5_000,
  });
  d.notServing();
  await assert.rejects(d.run(), (err: Error & { code?: string }) => {
    assert.equal(err.code, 'DF_ERR_OUTPUT_PATH');
    assert.match(err.message, /\/dev\/full.*ENOSPC/);
    return true;
  });
  assert.equal(d.held.size, 0);
  const failuresAfter = metricValue(await sn.metrics(), 'dragonfly_supernode_piece_results_total', { holder: 'supernode', result: 'failure' });
  assert.equal(failuresAfter, failuresBefore, 'the supernode was blamed for a local write failure');
});

test('the supernode\'s download port answers 400 to a request target it cannot parse', async (t) => {
  const { sn } = await fixture(t, 1024);
  for (const target of ['http://[::1', 'http://a:99999/pieces/x', 'http://%zz/']) {
    const s = net.connect(sn.downloadPort, '127.0.0.1');
    t.after(() => s.destroy());
    await once(s, 'connect');
    s.write(`GET ${target} HTTP/1.1\r\nHost: x\r\n\r\n`);
    const [first] = await once(s, 'data') as [Buffer];
    assert.match(first.toString('latin1'), /^HTTP\/1\.1 400 /, target);
  }
});

test('registering again under a peer id whose stream is open is refused, and that stream goes on', { timeout: 30_000 }, async (t) => {
  const { origin, sn } = await fixture(t, 1 * MiB);
  const client = new SupernodeClient(sn.addr);
  t.after(() => client.close());
  const req = {
    url: origin.url('f.bin'), headers: {}, filter: [], identifier: '', expectedDigest: '',
    peerId: 'twice', peerIp: '127.0.0.1', peerPort: 0, hostname: 'twice',
  };
  const reg = await client.register(req, 5_000);
  const call = client.pieces();
  t.after(() => call.cancel());
  call.on('error', () => undefined);
  const first = new Promise((r) => call.once('data', r));
  call.write({ hello: { taskId: reg.taskId, peerId: 'twice', have: [] } });
  await first;
  await assert.rejects(client.register(req, 5_000), (e: Error & { code?: string }) => e.code === 'DF_ERR_INVALID_ARGUMENT' && /stream open/.test(e.message));
  assert.equal(metricValue(await sn.metrics(), 'dragonfly_supernode_peers'), 1, 'the open stream is still the peer\'s');
});
