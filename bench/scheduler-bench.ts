/**
 * Scheduler throughput, no sockets: N peers fetch an M-piece task the
 * supernode already holds entirely, until every peer is complete. Prints
 * assignments/second, the process RSS after registering the peers, and a JSON
 * line with all results at the end.
 *
 *   --mode rounds (default): schedule(), then report success for every
 *     returned assignment in a shuffled order, repeat.
 *   --mode events: one result at a time, a random one of those in flight,
 *     with a schedule() after each (how a live supernode drives it).
 *
 *   node dist/bench/scheduler-bench.js [--peers 1000] [--pieces 1000]
 *     [--mode rounds|events] [--inflight 4] [--uploads 4]
 *     [--supernode-uploads 16] [--seed 1]
 */
import { TaskScheduler, Assignment } from '../src/supernode/scheduler';
import { SUPERNODE_HOLDER_ID } from '../src/common/constants';

function flag(name: string, def: number): number {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0) return def;
  const v = Number(process.argv[i + 1]);
  if (!Number.isInteger(v) || v < 1) {
    process.stderr.write(`--${name} needs a positive integer\n`);
    process.exit(2);
  }
  return v;
}

/** xorshift32: a deterministic shuffle so runs are comparable. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
}

function modeFlag(): 'rounds' | 'events' {
  const i = process.argv.indexOf('--mode');
  const v = i < 0 ? 'rounds' : process.argv[i + 1];
  if (v !== 'rounds' && v !== 'events') {
    process.stderr.write('--mode is rounds or events\n');
    process.exit(2);
  }
  return v;
}

const mb = (n: number): number => Math.round((n / 1024 / 1024) * 10) / 10;

function main(): void {
  const peers = flag('peers', 1000);
  const pieces = flag('pieces', 1000);
  const seed = flag('seed', 1);
  const mode = modeFlag();
  const sched = new TaskScheduler({
    maxInFlightPerPeer: flag('inflight', 4),
    maxUploadsPerHolder: flag('uploads', 4),
    maxUploadsSupernode: flag('supernode-uploads', 16),
  });
  const rand = rng(seed);
  const rssStartBytes = process.memoryUsage().rss;

  const t0 = process.hrtime.bigint();
  sched.setPieceCount(pieces);
  for (let p = 0; p < pieces; p++) sched.supernodeHas(p);
  const ids: string[] = [];
  for (let i = 0; i < peers; i++) {
    const id = `peer-${i}`;
    ids.push(id);
    sched.addPeer(id);
  }
  const setupMs = Number(process.hrtime.bigint() - t0) / 1e6;
  const memAfterPeers = process.memoryUsage();
  const rssAfterPeersBytes = memAfterPeers.rss;

  let assignments = 0;
  let fromPeers = 0;
  let rounds = 0;
  let scheduleCalls = 0;
  let scheduleNs = 0n;
  let resultNs = 0n;
  let maxBatch = 0;
  const count = (batch: Assignment[]): void => {
    assignments += batch.length;
    if (batch.length > maxBatch) maxBatch = batch.length;
    for (const x of batch) if (x.holder !== SUPERNODE_HOLDER_ID) fromPeers++;
  };
  const t1 = process.hrtime.bigint();
  if (mode === 'rounds') {
    for (;;) {
      const a = process.hrtime.bigint();
      const batch: Assignment[] = sched.schedule();
      scheduleNs += process.hrtime.bigint() - a;
      scheduleCalls++;
      if (batch.length === 0) break;
      rounds++;
      count(batch);
      // Fisher-Yates, outside the timed parts.
      for (let i = batch.length - 1; i > 0; i--) {
        const j = rand() % (i + 1);
        const t = batch[i];
        batch[i] = batch[j];
        batch[j] = t;
      }
      const c = process.hrtime.bigint();
      for (const x of batch) sched.onResult(x.requester, x.piece, x.holder, true);
      resultNs += process.hrtime.bigint() - c;
    }
  } else {
    const inflight: Assignment[] = sched.schedule();
    scheduleCalls++;
    count(inflight);
    while (inflight.length > 0) {
      const j = rand() % inflight.length;
      const x = inflight[j];
      inflight[j] = inflight[inflight.length - 1];
      inflight.pop();
      const a = process.hrtime.bigint();
      sched.onResult(x.requester, x.piece, x.holder, true);
      const b = process.hrtime.bigint();
      const batch = sched.schedule();
      scheduleNs += process.hrtime.bigint() - b;
      resultNs += b - a;
      scheduleCalls++;
      count(batch);
      for (const y of batch) inflight.push(y);
    }
    rounds = scheduleCalls;
  }
  const wallMs = Number(process.hrtime.bigint() - t1) / 1e6;
  const schedMs = Number(scheduleNs) / 1e6;
  const resMs = Number(resultNs) / 1e6;
  const busyMs = schedMs + resMs;

  let complete = 0;
  for (const id of ids) if (sched.isComplete(id)) complete++;
  const expected = peers * pieces;
  const ok = complete === peers && assignments === expected;

  const result = {
    bench: 'scheduler',
    peers,
    pieces,
    mode,
    options: sched.options,
    ok,
    completePeers: complete,
    assignments,
    expectedAssignments: expected,
    fromPeers,
    fromSupernode: assignments - fromPeers,
    p2pRatio: Math.round((fromPeers / Math.max(1, assignments)) * 10000) / 10000,
    rounds,
    scheduleCalls,
    usPerScheduleCall: Math.round((schedMs * 1000 * 100) / scheduleCalls) / 100,
    maxBatch,
    setupMs: Math.round(setupMs * 10) / 10,
    scheduleMs: Math.round(schedMs),
    onResultMs: Math.round(resMs),
    wallMs: Math.round(wallMs),
    /** Assignments per second of scheduler time (schedule() + onResult()). */
    assignmentsPerSec: Math.round(assignments / (busyMs / 1000)),
    /** Same, over the whole loop including the bench's own shuffling. */
    assignmentsPerSecWall: Math.round(assignments / (wallMs / 1000)),
    rssStartMB: mb(rssStartBytes),
    rssAfterPeersMB: mb(rssAfterPeersBytes),
    heapUsedAfterPeersMB: mb(memAfterPeers.heapUsed),
    arrayBuffersAfterPeersMB: mb(memAfterPeers.arrayBuffers),
    rssEndMB: mb(process.memoryUsage().rss),
  };
  process.stdout.write(
    `scheduler bench (${mode}): ${peers} peers x ${pieces} pieces\n` +
      `  rss after registering peers: ${result.rssAfterPeersMB} MB (at start ${result.rssStartMB} MB; ` +
      `heap used ${result.heapUsedAfterPeersMB} MB, typed arrays ${result.arrayBuffersAfterPeersMB} MB)\n` +
      `  ${assignments} assignments, ${fromPeers} peer-to-peer (${(result.p2pRatio * 100).toFixed(2)}%), ` +
      `${scheduleCalls} schedule() calls${mode === 'rounds' ? ` (${rounds} rounds)` : ''}\n` +
      `  schedule() ${result.scheduleMs} ms (${result.usPerScheduleCall} us/call), onResult() ${result.onResultMs} ms, ` +
      `loop wall ${result.wallMs} ms\n` +
      `  ${result.assignmentsPerSec.toLocaleString('en-US')} assignments/s (scheduler time), ` +
      `${result.assignmentsPerSecWall.toLocaleString('en-US')} assignments/s (wall)\n` +
      `  ${ok ? 'all peers complete' : 'INCOMPLETE'}\n`,
  );
  process.stdout.write(JSON.stringify(result) + '\n');
  if (!ok) process.exitCode = 1;
}

main();
