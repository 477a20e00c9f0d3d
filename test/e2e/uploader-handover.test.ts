/**
 * A dfget serves its pieces from its own process while it downloads, and
 * hands its listening socket to a detached uploader when it is done: the
 * host keeps serving on the same port after dfget exits.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs/promises';
import * as net from 'node:net';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { spawn } from 'node:child_process';
import { metricValue } from '../../src/common/metrics';
import { silentLogger } from '../../src/common/logger';
import { uplinkLimiter } from '../../src/common/ratelimit';
import { dataFilePath, PieceUploader } from '../../src/peer/uploader';
import { ensureUploader, handOverToUploader } from '../../src/peer/uploader-launcher';
import { pidAlive, readUploaderInfo, SIDECAR_SUFFIX, type TaskSidecar } from '../../src/peer/uploader-files';
import { sha256File, tempDir } from '../helpers/origin';
import { CLI, fixture, runCli, stopUploader } from '../helpers/procs';

const KiB = 1024;
const MiB = 1024 * KiB;
const TASK = 'ab'.repeat(32);

/** One GET of a byte range on a connection of its own; resolves with the body (rejects on anything but a 206). */
function getRange(port: number, peerId: string, start: number, end: number, onFirstBytes?: () => void, task = TASK): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    socket.on('data', (d) => {
      if (chunks.length === 0) onFirstBytes?.();
      chunks.push(d);
    });
    socket.on('error', reject);
    socket.setTimeout(10_000, () => socket.destroy(new Error('no answer within 10 s')));
    socket.on('end', () => {
      const all = Buffer.concat(chunks);
      const at = all.indexOf('\r\n\r\n');
      const head = all.subarray(0, Math.max(0, at)).toString('latin1');
      if (!head.startsWith('HTTP/1.1 206')) reject(new Error(`answer: ${head.split('\r\n')[0] || '(none)'}`));
      else resolve(all.subarray(at + 4));
    });
    socket.write(`GET /pieces/${task}?peer=${peerId} HTTP/1.1\r\nHost: x\r\nRange: bytes=${start}-${end}\r\nConnection: close\r\n\r\n`);
  });
}

/** A home with one task's data file, and a piece server for it in this process. */
async function servingHome(t: TestContext, bytes: number, bytesPerSec: number) {
  const home = path.join(await tempDir('df-handover-'), 'home');
  t.after(() => stopUploader(home));
  const dataDir = path.join(home, 'data');
  await fs.mkdir(dataDir, { recursive: true });
  const peerId = 'handing-peer';
  const data = randomBytes(bytes);
  await fs.writeFile(dataFilePath(dataDir, TASK, peerId), data);
  const server = new PieceUploader({ dataDir, limiter: uplinkLimiter(bytesPerSec), logger: silentLogger() });
  const port = await server.start(0, '127.0.0.1');
  t.after(() => server.close());
  return { home, peerId, data, server, port };
}

async function waitExit(pid: number): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (pidAlive(pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
}

test('a piece server handed to an uploader finishes what it was sending, and the uploader serves the same port from then on', async (t) => {
  // 512 KiB at 256 KiB/s: about two seconds on the wire.
  const { home, peerId, data, server, port } = await servingHome(t, 1 * MiB, 256 * KiB);
  let started!: () => void;
  const sending = new Promise<void>((r) => { started = r; });
  const inFlight = getRange(port, peerId, 0, 512 * KiB - 1, started);
  await sending;
  let inFlightDone = false;
  void inFlight.then(() => { inFlightDone = true; }, () => undefined);

  let adopted = 0;
  const pid = await handOverToUploader({
    home, uploadRateBytesPerSec: 100 * MiB, aliveTimeMs: 60_000, server, adopting: (p) => { adopted = p; },
  });
  // Resolved only once the response under way was sent, in full and intact.
  assert.equal(inFlightDone, true, 'handed over before its response was sent');
  assert.deepEqual(await inFlight, data.subarray(0, 512 * KiB));
  assert.equal(adopted, pid);
  assert.notEqual(pid, process.pid);
  assert.ok(pidAlive(pid), 'the uploader is not running');
  // The home's uploader now: a dfget started next finds it.
  assert.deepEqual(await readUploaderInfo(home), { pid, port });
  assert.deepEqual(await getRange(port, peerId, 512 * KiB, MiB - 1), data.subarray(512 * KiB));
});

test('requests sent the moment a piece server was handed over wait for the starting uploader, and each is answered', async (t) => {
  const { home, peerId, data, server, port } = await servingHome(t, 1 * MiB, 100 * MiB);
  // Nothing under way: this resolves as soon as the socket went, with the uploader still starting.
  const pid = await handOverToUploader({ home, uploadRateBytesPerSec: 100 * MiB, aliveTimeMs: 60_000, server, adopting: () => undefined });
  assert.ok(pidAlive(pid));
  // None is lost to a connection the socket took before the uploader served it.
  const answers = await Promise.all(Array.from({ length: 16 }, (_, i) => getRange(port, peerId, i * 64 * KiB, (i + 1) * 64 * KiB - 1)));
  answers.forEach((b, i) => assert.deepEqual(b, data.subarray(i * 64 * KiB, (i + 1) * 64 * KiB), `range ${i}`));
});

test('a piece server handed over while another uploader owns the home is served beside it, and the home stays the other\'s', async (t) => {
  const { home, peerId, data, server, port } = await servingHome(t, 256 * KiB, 100 * MiB);
  const owner = await ensureUploader({ home, uploadRateBytesPerSec: 100 * MiB, aliveTimeMs: 60_000 });
  const pid = await handOverToUploader({ home, uploadRateBytesPerSec: 100 * MiB, aliveTimeMs: 60_000, server, adopting: () => undefined });
  t.after(() => { if (pidAlive(pid)) process.kill(pid, 'SIGTERM'); return waitExit(pid); });
  assert.notEqual(pid, owner.pid);
  assert.deepEqual(await getRange(port, peerId, 1000, 1999), data.subarray(1000, 2000));
  assert.equal((await readUploaderInfo(home))?.pid, owner.pid);
  assert.equal(Number(await fs.readFile(path.join(home, 'uploader.lock'), 'utf8')), owner.pid);
});

test('dfget serves its pieces from its own process while it downloads, and from its uploader after it exited', async (t) => {
  const { dir, file, origin, sn, home } = await fixture(t, 4 * MiB);
  // The supernode fetches the file first, so both peers are sent to peers first.
  const warm = await runCli('dfget', ['--url', origin.url('f.bin'), '-o', path.join(dir, 'warm.out'), '--node', sn.addr, '--home', home('warm'), '--ratelimit', '500M', '--notbs']);
  assert.equal(warm.code, 0, warm.stderr);
  await stopUploader(home('warm'));

  // A slow download: 4 MiB at 1 MiB/s.
  const slowHome = home('slow');
  const slow = spawn(process.execPath, [CLI('dfget'), '--url', origin.url('f.bin'), '-o', path.join(dir, 'slow.out'),
    '--node', sn.addr, '--home', slowHome, '--ratelimit', '1M', '--notbs'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let slowErr = '';
  slow.stderr!.on('data', (d) => { slowErr += String(d); });
  const slowExit = new Promise<number | null>((r) => slow.once('exit', (code) => r(code)));
  t.after(() => { slow.kill(); });

  // Its task's sidecar names the process that serves the pieces: dfget itself.
  const dataDir = path.join(slowHome, 'data');
  let side: TaskSidecar | undefined;
  const deadline = Date.now() + 20_000;
  while (!side) {
    assert.ok(Date.now() < deadline, `the slow download never registered: ${slowErr}`);
    const name = (await fs.readdir(dataDir).catch(() => [] as string[])).find((n) => n.endsWith(SIDECAR_SUFFIX));
    if (name) side = JSON.parse(await fs.readFile(path.join(dataDir, name), 'utf8').catch(() => 'null')) ?? undefined;
    if (!side) await new Promise((r) => setTimeout(r, 20));
  }
  assert.equal(side.uploaderPid, slow.pid);

  const before = metricValue(await sn.metrics(), 'dragonfly_supernode_pieces_scheduled_total', { holder: 'peer' });
  const fast = await runCli('dfget', ['--url', origin.url('f.bin'), '-o', path.join(dir, 'fast.out'), '--node', sn.addr, '--home', home('fast'), '--ratelimit', '500M', '--notbs']);
  assert.equal(fast.code, 0, fast.stderr);
  assert.equal(await sha256File(path.join(dir, 'fast.out')), file.sha256);
  // The only other peer was still downloading, with no uploader running: those pieces came from dfget's own process.
  assert.equal(slow.exitCode, null, 'the slow download was over before the other one');
  assert.equal(await readUploaderInfo(slowHome), undefined);
  const fromPeers = metricValue(await sn.metrics(), 'dragonfly_supernode_pieces_scheduled_total', { holder: 'peer' }) - before;
  assert.ok(fromPeers > 0, 'no piece came from the downloading peer');

  assert.equal(await slowExit, 0, slowErr);
  assert.equal(await sha256File(path.join(dir, 'slow.out')), file.sha256);
  const up = await readUploaderInfo(slowHome);
  assert.ok(up && up.pid !== slow.pid && pidAlive(up.pid), 'no uploader took over');
  const sidecar = JSON.parse(await fs.readFile(path.join(dataDir, `${side.taskId}.${side.peerId}${SIDECAR_SUFFIX}`), 'utf8')) as TaskSidecar;
  assert.equal(sidecar.uploaderPid, up.pid);
  // On the port the supernode knows this peer by (the one dfget served on).
  const original = await fs.readFile(file.path);
  assert.deepEqual(await getRange(up.port, side.peerId, MiB, 2 * MiB - 1, undefined, side.taskId), original.subarray(MiB, 2 * MiB));
});
