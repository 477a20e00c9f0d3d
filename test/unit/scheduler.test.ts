import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TaskScheduler, Assignment, SchedulerOptions } from '../../src/supernode/scheduler';
import { SUPERNODE_HOLDER_ID } from '../../src/common/constants';

const SN = SUPERNODE_HOLDER_ID;

/** Deterministic PRNG (xorshift32) so failures reproduce. */
function rng(seed: number): (n: number) => number {
  let x = seed >>> 0 || 1;
  return (n: number) => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x % n;
  };
}

function supernodeHolds(s: TaskScheduler, n: number): void {
  s.setPieceCount(n);
  for (let p = 0; p < n; p++) s.supernodeHas(p);
}

function of(batch: Assignment[], requester: string): Assignment[] {
  return batch.filter((a) => a.requester === requester);
}

test('rarest piece first', () => {
  const s = new TaskScheduler({ maxInFlightPerPeer: 3, maxUploadsPerHolder: 10 });
  supernodeHolds(s, 4);
  // Holder counts (supernode included): p0 = 4, p1 = 3, p2 = 2, p3 = 1.
  s.addPeer('a', [0, 1, 2]);
  s.addPeer('b', [0, 1]);
  s.addPeer('c', [0]);
  assert.deepEqual([0, 1, 2, 3].map((p) => s.holdersOf(p)), [4, 3, 2, 1]);
  s.addPeer('r');
  const mine = of(s.schedule(), 'r');
  // Peers first: piece 3 is the supernode's alone, so it waits while peers can serve.
  assert.deepEqual(mine.map((a) => a.piece), [2, 1, 0], 'fewest holders first, within the in-flight limit');
  assert.ok(mine.every((a) => a.holder !== SUPERNODE_HOLDER_ID));
});

test('rarest first among pieces that have a usable holder; ties are spread across requesters', () => {
  const s = new TaskScheduler({ maxInFlightPerPeer: 1, maxUploadsPerHolder: 10, maxUploadsSupernode: 100 });
  // No supernode copy of piece 0: only peer 'a' holds it (then it fails requester 'r').
  s.setPieceCount(64);
  for (let p = 1; p < 64; p++) s.supernodeHas(p);
  const rest = Array.from({ length: 63 }, (_, i) => i + 1);
  s.addPeer('z', rest); // pieces 1..63: 3 holders each (with y)
  s.addPeer('y', rest);
  s.addPeer('a', [0]); // piece 0: 1 holder
  s.addPeer('r');
  let b = of(s.schedule(), 'r');
  assert.deepEqual(b, [{ requester: 'r', piece: 0, holder: 'a' }]);
  s.onResult('r', 0, 'a', false);
  b = of(s.schedule(), 'r');
  assert.equal(b.length, 1);
  assert.notEqual(b[0].piece, 0, 'piece 0 has no usable holder for r any more');
  // 30 fresh requesters on 63 equally rare pieces (and piece 0) should not all pick the same one.
  for (let i = 0; i < 30; i++) s.addPeer(`t${i}`);
  const picked = new Set(s.schedule().filter((a) => a.requester.startsWith('t')).map((a) => a.piece));
  assert.ok(picked.size >= 10, `ties spread over pieces (got ${picked.size} distinct)`);
});

test('least-loaded holder is chosen', () => {
  const s = new TaskScheduler({ maxInFlightPerPeer: 1, maxUploadsPerHolder: 4 });
  s.setPieceCount(2); // the supernode holds nothing
  s.addPeer('a', [0, 1]);
  s.addPeer('b', [0, 1]);
  s.addPeer('c', [0, 1]);
  s.addPeer('r1');
  const [first] = s.schedule();
  s.addPeer('r2');
  const [second] = s.schedule();
  s.addPeer('r3');
  const [third] = s.schedule();
  const holders = [first.holder, second.holder, third.holder];
  assert.equal(new Set(holders).size, 3, `each new request goes to an idle holder: ${holders}`);
  // All three now have one upload; finish r1's, so its holder is the least loaded.
  s.onResult('r1', first.piece, first.holder, true);
  s.addPeer('r4');
  const fourth = of(s.schedule(), 'r4');
  assert.equal(fourth.length, 1);
  assert.ok(fourth[0].holder === first.holder || fourth[0].holder === 'r1', `idle holder chosen, got ${fourth[0].holder}`);
});

test('per-requester in-flight limit', () => {
  const s = new TaskScheduler({ maxInFlightPerPeer: 3 });
  supernodeHolds(s, 10);
  s.addPeer('r');
  const b = s.schedule();
  assert.equal(b.length, 3);
  assert.equal(s.stats().inFlight, 3);
  assert.deepEqual(s.schedule(), [], 'no more until something finishes');
  s.onResult('r', b[0].piece, b[0].holder, true);
  const next = s.schedule();
  assert.equal(next.length, 1);
  assert.ok(!b.some((a) => a.piece === next[0].piece), 'a piece in flight is not assigned twice');
});

test('per-holder upload limits (peer and supernode)', () => {
  const s = new TaskScheduler({ maxInFlightPerPeer: 1, maxUploadsPerHolder: 2 });
  s.setPieceCount(1);
  s.addPeer('a', [0]);
  for (let i = 0; i < 5; i++) s.addPeer(`r${i}`);
  const b = s.schedule();
  assert.equal(b.length, 2);
  assert.ok(b.every((x) => x.holder === 'a'));
  assert.deepEqual(s.schedule(), []);
  s.onResult(b[0].requester, 0, 'a', true);
  // 'a' has one free slot again and the finished requester is a new holder with 2.
  const more = s.schedule();
  assert.equal(more.length, 3);
  const load = new Map<string, number>();
  for (const x of more) load.set(x.holder, (load.get(x.holder) ?? 0) + 1);
  assert.equal(load.get('a'), 1);
  assert.equal(load.get(b[0].requester), 2);

  const t = new TaskScheduler({ maxInFlightPerPeer: 1, maxUploadsSupernode: 3, supernodeCopiesPerPiece: 10 });
  supernodeHolds(t, 1);
  for (let i = 0; i < 10; i++) t.addPeer(`r${i}`);
  assert.equal(t.schedule().length, 3);
  assert.equal(t.stats().supernodeUploads, 3);
});

test('the supernode seeds a piece to a few requesters; the rest get it from them', () => {
  const s = new TaskScheduler({ maxInFlightPerPeer: 1, maxUploadsSupernode: 16, supernodeCopiesPerPiece: 2 });
  s.setPieceCount(1);
  s.supernodeHas(0);
  for (let i = 0; i < 6; i++) s.addPeer(`r${i}`);
  const first = s.schedule();
  assert.equal(first.length, 2, 'two copies from the supernode at once');
  assert.ok(first.every((a) => a.holder === SN));
  s.onResult(first[0].requester, 0, SN, true);
  const next = s.schedule();
  // The finished requester now serves; the freed supernode copy goes to one more.
  const fromPeer = next.filter((a) => a.holder === first[0].requester);
  assert.ok(fromPeer.length >= 1, 'a requester that has the piece serves it');
  assert.ok(next.filter((a) => a.holder === SN).length <= 1);
});

test('a failed holder is avoided by that requester but still used for others', () => {
  const s = new TaskScheduler({ maxInFlightPerPeer: 1 });
  s.setPieceCount(1);
  s.addPeer('a', [0]);
  s.addPeer('b');
  assert.deepEqual(s.schedule(), [{ requester: 'b', piece: 0, holder: 'a' }]);
  s.onResult('b', 0, 'a', false);
  assert.deepEqual(s.schedule(), [], 'b has no other holder');
  s.addPeer('c');
  assert.deepEqual(s.schedule(), [{ requester: 'c', piece: 0, holder: 'a' }]);
  assert.equal(s.isDroppedHolder('a'), false);
  s.onResult('c', 0, 'a', true);
  assert.deepEqual(s.schedule(), [{ requester: 'b', piece: 0, holder: 'c' }], 'b gets it from the new holder');
  s.onResult('b', 0, 'c', true);
  assert.ok(s.isComplete('b') && s.isComplete('c'));
});

test('holderFailureLimit distinct requesters drop a holder for everyone', () => {
  const s = new TaskScheduler({ maxInFlightPerPeer: 1, holderFailureLimit: 2, maxUploadsPerHolder: 10, supernodeCopiesPerPiece: 3 });
  supernodeHolds(s, 1);
  s.addPeer('bad', [0]);
  s.addPeer('r1');
  s.addPeer('r2');
  const b = s.schedule();
  assert.deepEqual(b.map((x) => x.holder), ['bad', 'bad'], 'peer holder preferred');
  assert.equal(s.holdersOf(0), 2);
  s.onResult('r1', 0, 'bad', false);
  s.onResult('r1', 0, 'bad', false); // duplicate: not in flight any more, ignored
  assert.equal(s.isDroppedHolder('bad'), false, 'one requester is not enough');
  s.onResult('r2', 0, 'bad', false);
  assert.equal(s.isDroppedHolder('bad'), true);
  assert.equal(s.holdersOf(0), 1, 'only the supernode left');
  assert.equal(s.stats().droppedHolders, 1);
  s.addPeer('r3');
  const next = s.schedule();
  assert.deepEqual(next.map((x) => x.holder), [SN, SN, SN], 'nobody is sent to the dropped holder');
  // The dropped peer can still download, but never becomes a holder again.
  s.setPieceCount(1);
  for (const x of next) s.onResult(x.requester, x.piece, x.holder, true);
  assert.equal(s.holdersOf(0), 4);
});

test('the supernode is the holder of last resort and seeds each piece about once', () => {
  const s = new TaskScheduler({ maxInFlightPerPeer: 1, maxUploadsPerHolder: 1 });
  supernodeHolds(s, 1);
  s.addPeer('a', [0]);
  s.addPeer('r1');
  assert.deepEqual(s.schedule(), [{ requester: 'r1', piece: 0, holder: 'a' }], 'a free peer before the supernode');
  s.addPeer('r2');
  assert.deepEqual(s.schedule(), [], 'a peer holds it, busy: r2 waits rather than spend the supernode uplink');
  s.onResult('r1', 0, 'a', true);
  const b = s.schedule();
  assert.equal(b.length, 1);
  assert.equal(b[0].requester, 'r2');
  assert.notEqual(b[0].holder, SN, 'two peers hold it now');
  // Every peer holder failed r2: only then does the supernode serve it again.
  s.onResult('r2', 0, b[0].holder, false);
  const c = s.schedule();
  assert.equal(c.length, 1);
  assert.notEqual(c[0].holder, b[0].holder);
  assert.notEqual(c[0].holder, SN);
  s.onResult('r2', 0, c[0].holder, false);
  assert.deepEqual(s.schedule(), [{ requester: 'r2', piece: 0, holder: SN }]);
  // A supernode failure is retried (it is never avoided nor dropped).
  s.onResult('r2', 0, SN, false);
  assert.deepEqual(s.schedule(), [{ requester: 'r2', piece: 0, holder: SN }]);
});

test('removePeer frees slots and reschedules', () => {
  const s = new TaskScheduler({ maxInFlightPerPeer: 1, maxUploadsPerHolder: 1 });
  s.setPieceCount(1);
  s.addPeer('a', [0]);
  s.addPeer('b');
  s.addPeer('c');
  const first = s.schedule();
  assert.equal(first.length, 1);
  const waiting = first[0].requester === 'b' ? 'c' : 'b';
  assert.deepEqual(s.schedule(), []);
  // The downloading requester dies: a's slot is free for the other one.
  s.removePeer(first[0].requester);
  assert.equal(s.stats().inFlight, 0);
  assert.deepEqual(s.schedule(), [{ requester: waiting, piece: 0, holder: 'a' }]);
  // The holder dies mid-transfer: the piece becomes schedulable again elsewhere.
  s.removePeer('a');
  assert.equal(s.stats().inFlight, 0);
  assert.equal(s.holdersOf(0), 0);
  assert.deepEqual(s.schedule(), []);
  s.addPeer('d', [0]);
  assert.deepEqual(s.schedule(), [{ requester: waiting, piece: 0, holder: 'd' }]);
  // Late results about the dead peers are ignored.
  s.onResult(first[0].requester, 0, 'a', true);
  s.onResult(waiting, 0, 'a', true);
  assert.equal(s.stats().inFlight, 1);
  s.onResult(waiting, 0, 'd', true);
  assert.ok(s.isComplete(waiting));
  assert.equal(s.stats().peers, 2);
});

test('a removed peer index is reused cleanly', () => {
  const s = new TaskScheduler({ maxInFlightPerPeer: 1, holderFailureLimit: 5 });
  s.setPieceCount(1);
  s.addPeer('a', [0]);
  s.addPeer('r');
  s.schedule();
  s.onResult('r', 0, 'a', false); // r now avoids a
  s.removePeer('a');
  s.addPeer('a2', [0]); // takes a's index; r must not avoid it
  assert.deepEqual(s.schedule(), [{ requester: 'r', piece: 0, holder: 'a2' }]);
});

test('bogus results and removals are ignored without throwing', () => {
  const s = new TaskScheduler();
  supernodeHolds(s, 4);
  s.addPeer('a');
  const b = s.schedule();
  assert.equal(b.length, 4);
  const before = s.stats();
  assert.doesNotThrow(() => {
    s.onResult('nobody', 0, SN, true);
    s.onResult('a', 0, 'nobody', true);
    s.onResult('a', 99, SN, true);
    s.onResult('a', -1, SN, false);
    s.onResult('a', Number.NaN, SN, true);
    s.onResult('a', 1.5, SN, true);
    s.onResult('a', b[0].piece, 'a', true); // wrong holder
    s.removePeer('nobody');
    s.addPeer('b', [-3, 7.5, 1e9, Number.NaN]);
  });
  assert.deepEqual({ ...s.stats(), peers: 1 }, { ...before, peers: 1 });
  assert.equal(s.piecesOf('b'), 0);
  s.onResult('a', b[0].piece, SN, true);
  s.onResult('a', b[0].piece, SN, true); // duplicate
  assert.equal(s.piecesOf('a'), 1);
  assert.equal(s.stats().succeeded, 1);
});

test('bad calls from the supernode side throw', () => {
  assert.throws(() => new TaskScheduler({ maxInFlightPerPeer: 0 }), RangeError);
  const s = new TaskScheduler();
  s.setPieceCount(2);
  assert.throws(() => s.supernodeHas(2), RangeError);
  assert.throws(() => s.setPieceCount(3), RangeError);
  assert.doesNotThrow(() => s.setPieceCount(2));
  assert.throws(() => s.addPeer(SN), RangeError);
});

test('streaming: pieces become schedulable as the source delivers them, then setPieceCount', () => {
  const s = new TaskScheduler();
  s.addPeer('r');
  assert.deepEqual(s.schedule(), [], 'nothing known yet');
  s.supernodeHas(0);
  assert.deepEqual(s.schedule(), [{ requester: 'r', piece: 0, holder: SN }]);
  s.supernodeHas(1);
  assert.deepEqual(s.schedule(), [{ requester: 'r', piece: 1, holder: SN }]);
  s.onResult('r', 0, SN, true);
  s.onResult('r', 1, SN, true);
  assert.equal(s.isComplete('r'), false, 'length unknown: not complete');
  assert.deepEqual(s.schedule(), []);
  s.setPieceCount(4);
  assert.equal(s.isComplete('r'), false);
  assert.equal(s.holdersOf(3), 0);
  assert.deepEqual(s.schedule(), [], 'pieces 2 and 3 have no holder yet');
  s.supernodeHas(3);
  s.supernodeHas(2);
  const b = s.schedule();
  assert.deepEqual(b.map((x) => x.piece).sort(), [2, 3]);
  for (const x of b) s.onResult(x.requester, x.piece, x.holder, true);
  assert.equal(s.isComplete('r'), true);
  assert.equal(s.stats().completePeers, 1);
  assert.deepEqual(s.schedule(), []);
});

test('many pieces and peers: storage grows without losing state', () => {
  const s = new TaskScheduler({ maxInFlightPerPeer: 2, maxUploadsPerHolder: 2 });
  // Pieces trickle in one by one past several capacity doublings, peers too.
  for (let p = 0; p < 300; p++) s.supernodeHas(p);
  for (let i = 0; i < 200; i++) s.addPeer(`p${i}`, i < 10 ? [i] : []);
  s.setPieceCount(300);
  for (let i = 0; i < 10; i++) assert.ok(s.has(`p${i}`, i));
  assert.equal(s.holdersOf(0), 2);
  const b = s.schedule();
  // 16 supernode slots + 10 peer holders x 2 slots.
  assert.equal(b.length, 36);
  assert.equal(b.filter((x) => x.holder !== SN).length, 20);
});

/**
 * A reference model of the policy, independent of the scheduler's data
 * structures: every assignment is checked against it in order, and after
 * each schedule() no requester with a free slot may have a usable holder.
 */
class Model {
  have = new Map<string, Set<number>>();
  sn = new Set<number>();
  inflight = new Map<string, Map<number, string>>();
  uploads = new Map<string, number>();
  failed = new Map<string, Set<string>>();
  failedBy = new Map<string, Set<string>>();
  dropped = new Set<string>();
  constructor(readonly o: SchedulerOptions, readonly pieces: number) {}

  add(id: string, have: number[]): void {
    this.have.set(id, new Set(have));
    this.inflight.set(id, new Map());
    this.uploads.set(id, 0);
  }
  remove(id: string): void {
    for (const h of (this.inflight.get(id) ?? new Map<number, string>()).values()) this.uploads.set(h, (this.uploads.get(h) ?? 1) - 1);
    for (const m of this.inflight.values()) {
      for (const [p, h] of m) if (h === id) m.delete(p);
    }
    this.have.delete(id);
    this.inflight.delete(id);
    this.uploads.delete(id);
    this.failed.delete(id);
    for (const f of this.failed.values()) f.delete(id);
  }
  holders(p: number): number {
    let n = this.sn.has(p) ? 1 : 0;
    for (const [id, h] of this.have) if (h.has(p) && !this.dropped.has(id)) n++;
    return n;
  }
  usablePeers(r: string, p: number): string[] {
    const res: string[] = [];
    for (const [id, h] of this.have) {
      if (id === r || !h.has(p) || this.dropped.has(id)) continue;
      if ((this.uploads.get(id) ?? 0) >= this.o.maxUploadsPerHolder) continue;
      if (this.failed.get(r)?.has(id)) continue;
      res.push(id);
    }
    return res;
  }
  snUsable(r: string, p: number): boolean {
    let copies = 0;
    for (const f of this.inflight.values()) if (f.get(p) === SN) copies++;
    // The supernode seeds only pieces no peer usable by r holds, busy or not.
    let peerHolds = false;
    for (const [id, h] of this.have) if (id !== r && h.has(p) && !this.dropped.has(id) && !this.failed.get(r)?.has(id)) peerHolds = true;
    return this.sn.has(p) && (this.uploads.get(SN) ?? 0) < this.o.maxUploadsSupernode && copies < this.o.supernodeCopiesPerPiece && !peerHolds;
  }
  candidates(r: string): number[] {
    const h = this.have.get(r) as Set<number>;
    const f = this.inflight.get(r) as Map<number, string>;
    const res: number[] = [];
    for (let p = 0; p < this.pieces; p++) {
      if (h.has(p) || f.has(p)) continue;
      if (this.usablePeers(r, p).length > 0 || this.snUsable(r, p)) res.push(p);
    }
    return res;
  }
  check(a: Assignment): void {
    const r = a.requester;
    const f = this.inflight.get(r);
    assert.ok(f, `assignment to unknown requester ${r}`);
    assert.ok(f.size < this.o.maxInFlightPerPeer, 'requester in-flight limit');
    assert.ok(!this.have.get(r)?.has(a.piece), `${r} already holds ${a.piece}`);
    assert.ok(!f.has(a.piece), `${r} already fetching ${a.piece}`);
    const cands = this.candidates(r);
    assert.ok(cands.includes(a.piece), `${a.piece} not servable to ${r}`);
    // Peers first: while a peer can serve r some piece, r gets the rarest of those.
    const byPeer = cands.filter((p) => this.usablePeers(r, p).length > 0);
    const pool = byPeer.length > 0 ? byPeer : cands;
    const min = Math.min(...pool.map((p) => this.holders(p)));
    assert.equal(this.holders(a.piece), min, `rarest first: ${a.piece} has ${this.holders(a.piece)} holders, min ${min}`);
    const peers = this.usablePeers(r, a.piece);
    if (a.holder === SN) {
      assert.equal(peers.length, 0, 'supernode used while a peer could serve');
      assert.ok(this.snUsable(r, a.piece));
    } else {
      assert.ok(peers.includes(a.holder), `holder ${a.holder} not usable`);
      const least = Math.min(...peers.map((h) => this.uploads.get(h) ?? 0));
      assert.equal(this.uploads.get(a.holder), least, 'least-loaded holder');
    }
    f.set(a.piece, a.holder);
    this.uploads.set(a.holder, (this.uploads.get(a.holder) ?? 0) + 1);
  }
  result(a: Assignment, ok: boolean): void {
    this.inflight.get(a.requester)?.delete(a.piece);
    if (this.uploads.has(a.holder)) this.uploads.set(a.holder, (this.uploads.get(a.holder) as number) - 1);
    if (ok) {
      this.have.get(a.requester)?.add(a.piece);
    } else if (a.holder !== SN) {
      if (!this.failed.has(a.requester)) this.failed.set(a.requester, new Set());
      (this.failed.get(a.requester) as Set<string>).add(a.holder);
      if (!this.failedBy.has(a.holder)) this.failedBy.set(a.holder, new Set());
      const by = this.failedBy.get(a.holder) as Set<string>;
      by.add(a.requester);
      if (by.size >= this.o.holderFailureLimit) this.dropped.add(a.holder);
    }
  }
  assertMaximal(): void {
    for (const [r, f] of this.inflight) {
      if (f.size >= this.o.maxInFlightPerPeer) continue;
      assert.deepEqual(this.candidates(r), [], `${r} has a free slot and servable pieces after schedule()`);
    }
  }
}

test('randomized: every decision follows the policy and schedule() leaves nothing servable', () => {
  for (const seed of [1, 2, 3, 4, 5, 6, 7, 8]) {
    const rand = rng(seed);
    // Half the runs have enough peers to span several 32-peer bitset words.
    const maxLive = seed % 2 === 0 ? 40 : 110;
    const o: SchedulerOptions = {
      maxInFlightPerPeer: 1 + rand(4),
      maxUploadsPerHolder: 1 + rand(4),
      maxUploadsSupernode: 1 + rand(6),
      supernodeCopiesPerPiece: 1 + rand(3),
      holderFailureLimit: 1 + rand(3),
    };
    const pieces = 5 + rand(40);
    const s = new TaskScheduler(o);
    const m = new Model({ ...o }, pieces);
    m.uploads.set(SN, 0);
    s.setPieceCount(pieces);
    let pending: Assignment[] = [];
    let nextId = 0;
    const live: string[] = [];
    for (let step = 0; step < 400; step++) {
      const op = rand(10);
      if ((op === 0 || (op === 3 && maxLive > 40)) && live.length < maxLive) {
        const id = `p${nextId++}`;
        const have: number[] = [];
        if (rand(3) === 0) for (let p = 0; p < pieces; p++) if (rand(4) === 0) have.push(p);
        s.addPeer(id, have);
        m.add(id, have);
        live.push(id);
      } else if (op === 1 && live.length > 0 && rand(3) === 0) {
        const id = live.splice(rand(live.length), 1)[0];
        s.removePeer(id);
        m.remove(id);
        pending = pending.filter((a) => a.requester !== id && a.holder !== id);
      } else if (op === 2) {
        const p = rand(pieces);
        s.supernodeHas(p);
        m.sn.add(p);
      } else if (pending.length > 0) {
        const n = 1 + rand(pending.length);
        for (let i = 0; i < n && pending.length > 0; i++) {
          const a = pending.splice(rand(pending.length), 1)[0];
          const ok = rand(8) !== 0;
          s.onResult(a.requester, a.piece, a.holder, ok);
          m.result(a, ok);
        }
      }
      const b = s.schedule();
      for (const a of b) m.check(a);
      m.assertMaximal();
      pending.push(...b);
      assert.equal(s.stats().inFlight, pending.length);
      for (const id of live) {
        assert.equal(s.piecesOf(id), (m.have.get(id) as Set<number>).size);
        assert.equal(s.isComplete(id), (m.have.get(id) as Set<number>).size === pieces);
      }
      for (let p = 0; p < pieces; p++) assert.equal(s.holdersOf(p), m.holders(p), `holders of ${p}`);
    }
  }
});

function swarm(peers: number, pieces: number, failEvery: number, perEvent: boolean) {
  const s = new TaskScheduler();
  supernodeHolds(s, pieces);
  const ids: string[] = [];
  for (let i = 0; i < peers; i++) {
    ids.push(`peer-${i}`);
    s.addPeer(ids[i]);
  }
  const rand = rng(42);
  const seen = new Set<string>();
  let assigned = 0;
  let fromPeers = 0;
  let results = 0;
  let inflight: Assignment[] = [];
  const take = (b: Assignment[]) => {
    for (const a of b) {
      const key = `${a.requester}/${a.piece}`;
      assert.ok(!s.has(a.requester, a.piece), `${key} already held`);
      assert.ok(!seen.has(key), `${key} in flight twice`);
      seen.add(key);
      assigned++;
      if (a.holder !== SN) fromPeers++;
    }
    inflight.push(...b);
  };
  take(s.schedule());
  while (inflight.length > 0) {
    const n = perEvent ? 1 : inflight.length;
    const batch = inflight;
    inflight = [];
    // Finish n random assignments; the rest stay in flight.
    for (let i = batch.length - 1; i > 0; i--) {
      const j = rand(i + 1);
      [batch[i], batch[j]] = [batch[j], batch[i]];
    }
    for (let i = 0; i < batch.length; i++) {
      const a = batch[i];
      if (i >= n) {
        inflight.push(a);
        continue;
      }
      seen.delete(`${a.requester}/${a.piece}`);
      const ok = failEvery === 0 || ++results % failEvery !== 0;
      s.onResult(a.requester, a.piece, a.holder, ok);
      if (perEvent) take(s.schedule());
    }
    if (!perEvent) take(s.schedule());
  }
  return { s, ids, assigned, fromPeers };
}

test('swarm simulation: every peer gets every piece, mostly peer to peer', () => {
  const { s, ids, assigned, fromPeers } = swarm(60, 50, 0, false);
  for (const id of ids) {
    assert.ok(s.isComplete(id), `${id} complete`);
    for (let p = 0; p < 50; p++) assert.ok(s.has(id, p));
  }
  assert.equal(assigned, 60 * 50, 'each piece assigned exactly once per peer without failures');
  assert.ok(fromPeers / assigned > 0.8, `peer-to-peer share ${fromPeers}/${assigned}`);
  assert.equal(s.stats().inFlight, 0);
  assert.equal(s.stats().completePeers, 60);
});

test('swarm simulation with one event at a time and some failures still completes', () => {
  const { s, ids, assigned, fromPeers } = swarm(40, 30, 13, true);
  for (const id of ids) assert.ok(s.isComplete(id), `${id} complete`);
  assert.ok(assigned > 40 * 30, 'failed transfers were retried');
  assert.ok(fromPeers / assigned > 0.7, `peer-to-peer share ${fromPeers}/${assigned}`);
  assert.equal(s.stats().inFlight, 0);
});

test('a peer that does not serve yet downloads but is nobody\'s holder until setServing', () => {
  const s = new TaskScheduler({ maxInFlightPerPeer: 4, maxUploadsPerHolder: 4 });
  supernodeHolds(s, 2);
  s.addPeer('early', [0, 1], false);
  assert.deepEqual([0, 1].map((p) => s.holdersOf(p)), [1, 1], 'only the supernode holds, as far as scheduling goes');
  s.addPeer('r');
  const before = s.schedule();
  assert.ok(before.length > 0);
  for (const a of before) assert.equal(a.holder, SN, 'the not-yet-serving peer is never chosen');
  for (const a of of(before, 'r')) s.onResult('r', a.piece, a.holder, false);
  s.setServing('early');
  assert.deepEqual([0, 1].map((p) => s.holdersOf(p)), [2, 2]);
  s.addPeer('r2');
  const after = of(s.schedule(), 'r2');
  assert.equal(after.length, 2);
  for (const a of after) assert.equal(a.holder, 'early', 'peers first, now that it serves');
  // Calling it again, or for an unknown peer, changes nothing.
  s.setServing('early');
  s.setServing('nobody');
  assert.deepEqual([0, 1].map((p) => s.holdersOf(p)), [2, 2]);
});
