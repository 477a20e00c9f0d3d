/**
 * The supernode's cache GC with real downloads: expired and least recently
 * used tasks leave the disk, tasks in use never do, a deleted task is fetched
 * again, and files of fetches cut short are cleared at start-up.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { metricValue } from '../../src/common/metrics';
import { silentLogger } from '../../src/common/logger';
import { taskIdFor } from '../../src/common/url';
import { Supernode } from '../../src/supernode/supernode';
import { SupernodeClient } from '../../src/supernode/client';
import type { CachePolicy } from '../../src/supernode/cache-gc';
import { makeRandomFile, sha256File } from '../helpers/origin';
import { fixture, runCli, startSupernode, stderrLines, stopUploader } from '../helpers/procs';

const MiB = 1024 * 1024;
const HOUR = 3_600_000;

async function startInProcess(t: TestContext, homeDir: string, cachePolicy: CachePolicy): Promise<{ sn: Supernode; addr: string }> {
  const sn = new Supernode({
    homeDir, advertiseIp: '127.0.0.1', listenHost: '127.0.0.1', port: 0, downloadPort: 0,
    logger: silentLogger(), cachePolicy, gcIntervalMs: 0,
  });
  await sn.start();
  t.after(() => sn.close());
  return { sn, addr: `127.0.0.1:${sn.port}` };
}

const exists = (p: string) => fs.stat(p).then(() => true, () => false);

/** dfget of url into dir/out from a fresh home, whose uploader then leaves the swarm. */
async function dfgetAndLeave(home: (name: string) => string, dir: string, node: string, url: string, out: string): Promise<void> {
  const h = home(`p-${out}`);
  const r = await runCli('dfget', ['--url', url, '-o', path.join(dir, out), '--node', node, '--home', h, '--ratelimit', '500M', '--notbs']);
  assert.equal(r.code, 0, r.stderr);
  await stopUploader(h);
}

test('a cached task unused past --task-expire-time is deleted after a restart, the others stay, and it is fetched again when asked for', async (t) => {
  const { dir, origin, home } = await fixture(t, 2 * MiB, { supernode: false });
  await makeRandomFile(dir, 'g.bin', 2 * MiB);
  const snHome = path.join(dir, 'sn');
  const policy = { taskExpireMs: HOUR, maxCacheBytes: 0, minFreeBytes: 0 };
  const get = (node: string, name: string, out: string) => dfgetAndLeave(home, dir, node, origin.url(name), out);

  const s1 = await startInProcess(t, snHome, policy);
  await get(s1.addr, 'f.bin', 'f1');
  await get(s1.addr, 'g.bin', 'g1');
  assert.deepEqual(await s1.sn.collectGarbage(), [], 'tasks used a moment ago were deleted');
  await s1.sn.close();

  const fId = taskIdFor(origin.url('f.bin'), [], '');
  const fPath = path.join(snHome, 'repo', fId);
  const gPath = path.join(snHome, 'repo', taskIdFor(origin.url('g.bin'), [], ''));
  const twoHoursAgo = (Date.now() - 2 * HOUR) / 1000;
  await fs.utimes(fPath, twoHoursAgo, twoHoursAgo);

  const s2 = await startInProcess(t, snHome, policy);
  const gone = await s2.sn.collectGarbage();
  assert.deepEqual(gone.map((e) => [e.taskId, e.reason]), [[fId, 'expired']]);
  assert.equal(await exists(fPath), false, 'the expired task file is still there');
  assert.equal(await exists(gPath), true, 'the task used recently was deleted');
  const metrics = await s2.sn.register.metrics();
  assert.equal(metricValue(metrics, 'dragonfly_supernode_cache_evictions_total', { reason: 'expired' }), 1);
  assert.equal(metricValue(metrics, 'dragonfly_supernode_cache_bytes'), 2 * MiB);

  const fBefore = origin.bytesFor('f.bin');
  const gBefore = origin.bytesFor('g.bin');
  await get(s2.addr, 'f.bin', 'f2');
  await get(s2.addr, 'g.bin', 'g2');
  assert.equal(origin.bytesFor('f.bin'), fBefore + 2 * MiB, 'the deleted task was not fetched again');
  assert.equal(origin.bytesFor('g.bin'), gBefore, 'the cached task was fetched again');
  assert.equal(await sha256File(path.join(dir, 'f2')), await sha256File(path.join(dir, 'f.bin')));
});

test('over --cache-max-size the least recently used idle task goes, the recently used ones stay', async (t) => {
  const { dir, origin, home } = await fixture(t, 2 * MiB, { supernode: false });
  for (const n of ['a.bin', 'b.bin', 'c.bin']) await makeRandomFile(dir, n, 2 * MiB);
  const { sn, addr } = await startInProcess(t, path.join(dir, 'sn'), { taskExpireMs: 0, maxCacheBytes: 5 * MiB, minFreeBytes: 0 });
  const get = (name: string, out: string) => dfgetAndLeave(home, dir, addr, origin.url(name), out);
  await get('a.bin', 'a1');
  await get('b.bin', 'b1');
  await get('a.bin', 'a2'); // a is now used more recently than b
  await get('c.bin', 'c1'); // 6 MiB cached: one task must go
  await sn.collectGarbage();
  const file = (name: string) => path.join(dir, 'sn', 'repo', taskIdFor(origin.url(name), [], ''));
  assert.equal(await exists(file('b.bin')), false, 'the least recently used task is still cached');
  assert.equal(await exists(file('a.bin')), true);
  assert.equal(await exists(file('c.bin')), true);
  const metrics = await sn.register.metrics();
  assert.equal(metricValue(metrics, 'dragonfly_supernode_cache_evictions_total', { reason: 'space' }), 1);
  assert.equal(metricValue(metrics, 'dragonfly_supernode_cache_bytes'), 4 * MiB);
  assert.equal(origin.bytesFor('a.bin'), 2 * MiB, 'a cached task was fetched again');
});

test('a task a peer is still downloading is never deleted, and is once that peer has left', async (t) => {
  const { dir, origin, home, file } = await fixture(t, 2 * MiB, { supernode: false });
  // Every idle task is over this cap: it goes the moment it is idle.
  const { sn, addr } = await startInProcess(t, path.join(dir, 'sn'), { taskExpireMs: 0, maxCacheBytes: 1, minFreeBytes: 0 });
  // A peer that is not done: registered (it has not opened its stream yet, well within the grace for that).
  const client = new SupernodeClient(addr);
  t.after(() => client.close());
  const reg = await client.register({
    url: origin.url('f.bin'), headers: {}, filter: [], identifier: '', expectedDigest: '', peerId: 'slow-peer', peerIp: '127.0.0.1', peerPort: 0, hostname: 'slow',
  }, 5_000);
  const h1 = home('p1');
  const r1 = await runCli('dfget', ['--url', origin.url('f.bin'), '-o', path.join(dir, 'o1'), '--node', addr, '--home', h1, '--ratelimit', '500M', '--notbs']);
  assert.equal(r1.code, 0, r1.stderr);
  // The last piece can reach a peer a moment before the supernode has closed its fetch (and run the GC that follows).
  const deadline = Date.now() + 10_000;
  while (metricValue(await sn.register.metrics(), 'dragonfly_supernode_source_fetches_total', { result: 'success' }) < 1) {
    assert.ok(Date.now() < deadline, 'the source fetch did not finish');
    await new Promise((r) => setTimeout(r, 10));
  }
  const taskFile = path.join(dir, 'sn', 'repo', reg.taskId);
  assert.deepEqual(await sn.collectGarbage(), [], 'a task with a peer that is not done was deleted');
  assert.equal(await exists(taskFile), true);

  await client.leave('slow-peer', reg.taskId);
  const gone = await sn.collectGarbage();
  assert.deepEqual(gone.map((e) => [e.taskId, e.reason]), [[reg.taskId, 'space']]);
  assert.equal(await exists(taskFile), false);

  // The swarm is gone with it: the next download fetches from the source again and verifies.
  await stopUploader(h1);
  const h2 = home('p2');
  const r2 = await runCli('dfget', ['--url', origin.url('f.bin'), '-o', path.join(dir, 'o2'), '--node', addr, '--home', h2, '--ratelimit', '500M', '--notbs']);
  assert.equal(r2.code, 0, r2.stderr);
  assert.equal(await sha256File(path.join(dir, 'o2')), file.sha256);
  assert.equal(origin.bytesFor('f.bin'), 4 * MiB);
});

test('task files without metadata (a fetch cut short) are deleted at start-up; other files are left alone', async (t) => {
  const { dir } = await fixture(t, 1024, { supernode: false });
  const repo = path.join(dir, 'sn', 'repo');
  await fs.mkdir(repo, { recursive: true });
  const orphan = path.join(repo, 'ab'.repeat(32));
  await fs.writeFile(orphan, 'half a file');
  await fs.writeFile(path.join(repo, 'notes.txt'), 'an operator\'s file');
  await startInProcess(t, path.join(dir, 'sn'), { taskExpireMs: 0, maxCacheBytes: 0, minFreeBytes: 0 });
  assert.equal(await exists(orphan), false);
  assert.equal(await exists(path.join(repo, 'notes.txt')), true);
});

test('supernode --gc-interval runs the GC on its own; malformed GC flags are refused with a coded error', async (t) => {
  const { dir, origin, home } = await fixture(t, 1 * MiB, { supernode: false });
  const sn = await startSupernode(path.join(dir, 'sn'), ['--gc-interval', '100ms', '--task-expire-time', '1ms']);
  t.after(() => sn.stop());
  const deleted = stderrLines(sn, 'cached task deleted');
  const h = home('p');
  const r = await runCli('dfget', ['--url', origin.url('f.bin'), '-o', path.join(dir, 'o'), '--node', sn.addr, '--home', h, '--ratelimit', '500M', '--notbs']);
  assert.equal(r.code, 0, r.stderr);
  const line = JSON.parse((await deleted)[0]) as { taskId: string; reason: string };
  assert.equal(line.taskId, taskIdFor(origin.url('f.bin'), [], ''));
  assert.equal(line.reason, 'expired');

  for (const [flag, value] of [['--task-expire-time', 'soon'], ['--cache-max-size', 'lots'], ['--min-free-space', '1.5.2G'], ['--gc-interval', '5 minutes'], ['--upload-rate', 'fast'], ['--peer-down-limit', '0'], ['--peer-up-limit', 'all']]) {
    const bad = await runCli('supernode', ['--advertise-ip', '127.0.0.1', '--home-dir', path.join(dir, 'bad'), flag, value]);
    assert.equal(bad.code, 2, `${flag} ${value}: ${bad.stderr}`);
    assert.match(bad.stderr, new RegExp(`DF_ERR_INVALID_ARGUMENT: invalid ${flag}`));
  }
  const help = await runCli('supernode', ['--help']);
  for (const flag of ['--task-expire-time', '--cache-max-size', '--min-free-space', '--gc-interval', '--upload-rate', '--peer-down-limit', '--peer-up-limit']) assert.match(help.stdout, new RegExp(flag));
});
