/**
 * The supernode's piece scheduler: pure logic, no I/O, no timers.
 *
 * State goes in through addPeer / removePeer / supernodeHas / setPieceCount /
 * onResult; decisions come out of schedule(). The caller (the gRPC layer) owns
 * the clock and the sockets: it calls schedule() after each event (or after a
 * batch of events; nothing is lost by batching) and sends the returned
 * assignments to the peers. schedule() is the only method that assigns; the
 * others never do, so an event without a following schedule() leaves free
 * slots idle. There are no timeouts here: a transfer that hangs must be
 * reported by the caller as a failure (onResult(..., false)) or the peer
 * removed.
 *
 * Policy
 *  - Rarest first: a requester gets, among the pieces it lacks, is not already
 *    fetching and that some holder can serve to it right now, the one with the
 *    fewest holders. Ties are broken by starting the scan of each equal-count
 *    group at an offset derived from the requester, so that requesters spread
 *    over different pieces.
 *  - Least-loaded holder: among the usable peer holders of the piece (not
 *    failed for this requester, uploads < maxUploadsPerHolder) the one with the
 *    fewest uploads in flight.
 *  - The supernode is the holder of last resort: it serves a piece only when no
 *    peer holder can serve it right now.
 *  - Per-requester (maxInFlightPerPeer) and per-holder (maxUploadsPerHolder,
 *    maxUploadsSupernode) limits.
 *  - A peer holder that failed a requester is never chosen again for it; after
 *    holderFailureLimit distinct requesters reported it, it stops being a
 *    holder for everyone (it may still download). The supernode is never
 *    avoided nor dropped: it is the source of truth, and avoiding it could
 *    leave a requester with no way to finish.
 *
 * Data layout (why it is fast)
 *  - Peers get a small integer index (reused after removal). Pieces are
 *    integers 0..known-1.
 *  - Per peer, two bitsets over pieces: `have` and `taken` (= have | in
 *    flight). A scan step for a requester is one bit test.
 *  - Per piece, a bitset over peer indices of its (non-dropped) peer holders,
 *    and per upload level k (0..maxUploadsPerHolder-1) a bitset over peers with
 *    exactly k uploads. Picking the least-loaded usable holder is a few word
 *    ANDs (32 peers per word), not a walk over the holders.
 *  - Pieces are kept in an array sorted by holder count, with bucket
 *    boundaries per count (the classic O(1) "increment a count, keep sorted"
 *    trick: swap with the bucket's edge, move the edge). Holder counts change
 *    by one at a time, so the array never needs re-sorting.
 *  - During one schedule() call resources only get consumed, so a piece found
 *    with no free holder stays unservable until the call ends: it is marked
 *    dead for the call (an epoch stamp, no clearing) and later scans jump
 *    over runs of dead positions (union-find style forward links).
 *  - Event driven: schedule() does not look at every requester. A requester
 *    is walked when something happened to it (joined, a transfer of its
 *    ended, a holder it fetched from left). One whose walk found nothing is
 *    BLOCKED and is looked at again only when new supply appears that fits
 *    it: a peer whose upload slots were all busy frees one, a peer with free
 *    slots gains a piece, the supernode frees a slot or gains a piece. So a
 *    call after one event costs about what that event changed, not
 *    peers x pieces.
 *  - Whenever no holder at all has a free upload slot, walking stops.
 */
import { SUPERNODE_HOLDER_ID } from '../common/constants';

/** Holder states of a peer (its `dropped` entry): a holder of what it has, dropped after failures, or not serving yet. */
const HOLDER = 0;
const NOT_SERVING = 2;

export interface SchedulerOptions {
  /** Pieces one requester downloads at once. */
  maxInFlightPerPeer: number;
  /** Concurrent uploads one peer holder serves. */
  maxUploadsPerHolder: number;
  /** Concurrent uploads the supernode serves. */
  maxUploadsSupernode: number;
  /** Failures reported by this many distinct requesters drop a peer holder for everyone. */
  holderFailureLimit: number;
  /**
   * Requesters that fetch one piece from the supernode at the same time. The
   * supernode only serves a piece that no usable peer holds, so the others
   * wait for the first to finish and fetch it from there: the supernode's
   * uplink seeds each piece into the swarm about once instead of sending it
   * to everyone.
   */
  supernodeCopiesPerPiece: number;
}

export const DEFAULT_SCHEDULER_OPTIONS: Readonly<SchedulerOptions> = Object.freeze({
  maxInFlightPerPeer: 8,
  maxUploadsPerHolder: 8,
  maxUploadsSupernode: 16,
  holderFailureLimit: 3,
  supernodeCopiesPerPiece: 1,
});

/** One decision: `requester` fetches `piece` from `holder` (a peer id or SUPERNODE_HOLDER_ID). */
export interface Assignment {
  requester: string;
  piece: number;
  holder: string;
}

export interface SchedulerStats {
  /** Peers registered (requesters, complete or not). */
  peers: number;
  /** Assignments currently in flight. */
  inFlight: number;
  /** Total number of pieces, or null while the source's length is unknown. */
  pieceCount: number | null;
  /** Pieces the scheduler tracks so far (known via setPieceCount or supernodeHas). */
  knownPieces: number;
  /** Pieces the supernode holds. */
  supernodePieces: number;
  /** Uploads in flight from the supernode. */
  supernodeUploads: number;
  /** Uploads in flight from peers. */
  peerUploads: number;
  /** Peers that hold every piece (0 while the piece count is unknown). */
  completePeers: number;
  /** Peers dropped as holders after too many failures. */
  droppedHolders: number;
  /** Requesters with free slots that no holder can serve right now. */
  blockedRequesters: number;
  /** Assignments handed out since creation, and how many came from peers / the supernode. */
  assigned: number;
  assignedFromPeers: number;
  assignedFromSupernode: number;
  /** Results accepted since creation. */
  succeeded: number;
  failed: number;
}

/** Holder code for the supernode in the internal arrays. */
const SN = -1;
/** "No holder can serve this now". */
const NONE = -2;

/** Above this many holders with new supply, blocked requesters are walked instead of tested. */
const SUPPLY_TEST_MAX = 8;

const IDLE = 0;
const DIRTY = 1;
const BLOCKED = 2;

interface PeerEntry {
  id: string;
  idx: number;
  /** Bitset over peer indices: holders that failed this requester. Allocated on first failure. */
  failBits: Uint32Array | null;
  /** Ids of the requesters that reported this peer as a failing holder. */
  failedBy: Set<string> | null;
}

function checkPositiveInt(name: string, v: number): void {
  if (!Number.isInteger(v) || v < 1) {
    throw new RangeError(`scheduler option ${name} must be a positive integer, got ${v}`);
  }
}

function grownInt32(a: Int32Array, n: number, fill = 0) {
  const b = new Int32Array(n);
  if (fill !== 0) b.fill(fill);
  b.set(a.subarray(0, Math.min(a.length, n)));
  return b;
}

function grownUint8(a: Uint8Array, n: number) {
  const b = new Uint8Array(n);
  b.set(a.subarray(0, Math.min(a.length, n)));
  return b;
}

/** Copies a row-major matrix of 32-bit words into a new one with more rows and/or wider rows. */
function regrid(a: Uint32Array, rows: number, oldStride: number, newRows: number, newStride: number) {
  const b = new Uint32Array(newRows * newStride);
  if (oldStride === newStride) {
    b.set(a.subarray(0, rows * oldStride));
  } else {
    for (let r = 0; r < rows; r++) b.set(a.subarray(r * oldStride, (r + 1) * oldStride), r * newStride);
  }
  return b;
}

export class TaskScheduler {
  readonly options: Readonly<SchedulerOptions>;
  private readonly maxInFlight: number;
  private readonly maxUp: number;
  private readonly maxUpSn: number;
  private readonly snCopies: number;
  /** Supernode uploads in flight per piece. */
  private snPer = new Int32Array(0);
  private readonly failLimit: number;

  // ---- pieces ------------------------------------------------------------
  /** Total piece count, -1 while unknown. */
  private pieceCount = -1;
  /** Pieces 0..known-1 are tracked. */
  private known = 0;
  private pieceCap = 0;
  /** Words per bitset over pieces (capacity). */
  private pw = 0;
  /** Holder count per piece, the supernode included. */
  private cnt = new Int32Array(0);
  /** Pieces sorted by ascending holder count; pos is the inverse permutation. */
  private order = new Int32Array(0);
  private pos = new Int32Array(0);
  /** lo[c] = first position of the bucket of pieces with c holders; valid for c <= maxC + 1, lo[maxC+1] = known. */
  private lo = new Int32Array(4);
  private maxC = 0;
  /** Bitset over pieces: held by the supernode. */
  private snBits = new Uint32Array(0);
  private snPieces = 0;
  private snUploads = 0;
  /**
   * Positions (in `order`) whose piece no holder can serve for the rest of
   * this schedule() call: skipEpoch[i] === epoch, and skipNext[i] leads to a
   * later position. Stamps from earlier calls are simply stale.
   */
  private skipEpoch = new Int32Array(0);
  private skipNext = new Int32Array(0);
  private epoch = 0;

  // ---- peers -------------------------------------------------------------
  private byId = new Map<string, PeerEntry>();
  private entries: (PeerEntry | undefined)[] = [];
  private freeIdx: number[] = [];
  /** One past the highest peer index ever used. */
  private peerHigh = 0;
  private peerCap = 0;
  /** Words per bitset over peers (capacity). */
  private qw = 0;
  private active = new Uint8Array(0);
  /** 0 (HOLDER), 1 (dropped after failures) or NOT_SERVING: only 0 makes a peer a holder. */
  private dropped = new Uint8Array(0);
  private haveCount = new Int32Array(0);
  /** Uploads in flight per peer holder, and their (requester, piece) lists (stride maxUp). */
  private uploads = new Int32Array(0);
  private upReq = new Int32Array(0);
  private upPiece = new Int32Array(0);
  /** Downloads in flight per requester, and their (piece, holder) lists (stride maxInFlight). */
  private infCount = new Int32Array(0);
  private infPiece = new Int32Array(0);
  private infHolder = new Int32Array(0);
  /** Row per peer (stride pw): pieces held / pieces held or in flight. */
  private haveBits = new Uint32Array(0);
  private takenBits = new Uint32Array(0);
  /** Row per piece (stride qw): non-dropped peer holders. */
  private holderBits = new Uint32Array(0);
  /** Row per upload level k (stride qw): non-dropped peers with exactly k uploads. */
  private levelBits = new Uint32Array(0);
  /** Non-dropped peers with uploads < maxUp (union of the level rows). */
  private freeBits = new Uint32Array(0);
  /** Bit w set iff freeBits[w] !== 0: lets the holder search visit only words with a free peer. */
  private freeSummary = new Uint32Array(0);
  /** Free upload slots over non-dropped peers that hold at least one piece. */
  private peerFreeSlots = 0;
  /**
   * Requester state, so schedule() only looks at requesters something
   * happened to. IDLE: complete or all slots in flight. DIRTY: in dirtyQ, to
   * be walked. BLOCKED: has free slots but no holder could serve it when last
   * walked; it is looked at again only when new supply appears (a holder
   * whose slots were full frees one, a free peer gains a piece, the supernode
   * frees a slot or gains a piece) and that supply fits it.
   */
  private rstate = new Uint8Array(0);
  private dirtyQ: number[] = [];
  private blocked: number[] = [];
  private blockedPos = new Int32Array(0);
  private blockedCursor = 0;
  /** Peer holders with new supply since the last schedule() (deduplicated by supplyFlag). */
  private supply: number[] = [];
  private supplyFlag = new Uint8Array(0);
  private snSupply = false;
  /** Rotates the holder scan's first word so equal-load holders share the work. */
  private spin = 0;

  // ---- counters ----------------------------------------------------------
  private inFlightTotal = 0;
  private peerUploadsTotal = 0;
  private completeTotal = 0;
  private droppedTotal = 0;
  private assignedTotal = 0;
  private assignedSn = 0;
  private succeededTotal = 0;
  private failedTotal = 0;

  constructor(opts: Partial<SchedulerOptions> = {}) {
    const o: SchedulerOptions = { ...DEFAULT_SCHEDULER_OPTIONS };
    for (const k of Object.keys(DEFAULT_SCHEDULER_OPTIONS) as (keyof SchedulerOptions)[]) {
      if (opts[k] !== undefined) o[k] = opts[k] as number;
      checkPositiveInt(k, o[k]);
    }
    this.options = Object.freeze(o);
    this.maxInFlight = o.maxInFlightPerPeer;
    this.maxUp = o.maxUploadsPerHolder;
    this.maxUpSn = o.maxUploadsSupernode;
    this.snCopies = o.supernodeCopiesPerPiece;
    this.failLimit = o.holderFailureLimit;
    this.growPieces(64);
    this.growPeers(64);
  }

  // =======================================================================
  // Public API
  // =======================================================================

  /**
   * Sets the number of pieces once the source's length is known. Pieces below
   * n that the supernode does not hold yet are tracked with no holder; they
   * become schedulable through supernodeHas (streaming). Calling it again with
   * the same n is a no-op; a different n, or an n below a piece already
   * announced, is a bug in the caller and throws.
   */
  setPieceCount(n: number): void {
    if (!Number.isInteger(n) || n < 0) throw new RangeError(`piece count must be a non-negative integer, got ${n}`);
    if (this.pieceCount >= 0) {
      if (n === this.pieceCount) return;
      throw new RangeError(`piece count already set to ${this.pieceCount}, got ${n}`);
    }
    if (n < this.known) throw new RangeError(`piece count ${n} is below already announced piece ${this.known - 1}`);
    this.ensureKnown(n);
    this.pieceCount = n;
    for (let r = 0; r < this.peerHigh; r++) {
      if (this.active[r] === 1 && this.haveCount[r] >= n) {
        this.completeTotal++;
        if (this.rstate[r] === BLOCKED) this.unblock(r);
      }
    }
  }

  /** The supernode (CDN) now holds this piece. Repeated calls are no-ops. */
  supernodeHas(piece: number): void {
    if (!Number.isInteger(piece) || piece < 0) throw new RangeError(`bad piece number ${piece}`);
    if (this.pieceCount >= 0 && piece >= this.pieceCount) {
      throw new RangeError(`piece ${piece} out of range (piece count ${this.pieceCount})`);
    }
    this.ensureKnown(piece + 1);
    const bit = 1 << (piece & 31);
    if ((this.snBits[piece >>> 5] & bit) !== 0) return;
    this.snBits[piece >>> 5] |= bit;
    this.snPieces++;
    this.increment(piece);
    this.snSupply = true;
  }

  /**
   * A requester joins, already holding `have` (it is a holder of those too).
   * Pieces in `have` that are out of range, or not known yet while the piece
   * count is unknown, are ignored (they come from the network). Adding a
   * known peer again merges its `have`.
   */
  addPeer(peerId: string, have: readonly number[] = [], serving = true): void {
    if (peerId === SUPERNODE_HOLDER_ID) throw new RangeError(`peer id "${SUPERNODE_HOLDER_ID}" is reserved for the supernode`);
    let e = this.byId.get(peerId);
    if (e === undefined) {
      let idx = this.freeIdx.pop();
      if (idx === undefined) {
        idx = this.peerHigh++;
        if (idx >= this.peerCap) this.growPeers(this.peerCap * 2);
      }
      e = { id: peerId, idx, failBits: null, failedBy: null };
      this.byId.set(peerId, e);
      this.entries[idx] = e;
      this.active[idx] = 1;
      this.dropped[idx] = serving ? HOLDER : NOT_SERVING;
      this.haveCount[idx] = 0;
      this.uploads[idx] = 0;
      this.infCount[idx] = 0;
      if (serving) {
        this.bitOn(this.levelBits, 0, idx); // upload level 0
        this.freeOn(idx);
      }
      this.rstate[idx] = IDLE;
      this.supplyFlag[idx] = 0;
      if (this.pieceCount === 0) this.completeTotal++;
      this.markDirty(idx);
    }
    const r = e.idx;
    for (const p of have) {
      if (!Number.isInteger(p) || p < 0 || p >= this.known) continue;
      if (this.hasBit(this.haveBits, r * this.pw, p)) continue;
      this.gain(r, p);
    }
  }

  /**
   * A peer added with serving = false (its piece server was not up yet when
   * it joined) now serves: from here on it is a holder of what it has.
   * Ignored for unknown peers and for peers that already serve or were dropped.
   */
  setServing(peerId: string): void {
    const e = this.byId.get(peerId);
    if (e === undefined || this.dropped[e.idx] !== NOT_SERVING) return;
    const r = e.idx;
    this.dropped[r] = HOLDER;
    // Never a holder so far, so no uploads: upload level 0, every slot free.
    this.bitOn(this.levelBits, 0, r);
    this.freeOn(r);
    if (this.haveCount[r] > 0) {
      this.peerFreeSlots += this.maxUp;
      this.forEachHave(r, (p) => {
        this.bitOn(this.holderBits, p * this.qw, r);
        this.increment(p);
      });
      this.addSupply(r);
    }
  }

  /**
   * A peer left or died. Its downloads in flight are dropped (their holders'
   * slots freed), and so are the uploads in flight from it (those pieces become
   * schedulable again for their requesters). Unknown ids are ignored.
   */
  removePeer(peerId: string): void {
    const e = this.byId.get(peerId);
    if (e === undefined) return;
    const r = e.idx;
    const F = this.maxInFlight;
    const L = this.maxUp;
    // As a requester.
    for (let i = 0, n = this.infCount[r]; i < n; i++) {
      const p = this.infPiece[r * F + i];
      const h = this.infHolder[r * F + i];
      if (h === SN) this.freeSnSlot(p);
      else this.removeUpload(h, r, p);
      this.inFlightTotal--;
    }
    this.infCount[r] = 0;
    // As a holder.
    for (let i = 0, n = this.uploads[r]; i < n; i++) {
      const q = this.upReq[r * L + i];
      const p = this.upPiece[r * L + i];
      this.removeInFlight(q, p, r);
      this.bitOff(this.takenBits, q * this.pw, p);
      this.inFlightTotal--;
      this.peerUploadsTotal--;
      this.markDirty(q);
    }
    if (this.rstate[r] === BLOCKED) this.unblock(r);
    this.rstate[r] = IDLE; // a stale dirtyQ entry is skipped
    if (this.dropped[r] === 0) {
      if (this.haveCount[r] > 0) this.peerFreeSlots -= L - this.uploads[r];
      this.forEachHave(r, (p) => {
        this.bitOff(this.holderBits, p * this.qw, r);
        this.decrement(p);
      });
      // Pieces only it held among peers are the supernode's to seed again.
      if (this.haveCount[r] > 0) this.snSupply = true;
    }
    this.uploads[r] = 0;
    for (let k = 0; k < L; k++) this.bitOff(this.levelBits, k * this.qw, r);
    this.freeOff(r);
    this.haveBits.fill(0, r * this.pw, (r + 1) * this.pw);
    this.takenBits.fill(0, r * this.pw, (r + 1) * this.pw);
    if (this.pieceCount >= 0 && this.haveCount[r] >= this.pieceCount) this.completeTotal--;
    if (this.dropped[r] === 1) this.droppedTotal--;
    this.haveCount[r] = 0;
    this.dropped[r] = 0;
    this.active[r] = 0;
    // Requesters that avoid this peer must not avoid whoever reuses its index.
    if (e.failedBy !== null) {
      for (const qid of e.failedBy) {
        const q = this.byId.get(qid);
        if (q !== undefined && q.failBits !== null) q.failBits[r >>> 5] &= ~(1 << (r & 31));
      }
    }
    this.byId.delete(peerId);
    this.entries[r] = undefined;
    this.freeIdx.push(r);
  }

  /**
   * Outcome of an assignment. Success: the requester holds the piece and
   * becomes a holder of it. Failure: the piece is schedulable again for the
   * requester, the peer holder is avoided by it, and counted toward the
   * holderFailureLimit. Results that do not match an assignment in flight
   * (unknown peers, late or duplicate results) are ignored.
   */
  onResult(requester: string, piece: number, holder: string, success: boolean): void {
    const e = this.byId.get(requester);
    if (e === undefined) return;
    let he: PeerEntry | undefined;
    let h = SN;
    if (holder !== SUPERNODE_HOLDER_ID) {
      he = this.byId.get(holder);
      if (he === undefined) return;
      h = he.idx;
    }
    const r = e.idx;
    if (!this.removeInFlight(r, piece, h)) return;
    this.inFlightTotal--;
    if (h === SN) this.freeSnSlot(piece);
    else this.removeUpload(h, r, piece);
    this.markDirty(r);
    if (success) {
      this.succeededTotal++;
      this.gain(r, piece);
    } else {
      this.failedTotal++;
      this.bitOff(this.takenBits, r * this.pw, piece);
      if (he !== undefined) this.recordFailure(e, he);
    }
  }

  /**
   * Every assignment possible now, across all requesters; each is marked in
   * flight. Blocked requesters are offered new supply first (round robin over
   * calls, so none starves for supernode slots), then requesters that had
   * events, in event order.
   */
  schedule(): Assignment[] {
    const out: Assignment[] = [];
    this.epoch++;
    // Requesters that waited longest first: blocked ones that new supply fits.
    if ((this.supply.length > 0 || this.snSupply) && this.blocked.length > 0) this.serveBlocked(out);
    // Then requesters something happened to, in the order it happened.
    const q = this.dirtyQ;
    for (let i = 0; i < q.length; i++) {
      const r = q[i];
      if (this.rstate[r] !== DIRTY) continue; // removed since, or a duplicate
      this.rstate[r] = IDLE;
      this.walk(r, out);
    }
    q.length = 0;
    // All supply has now been offered to every requester that could use it.
    for (const h of this.supply) this.supplyFlag[h] = 0;
    this.supply.length = 0;
    this.snSupply = false;
    return out;
  }

  /** The requester holds every piece (false while the piece count is unknown, or for unknown peers). */
  isComplete(peerId: string): boolean {
    const e = this.byId.get(peerId);
    return e !== undefined && this.pieceCount >= 0 && this.haveCount[e.idx] >= this.pieceCount;
  }

  /** Number of usable holders of a piece, the supernode included (dropped peers are not counted). */
  holdersOf(piece: number): number {
    return Number.isInteger(piece) && piece >= 0 && piece < this.known ? this.cnt[piece] : 0;
  }

  /** The peer holds the piece. */
  has(peerId: string, piece: number): boolean {
    const e = this.byId.get(peerId);
    if (e === undefined || !Number.isInteger(piece) || piece < 0 || piece >= this.known) return false;
    return this.hasBit(this.haveBits, e.idx * this.pw, piece);
  }

  /** Pieces the peer holds. */
  piecesOf(peerId: string): number {
    const e = this.byId.get(peerId);
    return e === undefined ? 0 : this.haveCount[e.idx];
  }

  /** Assignments in flight to this requester, as (piece, holder) pairs. */
  inFlightOf(peerId: string): { piece: number; holder: string }[] {
    const e = this.byId.get(peerId);
    if (e === undefined) return [];
    const r = e.idx;
    const res: { piece: number; holder: string }[] = [];
    for (let i = 0; i < this.infCount[r]; i++) {
      const h = this.infHolder[r * this.maxInFlight + i];
      res.push({ piece: this.infPiece[r * this.maxInFlight + i], holder: this.holderName(h) });
    }
    return res;
  }

  /** The peer was dropped as a holder after failing holderFailureLimit distinct requesters. */
  isDroppedHolder(peerId: string): boolean {
    const e = this.byId.get(peerId);
    return e !== undefined && this.dropped[e.idx] === 1;
  }

  stats(): SchedulerStats {
    return {
      peers: this.byId.size,
      inFlight: this.inFlightTotal,
      pieceCount: this.pieceCount >= 0 ? this.pieceCount : null,
      knownPieces: this.known,
      supernodePieces: this.snPieces,
      supernodeUploads: this.snUploads,
      peerUploads: this.peerUploadsTotal,
      completePeers: this.completeTotal,
      droppedHolders: this.droppedTotal,
      blockedRequesters: this.blocked.length,
      assigned: this.assignedTotal,
      assignedFromPeers: this.assignedTotal - this.assignedSn,
      assignedFromSupernode: this.assignedSn,
      succeeded: this.succeededTotal,
      failed: this.failedTotal,
    };
  }

  // =======================================================================
  // Scheduling core
  // =======================================================================

  /** Free upload capacity exists somewhere (else every requester is legitimately blocked). */
  private hasCapacity(): boolean {
    return this.peerFreeSlots > 0 || (this.snUploads < this.maxUpSn && this.snPieces > 0);
  }

  /** Gives requester r what can be served now; leaves it IDLE (full or complete) or BLOCKED. */
  private walk(r: number, out: Assignment[]): void {
    if (this.active[r] === 0) return;
    if (this.pieceCount >= 0 && this.haveCount[r] >= this.pieceCount) return;
    if (this.infCount[r] < this.maxInFlight && this.hasCapacity()) this.fill(r, out);
    if (this.infCount[r] < this.maxInFlight) this.block(r);
  }

  /**
   * Offers the new supply to the requesters that were blocked before this
   * call, round robin. With few holders of new supply, a blocked requester is
   * walked again only if one of them is still free, not failed for it, and
   * holds a piece it lacks (exact, a few word ANDs per holder). With many, it
   * is cheaper to just walk every blocked requester.
   */
  private serveBlocked(out: Assignment[]): void {
    const L = this.maxUp;
    const pw = this.pw;
    const words = (this.known + 31) >>> 5;
    const live: number[] = [];
    for (const h of this.supply) {
      if (this.active[h] === 1 && this.dropped[h] === 0 && this.haveCount[h] > 0 && this.uploads[h] < L) live.push(h);
    }
    const sn = this.snSupply && this.snPieces > 0;
    if (live.length === 0 && !(sn && this.snUploads < this.maxUpSn)) return;
    const walkAll = live.length > SUPPLY_TEST_MAX;
    const stale = this.blocked.slice();
    const n = stale.length;
    const k0 = this.blockedCursor % n;
    const taken = this.takenBits;
    const have = this.haveBits;
    for (let j = 0; j < n; j++) {
      if (!this.hasCapacity()) break;
      const r = stale[k0 + j < n ? k0 + j : k0 + j - n];
      if (this.rstate[r] !== BLOCKED) continue;
      if (this.pieceCount >= 0 && this.haveCount[r] >= this.pieceCount) {
        this.unblock(r);
        continue;
      }
      if (!walkAll) {
        const rb = r * pw;
        const fail = (this.entries[r] as PeerEntry).failBits;
        let anyLive = false;
        let fits = false;
        if (sn && this.snUploads < this.maxUpSn) {
          anyLive = true;
          for (let w = 0; w < words && !fits; w++) fits = (this.snBits[w] & ~taken[rb + w]) !== 0;
        }
        for (let i = 0; i < live.length && !fits; i++) {
          const h = live[i];
          if (this.uploads[h] >= L) continue;
          anyLive = true;
          if (fail !== null && (fail[h >>> 5] & (1 << (h & 31))) !== 0) continue;
          const hb = h * pw;
          for (let w = 0; w < words && !fits; w++) fits = (have[hb + w] & ~taken[rb + w]) !== 0;
        }
        if (!anyLive) break;
        if (!fits) continue;
      }
      this.unblock(r);
      this.walk(r, out);
      this.blockedCursor = k0 + j + 1;
    }
  }

  private markDirty(r: number): void {
    const st = this.rstate[r];
    if (st === DIRTY) return;
    if (st === BLOCKED) this.unblock(r);
    this.rstate[r] = DIRTY;
    this.dirtyQ.push(r);
  }

  private block(r: number): void {
    this.rstate[r] = BLOCKED;
    this.blockedPos[r] = this.blocked.length;
    this.blocked.push(r);
  }

  private unblock(r: number): void {
    const i = this.blockedPos[r];
    const last = this.blocked.pop() as number;
    if (last !== r) {
      this.blocked[i] = last;
      this.blockedPos[last] = i;
    }
    this.rstate[r] = IDLE;
  }

  private addSupply(h: number): void {
    if (this.supplyFlag[h] === 0) {
      this.supplyFlag[h] = 1;
      this.supply.push(h);
    }
  }

  private freeSnSlot(p: number): void {
    const wasFull = this.snUploads-- === this.maxUpSn;
    const pieceWasFull = this.snPer[p]-- === this.snCopies;
    // A freed slot, or a freed copy of this piece, is new supply for blocked requesters.
    if (wasFull || pieceWasFull) this.snSupply = true;
  }

  /**
   * Gives requester r pieces until its slots are full or nothing more can be
   * served. Peers first: r takes the rarest pieces a free peer can serve;
   * only when no peer can serve it anything more does it take the rarest
   * pieces from the supernode. Rarest-first counting the supernode would
   * steer every requester to the newest pieces, which only the supernode
   * holds, and the swarm would not share at all.
   */
  private fill(r: number, out: Assignment[]): void {
    if (this.fillPass(r, out, true)) return;
    if (this.infCount[r] < this.maxInFlight && this.snUploads < this.maxUpSn && this.snPieces > 0) this.fillPass(r, out, false);
  }

  /**
   * Walks the pieces from the rarest (count 1) up. The order array is not
   * modified during a schedule() call (only successes change counts), so a
   * single pass suffices. True when r (or the whole call) is done.
   */
  private fillPass(r: number, out: Assignment[], peersOnly: boolean): boolean {
    const lo = this.lo;
    const cnt = this.cnt;
    const order = this.order;
    const known = this.known;
    // Requester-specific start inside each equal-count group (multiplicative hash).
    const rot = Math.imul(r + 1, 0x9e3779b1) >>> 0;
    let s = this.nextLive(lo[1]);
    while (s < known) {
      const c = cnt[order[s]];
      const bs = lo[c];
      const e = lo[c + 1];
      const mid = bs + (rot % (e - bs));
      // The group [bs, e) is scanned as [mid, e) then [bs, mid).
      if (this.scan(r, mid, e, out, peersOnly) || this.scan(r, bs, mid, out, peersOnly)) return true;
      s = this.nextLive(e);
    }
    return false;
  }

  /** Offers requester r the pieces at positions [from, to); true when r (or the whole call) is done. */
  private scan(r: number, from: number, to: number, out: Assignment[], peersOnly: boolean): boolean {
    const order = this.order;
    const taken = this.takenBits;
    const base = r * this.pw;
    const fail = (this.entries[r] as PeerEntry).failBits;
    for (let i = this.nextLive(from); i < to; i = this.nextLive(i + 1)) {
      const p = order[i];
      if ((taken[base + (p >>> 5)] & (1 << (p & 31))) !== 0) continue;
      // Held by the supernode alone: nothing for the peers-only pass.
      if (peersOnly && this.cnt[p] === ((this.snBits[p >>> 5] >>> (p & 31)) & 1)) continue;
      const h = this.pickHolder(p, i, fail, peersOnly);
      if (h === NONE) continue;
      this.assign(r, p, h);
      out.push({ requester: (this.entries[r] as PeerEntry).id, piece: p, holder: this.holderName(h) });
      if (this.infCount[r] >= this.maxInFlight || !this.hasCapacity()) return true;
    }
    return false;
  }

  /**
   * First position >= i whose piece is not dead in this call (or `known`).
   * Dead positions form forward chains, compressed as they are followed
   * (union-find), so skipping a run of dead pieces is amortized O(1).
   */
  private nextLive(i: number): number {
    const stamp = this.skipEpoch;
    const next = this.skipNext;
    const epoch = this.epoch;
    let root = i;
    while (stamp[root] === epoch) root = next[root];
    while (i !== root) {
      const n = next[i];
      next[i] = root;
      i = n;
    }
    return root;
  }

  /**
   * Least-loaded usable peer holder of p, else the supernode if it holds p and
   * has a free slot, else NONE. Marks p (at position `at`) dead for this call when no holder at
   * all (failed-for-this-requester ones included) has a free slot.
   */
  private pickHolder(p: number, at: number, fail: Uint32Array | null, peersOnly: boolean): number {
    const words = (this.peerHigh + 31) >>> 5;
    const sw = (words + 31) >>> 5;
    const qw = this.qw;
    const hb = this.holderBits;
    const hbase = p * qw;
    const free = this.freeBits;
    const sum = this.freeSummary;
    const levels = this.levelBits;
    let bestK = this.maxUp;
    let bestW = -1;
    let bestX = 0;
    let anyFree = false;
    // Visit the words that hold a free peer, starting at a rotating word so
    // that equal-load holders share the work; the first summary word is
    // visited twice: its high part first, its low part at the very end.
    const start = this.spin++ % words;
    let si = start >>> 5;
    const headMask = -1 << (start & 31);
    search: for (let it = 0; it <= sw; it++) {
      let m = sum[si];
      if (it === 0) m &= headMask;
      else if (it === sw) m &= ~headMask;
      while (m !== 0) {
        const low = m & -m;
        m ^= low;
        const w = (si << 5) + (31 - Math.clz32(low));
        let x = hb[hbase + w] & free[w];
        if (x === 0) continue;
        anyFree = true;
        if (fail !== null) x &= ~fail[w];
        if (x === 0) continue;
        for (let k = 0; k < bestK; k++) {
          const y = x & levels[k * qw + w];
          if (y !== 0) {
            bestK = k;
            bestW = w;
            bestX = y;
            break;
          }
        }
        if (bestK === 0) break search;
      }
      if (++si === sw) si = 0;
    }
    if (bestW >= 0) return (bestW << 5) + (31 - Math.clz32(bestX & -bestX));
    const snHas = (this.snBits[p >>> 5] >>> (p & 31)) & 1;
    // The supernode seeds: it sends p only while no peer this requester may
    // use holds it (busy or not), so its uplink carries each piece about once.
    const snSlot = snHas === 1 && this.snUploads < this.maxUpSn && this.snPer[p] < this.snCopies;
    if (!peersOnly && snSlot && (this.cnt[p] === 1 || !this.peerHolds(p, fail))) return SN;
    // Dead for the rest of this call only if no requester could get it: no
    // free peer at all and no supernode slot for it.
    if (!anyFree && !snSlot) {
      this.skipEpoch[at] = this.epoch;
      this.skipNext[at] = at + 1;
    }
    return NONE;
  }

  /** Some peer holds p that is not failed for the requester, busy or not. */
  private peerHolds(p: number, fail: Uint32Array | null): boolean {
    const words = (this.peerHigh + 31) >>> 5;
    const hb = this.holderBits;
    const base = p * this.qw;
    for (let w = 0; w < words; w++) {
      const x = fail === null ? hb[base + w] : hb[base + w] & ~fail[w];
      if (x !== 0) return true;
    }
    return false;
  }

  private assign(r: number, p: number, h: number): void {
    this.takenBits[r * this.pw + (p >>> 5)] |= 1 << (p & 31);
    const slot = r * this.maxInFlight + this.infCount[r]++;
    this.infPiece[slot] = p;
    this.infHolder[slot] = h;
    this.inFlightTotal++;
    this.assignedTotal++;
    if (h === SN) {
      this.snUploads++;
      this.snPer[p]++;
      this.assignedSn++;
      return;
    }
    const L = this.maxUp;
    const u = this.uploads[h];
    this.upReq[h * L + u] = r;
    this.upPiece[h * L + u] = p;
    this.uploads[h] = u + 1;
    this.peerUploadsTotal++;
    // Only non-dropped holders (which hold at least one piece) are ever picked.
    this.bitOff(this.levelBits, u * this.qw, h);
    if (u + 1 < L) this.bitOn(this.levelBits, (u + 1) * this.qw, h);
    else this.freeOff(h);
    this.peerFreeSlots--;
  }

  /** Frees holder h's upload slot for (r, p). */
  private removeUpload(h: number, r: number, p: number): void {
    const L = this.maxUp;
    const base = h * L;
    const n = this.uploads[h];
    for (let i = 0; i < n; i++) {
      if (this.upReq[base + i] === r && this.upPiece[base + i] === p) {
        this.upReq[base + i] = this.upReq[base + n - 1];
        this.upPiece[base + i] = this.upPiece[base + n - 1];
        this.uploads[h] = n - 1;
        this.peerUploadsTotal--;
        if (this.dropped[h] === 0) {
          if (n < L) this.bitOff(this.levelBits, n * this.qw, h);
          else {
            this.freeOn(h);
            this.addSupply(h);
          }
          this.bitOn(this.levelBits, (n - 1) * this.qw, h);
          this.peerFreeSlots++;
        }
        return;
      }
    }
  }

  /** Removes (p, h) from r's downloads in flight; false if it was not there. */
  private removeInFlight(r: number, p: number, h: number): boolean {
    const F = this.maxInFlight;
    const base = r * F;
    const n = this.infCount[r];
    for (let i = 0; i < n; i++) {
      if (this.infPiece[base + i] === p && this.infHolder[base + i] === h) {
        this.infPiece[base + i] = this.infPiece[base + n - 1];
        this.infHolder[base + i] = this.infHolder[base + n - 1];
        this.infCount[r] = n - 1;
        return true;
      }
    }
    return false;
  }

  /** Peer r now holds p. */
  private gain(r: number, p: number): void {
    const bit = 1 << (p & 31);
    const wi = r * this.pw + (p >>> 5);
    if ((this.haveBits[wi] & bit) !== 0) return;
    this.haveBits[wi] |= bit;
    this.takenBits[wi] |= bit;
    const hc = ++this.haveCount[r];
    if (this.pieceCount >= 0 && hc === this.pieceCount) this.completeTotal++;
    if (this.dropped[r] === 0) {
      this.holderBits[p * this.qw + (r >>> 5)] |= 1 << (r & 31);
      this.increment(p);
      if (hc === 1) this.peerFreeSlots += this.maxUp - this.uploads[r];
      if (this.uploads[r] < this.maxUp) this.addSupply(r);
    }
  }

  private recordFailure(req: PeerEntry, holder: PeerEntry): void {
    const h = holder.idx;
    if (req.failBits === null) req.failBits = new Uint32Array(this.qw);
    req.failBits[h >>> 5] |= 1 << (h & 31);
    if (holder.failedBy === null) holder.failedBy = new Set();
    holder.failedBy.add(req.id);
    if (this.dropped[h] === 0 && holder.failedBy.size >= this.failLimit) this.dropHolder(h);
  }

  /** Peer h stops being a holder for everyone; its uploads in flight run to their end. */
  private dropHolder(h: number): void {
    this.dropped[h] = 1;
    this.droppedTotal++;
    if (this.haveCount[h] > 0) this.peerFreeSlots -= this.maxUp - this.uploads[h];
    this.forEachHave(h, (p) => {
      this.bitOff(this.holderBits, p * this.qw, h);
      this.decrement(p);
    });
    for (let k = 0; k < this.maxUp; k++) this.bitOff(this.levelBits, k * this.qw, h);
    this.freeOff(h);
    if (this.haveCount[h] > 0) this.snSupply = true;
  }

  private holderName(h: number): string {
    return h === SN ? SUPERNODE_HOLDER_ID : (this.entries[h] as PeerEntry).id;
  }

  // =======================================================================
  // Pieces sorted by holder count
  // =======================================================================

  /** Piece p gained a holder: move it from the end of its bucket to the start of the next. */
  private increment(p: number): void {
    const c = this.cnt[p];
    if (c === this.maxC) {
      this.maxC++;
      if (this.maxC + 2 > this.lo.length) this.lo = grownInt32(this.lo, this.lo.length * 2);
      this.lo[this.maxC + 1] = this.known;
    }
    const e = this.lo[c + 1] - 1;
    this.swapPos(p, e);
    this.lo[c + 1] = e;
    this.cnt[p] = c + 1;
  }

  /** Piece p lost a holder: move it from the start of its bucket to the end of the previous. */
  private decrement(p: number): void {
    const c = this.cnt[p];
    const s = this.lo[c];
    this.swapPos(p, s);
    this.lo[c] = s + 1;
    this.cnt[p] = c - 1;
    while (this.maxC > 0 && this.lo[this.maxC] === this.known) this.maxC--;
  }

  private swapPos(p: number, at: number): void {
    const from = this.pos[p];
    if (from === at) return;
    const q = this.order[at];
    this.order[from] = q;
    this.pos[q] = from;
    this.order[at] = p;
    this.pos[p] = at;
  }

  /** Tracks pieces up to n-1, new ones with no holder (bucket 0). */
  private ensureKnown(n: number): void {
    if (n <= this.known) return;
    if (n > this.pieceCap) {
      let cap = this.pieceCap;
      while (cap < n) cap *= 2;
      this.growPieces(cap);
    }
    const add = n - this.known;
    if (add * this.maxC > n + this.maxC) {
      // Bulk: cheaper to append everything and counting-sort again.
      for (let p = this.known; p < n; p++) this.cnt[p] = 0;
      this.known = n;
      this.rebuildOrder();
      return;
    }
    for (let p = this.known; p < n; p++) {
      // Append at the end, then hop the new piece down over every non-zero
      // bucket: swap it with each bucket's first element and shift that bucket.
      const N = this.known;
      this.order[N] = p;
      this.pos[p] = N;
      this.cnt[p] = 0;
      this.known = N + 1;
      this.lo[this.maxC + 1] = N + 1;
      for (let c = this.maxC; c >= 1; c--) {
        const s = this.lo[c];
        this.swapPos(p, s);
        this.lo[c] = s + 1;
      }
    }
  }

  private rebuildOrder(): void {
    const n = this.known;
    let maxC = 0;
    for (let p = 0; p < n; p++) if (this.cnt[p] > maxC) maxC = this.cnt[p];
    if (maxC + 2 > this.lo.length) {
      let len = this.lo.length;
      while (len < maxC + 2) len *= 2;
      this.lo = new Int32Array(len);
    }
    const lo = this.lo;
    lo.fill(0, 0, maxC + 2);
    for (let p = 0; p < n; p++) lo[this.cnt[p] + 1]++;
    for (let c = 1; c <= maxC + 1; c++) lo[c] += lo[c - 1];
    // lo[c] now = first position of bucket c; use a moving copy to place pieces.
    const next = lo.slice(0, maxC + 1);
    for (let p = 0; p < n; p++) {
      const at = next[this.cnt[p]]++;
      this.order[at] = p;
      this.pos[p] = at;
    }
    this.maxC = maxC;
  }

  // =======================================================================
  // Storage
  // =======================================================================

  private growPieces(cap: number): void {
    const oldPw = this.pw;
    const oldCap = this.pieceCap;
    const pw = cap >>> 5;
    this.cnt = grownInt32(this.cnt, cap);
    this.snPer = grownInt32(this.snPer, cap);
    this.order = grownInt32(this.order, cap);
    this.pos = grownInt32(this.pos, cap);
    // One extra slot: position `known` is the never-stamped sentinel.
    this.skipEpoch = grownInt32(this.skipEpoch, cap + 1);
    this.skipNext = grownInt32(this.skipNext, cap + 1);
    this.snBits = regrid(this.snBits, 1, oldPw, 1, pw);
    this.holderBits = regrid(this.holderBits, oldCap, this.qw, cap, this.qw);
    this.haveBits = regrid(this.haveBits, this.peerCap, oldPw, this.peerCap, pw);
    this.takenBits = regrid(this.takenBits, this.peerCap, oldPw, this.peerCap, pw);
    this.pieceCap = cap;
    this.pw = pw;
  }

  private growPeers(cap: number): void {
    const oldQw = this.qw;
    const oldCap = this.peerCap;
    const qw = cap >>> 5;
    const F = this.maxInFlight;
    const L = this.maxUp;
    this.active = grownUint8(this.active, cap);
    this.dropped = grownUint8(this.dropped, cap);
    this.haveCount = grownInt32(this.haveCount, cap);
    this.uploads = grownInt32(this.uploads, cap);
    this.infCount = grownInt32(this.infCount, cap);
    this.rstate = grownUint8(this.rstate, cap);
    this.blockedPos = grownInt32(this.blockedPos, cap);
    this.supplyFlag = grownUint8(this.supplyFlag, cap);
    this.upReq = grownInt32(this.upReq, cap * L);
    this.upPiece = grownInt32(this.upPiece, cap * L);
    this.infPiece = grownInt32(this.infPiece, cap * F);
    this.infHolder = grownInt32(this.infHolder, cap * F);
    this.haveBits = regrid(this.haveBits, oldCap, this.pw, cap, this.pw);
    this.takenBits = regrid(this.takenBits, oldCap, this.pw, cap, this.pw);
    this.holderBits = regrid(this.holderBits, this.pieceCap, oldQw, this.pieceCap, qw);
    this.levelBits = regrid(this.levelBits, L, oldQw, L, qw);
    this.freeBits = regrid(this.freeBits, 1, oldQw, 1, qw);
    this.freeSummary = regrid(this.freeSummary, 1, (oldQw + 31) >>> 5, 1, (qw + 31) >>> 5);
    for (const e of this.byId.values()) {
      if (e.failBits !== null) {
        const b = new Uint32Array(qw);
        b.set(e.failBits);
        e.failBits = b;
      }
    }
    this.peerCap = cap;
    this.qw = qw;
  }

  // ---- bit helpers ---------------------------------------------------------

  private hasBit(a: Uint32Array, base: number, i: number): boolean {
    return (a[base + (i >>> 5)] & (1 << (i & 31))) !== 0;
  }

  private bitOn(a: Uint32Array, base: number, i: number): void {
    a[base + (i >>> 5)] |= 1 << (i & 31);
  }

  private bitOff(a: Uint32Array, base: number, i: number): void {
    a[base + (i >>> 5)] &= ~(1 << (i & 31));
  }

  private freeOn(h: number): void {
    const w = h >>> 5;
    this.freeBits[w] |= 1 << (h & 31);
    this.freeSummary[w >>> 5] |= 1 << (w & 31);
  }

  private freeOff(h: number): void {
    const w = h >>> 5;
    this.freeBits[w] &= ~(1 << (h & 31));
    if (this.freeBits[w] === 0) this.freeSummary[w >>> 5] &= ~(1 << (w & 31));
  }

  private forEachHave(r: number, fn: (p: number) => void): void {
    const base = r * this.pw;
    const words = (this.known + 31) >>> 5;
    for (let w = 0; w < words; w++) {
      let x = this.haveBits[base + w];
      while (x !== 0) {
        const low = x & -x;
        fn((w << 5) + (31 - Math.clz32(low)));
        x ^= low;
      }
    }
  }
}
