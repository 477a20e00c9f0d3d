import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chooseEvictions, type CacheEntry, type CachePolicy } from '../../src/supernode/cache-gc';
import { STREAM_GRACE_MS, Task } from '../../src/supernode/task';
import { newRegistry, supernodeMetrics } from '../../src/common/metrics';
import { silentLogger } from '../../src/common/logger';

const H = 3_600_000;
const NOW = 100 * H;
const none: CachePolicy = { taskExpireMs: 0, maxCacheBytes: 0, minFreeBytes: 0 };
const entry = (taskId: string, bytes: number, hoursAgo: number, busy = false): CacheEntry =>
  ({ taskId, bytes, lastUsedAt: NOW - hoursAgo * H, busy });

test('no policy deletes nothing', () => {
  assert.deepEqual(chooseEvictions([entry('a', 10, 1000)], none, NOW, 0), []);
});

test('expired idle tasks go, busy or recent ones stay', () => {
  const got = chooseEvictions([entry('old', 10, 30), entry('recent', 10, 2), entry('old-busy', 10, 50, true)],
    { ...none, taskExpireMs: 24 * H }, NOW, 0);
  assert.deepEqual(got, [{ taskId: 'old', reason: 'expired', bytes: 10 }]);
});

test('over the size cap, least recently used idle tasks go until it fits', () => {
  const entries = [entry('b', 40, 3), entry('a', 40, 5), entry('c', 40, 1), entry('busy', 40, 9, true)];
  // 160 bytes held, cap 90: the busy one stays, so a (oldest idle) and b go.
  assert.deepEqual(chooseEvictions(entries, { ...none, maxCacheBytes: 90 }, NOW, 0).map((e) => [e.taskId, e.reason]),
    [['a', 'space'], ['b', 'space']]);
  assert.deepEqual(chooseEvictions(entries, { ...none, maxCacheBytes: 160 }, NOW, 0), []);
});

test('below the free-space floor, least recently used idle tasks go until it is met', () => {
  const entries = [entry('a', 40, 5), entry('b', 40, 3), entry('c', 40, 1)];
  assert.deepEqual(chooseEvictions(entries, { ...none, minFreeBytes: 100 }, NOW, 30).map((e) => e.taskId), ['a', 'b']);
  assert.deepEqual(chooseEvictions(entries, { ...none, minFreeBytes: 100 }, NOW, 100), []);
});

test('expired tasks count toward the space they free; busy tasks are never taken even if nothing else fits', () => {
  const entries = [entry('exp', 50, 30), entry('lru', 50, 2), entry('busy', 500, 40, true)];
  const got = chooseEvictions(entries, { taskExpireMs: 24 * H, maxCacheBytes: 100, minFreeBytes: 0 }, NOW, 0);
  assert.deepEqual(got.map((e) => [e.taskId, e.reason]), [['exp', 'expired'], ['lru', 'space']]);
});

test('a peer that registered and never opened its stream holds its task busy only for a grace time, then is forgotten', () => {
  const task = new Task('c'.repeat(64), '/nonexistent', {
    logger: silentLogger(), metrics: supernodeMetrics(newRegistry(false)), supernodeAddr: '127.0.0.1:1',
  });
  task.markReady(4, 4, ['a'.repeat(64)]);
  const t0 = 1_000_000;
  task.peers.set('silent', { peerId: 'silent', ip: '127.0.0.1', addr: '', complete: false, registeredAt: t0 });
  task.peers.set('holder', { peerId: 'holder', ip: '127.0.0.1', addr: '127.0.0.1:2', complete: true, registeredAt: t0 });
  assert.equal(task.busy(t0 + STREAM_GRACE_MS - 1), true, 'about to open its stream');
  task.dropSilentPeers(t0 + STREAM_GRACE_MS - 1);
  assert.deepEqual([...task.peers.keys()], ['silent', 'holder']);
  assert.equal(task.busy(t0 + STREAM_GRACE_MS), false, 'a registration without a stream past the grace is not a download');
  task.dropSilentPeers(t0 + STREAM_GRACE_MS);
  assert.deepEqual([...task.peers.keys()], ['holder'], 'a holder that finished stays');
});
