/**
 * One task on the supernode: its source fetch (or its cached file), its
 * scheduler, and the scheduling streams of the peers in its swarm.
 */
import type { ServerDuplexStream } from '@grpc/grpc-js';
import { SUPERNODE_HOLDER_ID } from '../common/constants';
import { joinHostPort } from '../common/net';
import type { DfError } from '../common/errors';
import type { Logger } from '../common/logger';
import type { SupernodeMetrics } from '../common/metrics';
import type { PeerMessage, PieceInfo, SupernodeMessage, TaskUpdate } from '../common/proto';
import type { SourceFetch } from './cdn';
import { TaskScheduler, type SchedulerOptions } from './scheduler';

export type PeerStream = ServerDuplexStream<PeerMessage, SupernodeMessage>;

export interface PeerEntry {
  peerId: string;
  ip: string;
  /** "ip:port" of the peer's piece server; '' until it serves. */
  addr: string;
  stream?: PeerStream;
  /** The peer has every piece; it stays a holder after its stream closes. */
  complete: boolean;
  /** When it registered (Date.now()): one that opens no stream within STREAM_GRACE_MS is dropped. */
  registeredAt: number;
}

/** How long a registered peer may take to open its scheduling stream before it counts as gone. */
export const STREAM_GRACE_MS = 60_000;

export interface TaskDeps {
  logger: Logger;
  metrics: SupernodeMetrics;
  /** "ip:port" peers dial to fetch from the supernode. */
  supernodeAddr: string;
  schedulerOptions?: Partial<SchedulerOptions>;
}

export class Task {
  state: 'fetching' | 'ready' | 'failed' = 'fetching';
  contentLength = -1;
  pieceSize = 0;
  /** Hex sha256 per piece known so far (all of them once ready). */
  pieces: string[] = [];
  error?: DfError;
  fetch?: SourceFetch;
  readonly peers = new Map<string, PeerEntry>();
  readonly scheduler: TaskScheduler;
  readonly log: Logger;
  /** Last registration for this task (ms since the epoch). */
  lastUsedAt = Date.now();
  /** When the file's mtime was last set to mark a use (it outlives a restart). */
  touchedAt = 0;
  /** Deleted by the cache GC: a registration that got this task must look again. */
  evicted = false;
  private kickQueued = false;

  constructor(readonly id: string, readonly filePath: string, private readonly deps: TaskDeps) {
    this.scheduler = new TaskScheduler(deps.schedulerOptions);
    this.log = deps.logger.child({ taskId: id });
  }

  get pieceCount(): number {
    if (this.contentLength < 0) return -1;
    return this.pieceSize > 0 ? Math.ceil(this.contentLength / this.pieceSize) : 0;
  }

  get sourceComplete(): boolean { return this.state === 'ready'; }

  /** Bytes of the file that are on disk and verified, from offset 0. */
  availableBytes(): number {
    if (this.state === 'ready') return this.contentLength;
    return Math.min(this.pieces.length * this.pieceSize, this.contentLength < 0 ? Infinity : this.contentLength);
  }

  pieceInfo(n: number): PieceInfo {
    const offset = n * this.pieceSize;
    const length = this.contentLength >= 0 ? Math.min(this.pieceSize, this.contentLength - offset) : this.pieceSize;
    return { number: n, offset, length, sha256: this.pieces[n] };
  }

  /** Marks the task as fully on disk (a cached task, or the fetch finished). */
  markReady(contentLength: number, pieceSize: number, pieces: string[]): void {
    const fresh = this.pieces.length;
    this.contentLength = contentLength;
    this.pieceSize = pieceSize;
    this.pieces = pieces;
    this.state = 'ready';
    this.scheduler.setPieceCount(pieces.length);
    for (let n = fresh; n < pieces.length; n++) this.scheduler.supernodeHas(n);
    this.broadcast(this.update());
    this.kick();
  }

  /** The source fetch runs, or some peer is downloading (or registered a moment ago and is about to). */
  busy(now = Date.now()): boolean {
    if (this.state === 'fetching') return true;
    for (const p of this.peers.values()) if (p.stream || (!p.complete && now - p.registeredAt < STREAM_GRACE_MS)) return true;
    return false;
  }

  /**
   * Forgets peers that registered and never opened their stream within
   * STREAM_GRACE_MS (a dfget killed in between): they would hold the task
   * busy, and their entries would pile up, for ever.
   */
  dropSilentPeers(now = Date.now()): void {
    // Deleting the entry being visited is safe in a Map iteration.
    for (const p of this.peers.values()) {
      if (!p.stream && !p.complete && now - p.registeredAt >= STREAM_GRACE_MS) this.removePeer(p.peerId, 'registered but never opened its stream');
    }
  }

  /** A piece arrived from the source. */
  pieceArrived(n: number, sha256: string): void {
    this.pieces[n] = sha256;
    this.scheduler.supernodeHas(n);
    this.kick();
  }

  setLength(contentLength: number, pieceSize: number): void {
    this.contentLength = contentLength;
    this.pieceSize = pieceSize;
    if (contentLength >= 0) this.scheduler.setPieceCount(this.pieceCount);
  }

  fail(err: DfError): void {
    if (this.state === 'failed') return;
    this.state = 'failed';
    this.error = err;
    this.log.warn({ code: err.code, err: err.message }, 'task failed');
    const msg = this.update();
    for (const p of this.peers.values()) {
      if (p.stream && !p.stream.writableEnded) {
        p.stream.write({ update: msg });
        p.stream.end();
      }
    }
  }

  update(): TaskUpdate {
    return {
      contentLength: this.contentLength,
      pieceCount: this.pieceCount,
      sourceComplete: this.sourceComplete,
      errorCode: this.error?.code ?? '',
      errorMessage: this.error?.message ?? '',
    };
  }

  broadcast(update: TaskUpdate): void {
    for (const p of this.peers.values()) {
      if (p.stream && !p.stream.writableEnded) p.stream.write({ update });
    }
  }

  addPeerStream(entry: PeerEntry, have: number[]): void {
    this.scheduler.addPeer(entry.peerId, have.filter((n) => Number.isInteger(n) && n >= 0 && n < this.pieces.length), entry.addr !== '');
    this.deps.metrics.peers.inc();
    entry.stream!.write({ update: this.update() });
    this.kick();
  }

  /** A peer that registered before its piece server was up now serves on port. */
  peerServing(peerId: string, port: number): void {
    const p = this.peers.get(peerId);
    if (!p || p.addr !== '') return;
    p.addr = joinHostPort(p.ip, port);
    this.scheduler.setServing(peerId);
    this.log.debug({ peerId, addr: p.addr }, 'peer serves');
    this.kick();
  }

  /** The peer's stream closed: a peer that has everything stays a holder; any other leaves. */
  streamClosed(peerId: string, stream: PeerStream, why: string): void {
    const p = this.peers.get(peerId);
    // Only the stream the peer has now counts (not one it was refused a second time with).
    if (!p || p.stream !== stream) return;
    p.stream = undefined;
    this.deps.metrics.peers.dec();
    this.log.debug({ peerId, why, complete: p.complete }, 'scheduling stream closed');
    if (!p.complete) this.removePeer(peerId, `stream ${why} before the peer had every piece`);
  }

  removePeer(peerId: string, why: string): void {
    const p = this.peers.get(peerId);
    if (!p) return;
    this.log.debug({ peerId, why }, 'peer left the task');
    if (p.stream) {
      this.deps.metrics.peers.dec();
      if (!p.stream.writableEnded) p.stream.end();
    }
    this.peers.delete(peerId);
    this.scheduler.removePeer(peerId);
    this.kick();
  }

  onResult(peerId: string, piece: number, holder: string, success: boolean): void {
    this.scheduler.onResult(peerId, piece, holder, success);
    this.deps.metrics.pieceResults.inc({ holder: holder === SUPERNODE_HOLDER_ID ? 'supernode' : 'peer', result: success ? 'success' : 'failure' });
    const p = this.peers.get(peerId);
    if (p && success && this.scheduler.isComplete(peerId)) p.complete = true;
    this.kick();
  }

  /** Runs the scheduler once per event loop turn, however many events came in. */
  kick(): void {
    if (this.kickQueued || this.state === 'failed') return;
    this.kickQueued = true;
    setImmediate(() => {
      this.kickQueued = false;
      if (this.state !== 'failed') this.dispatch();
    });
  }

  private dispatch(): void {
    for (const a of this.scheduler.schedule()) {
      const req = this.peers.get(a.requester);
      const holderAddr = a.holder === SUPERNODE_HOLDER_ID ? this.deps.supernodeAddr : this.peers.get(a.holder)?.addr;
      if (!req?.stream || req.stream.writableEnded || !holderAddr) {
        // The requester or the holder vanished between the event and now: undo the assignment.
        this.scheduler.onResult(a.requester, a.piece, a.holder, false);
        continue;
      }
      this.deps.metrics.piecesScheduled.inc({ holder: a.holder === SUPERNODE_HOLDER_ID ? 'supernode' : 'peer' });
      req.stream.write({ assignment: { piece: this.pieceInfo(a.piece), holderId: a.holder, holderAddr } });
    }
  }

  close(): void {
    this.fetch?.cancel();
    for (const p of this.peers.values()) if (p.stream && !p.stream.writableEnded) p.stream.end();
    this.peers.clear();
  }
}
