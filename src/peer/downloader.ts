/**
 * One P2P download: register with a supernode, follow its piece assignments,
 * fetch each piece from its holder by HTTP range, verify its sha256, write it
 * at its offset, report the result. Resolves when every piece is held.
 */
import { EventEmitter, setMaxListeners } from 'node:events';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import { status as grpcStatus } from '@grpc/grpc-js';
import { SUPERNODE_HOLDER_ID } from '../common/constants';
import { DfError, toDfError, isErrorCode } from '../common/errors';
import type { Logger } from '../common/logger';
import type { RateLimiter } from '../common/ratelimit';
import { writeBatches } from '../common/buffer-pool';
import type { PieceAssignment, RegisterRequest, RegisterResponse, SupernodeMessage, TaskUpdate } from '../common/proto';
import { SupernodeClients, type PiecesCall, type SupernodeClient } from '../supernode/client';
import { PieceClient } from './piece-client';

/** Bytes of a piece gathered before they are written out together (see writeBatches). */
const WRITE_BATCH_BYTES = writeBatches.size;
/** Longest a complete download waits for its starting piece server to announce the port. */
const SERVING_WAIT_MS = 15_000;
/** Longest silence from a holder before its piece fails, ms. */
const PIECE_TIMEOUT_MS = 15_000;

/** What the download registers with (see RegisterRequest in the proto), and how it runs. */
export interface P2PDownloadOptions extends Pick<RegisterRequest, 'url' | 'headers' | 'filter' | 'identifier' | 'expectedDigest' | 'peerId'> {
  /** Supernodes "host:port", tried in order. */
  nodes: string[];
  /** Port of this host's piece server; 0 while it starts (announce it with serving()). */
  uploadPort: number;
  /** Where pieces are written; created when the task is known. */
  dataPath: (taskId: string) => string;
  limiter?: RateLimiter;
  logger: Logger;
  /** How long to wait for a supernode to answer a registration, ms. */
  connectTimeoutMs: number;
  /** Longest time without a verified piece before the download is given up, ms. */
  stallTimeoutMs?: number;
  /** Shared supernode connections; without them the download opens and closes its own. */
  clients?: SupernodeClients;
  /** Called once the supernode accepted the registration (before any piece). */
  onRegistered?: (info: RegisterResponse & { node: string; dataPath: string }) => void | Promise<void>;
}

export interface P2PResult {
  taskId: string;
  contentLength: number;
  dataPath: string;
  node: string;
  /** Bytes fetched from other peers and from the supernode. */
  fromPeers: number;
  fromSupernode: number;
}

/** Events: 'piece' (number, offset, length) once a piece is verified and written. */
export class P2PDownload extends EventEmitter {
  taskId = '';
  contentLength = -1;
  pieceSize = 0;
  pieceCount = -1;
  /** The pieces held (verified and written), each with the sha256 it was verified with. */
  readonly held = new Map<number, string>();
  private call?: PiecesCall;
  private client?: SupernodeClient;
  private readonly clients: SupernodeClients;
  private readonly ownClients: boolean;
  private fh?: fsp.FileHandle;
  private readonly pieces = new PieceClient();
  private readonly badHolders = new Set<string>();
  private finished = false;
  /** Why the download was stopped, when it was (cancel() may come before run() got this far). */
  private failure?: DfError;
  private streamClosed = false;
  private stallTimer?: NodeJS.Timeout;
  private settle!: { resolve: () => void; reject: (e: DfError) => void };
  private fromPeers = 0;
  private fromSupernode = 0;
  private readonly abort = new AbortController();
  /** Port of the piece server announced after registering, once the stream is open. */
  private servingPort = 0;
  private servingGivenUp = false;
  private servingSettled?: () => void;

  constructor(private readonly opts: P2PDownloadOptions) {
    super();
    this.clients = opts.clients ?? new SupernodeClients();
    this.ownClients = !opts.clients;
    // Every piece request listens on this one signal.
    setMaxListeners(0, this.abort.signal);
  }

  async run(): Promise<P2PResult> {
    const { opts } = this;
    const { client, res, node, ip } = await this.registerAnywhere();
    this.client = client;
    this.taskId = res.taskId;
    const dataPath = opts.dataPath(res.taskId);
    const log = opts.logger.child({ taskId: res.taskId, peerId: opts.peerId });
    try {
      this.fh = await fsp.open(dataPath, 'w+');
      this.applyLength(res.contentLength, res.pieceSize);
      await opts.onRegistered?.({ ...res, node, dataPath });
      log.debug({ node, ip, contentLength: res.contentLength, pieceSize: res.pieceSize }, 'registered');
      await new Promise<void>((resolve, reject) => {
        this.settle = { resolve, reject };
        if (this.failure) { reject(this.failure); return; }
        this.openStream(log);
        this.checkDone();
      });
      return { taskId: res.taskId, contentLength: this.contentLength, dataPath, node, fromPeers: this.fromPeers, fromSupernode: this.fromSupernode };
    } finally {
      await this.cleanup();
    }
  }

  /**
   * This host's piece server is up (the download registered with port 0):
   * tells the supernode, which then lets other peers fetch from it.
   */
  serving(port: number): void {
    if (this.opts.uploadPort > 0 || this.servingPort > 0) return;
    this.servingPort = port;
    this.sendServing();
    this.servingSettled?.();
  }

  /** No piece server will come (its start failed): the download stops waiting for one. */
  notServing(): void {
    this.servingGivenUp = true;
    this.servingSettled?.();
  }

  /** A complete download whose piece server is still starting keeps its stream open to announce the port. */
  private awaitsServing(): boolean {
    return this.opts.uploadPort === 0 && this.servingPort === 0 && !this.servingGivenUp && !this.abort.signal.aborted;
  }

  private sendServing(): void {
    if (this.servingPort > 0 && this.call && !this.call.writableEnded) this.call.write({ serving: { peerPort: this.servingPort } });
  }

  /** Stops the download; run() rejects with the given error. */
  cancel(err: DfError = new DfError('DF_ERR_CLOSED', 'download cancelled')): void {
    this.finish(err);
    this.notServing();
  }

  private async registerAnywhere(): Promise<{ client: SupernodeClient; res: RegisterResponse; node: string; ip: string }> {
    const { opts } = this;
    let last: DfError = new DfError('DF_ERR_SUPERNODE_UNAVAILABLE', 'no supernode given');
    for (const node of opts.nodes) {
      const client = this.clients.get(node);
      try {
        const ip = await this.clients.localAddress(node, opts.connectTimeoutMs);
        const res = await client.register({
          url: opts.url, headers: opts.headers, filter: opts.filter, identifier: opts.identifier,
          expectedDigest: opts.expectedDigest, peerId: opts.peerId, peerIp: ip, peerPort: opts.uploadPort,
          hostname: os.hostname(),
        }, opts.connectTimeoutMs * 4);
        return { client, res, node, ip };
      } catch (err) {
        last = toDfError(err, 'DF_ERR_SUPERNODE_UNAVAILABLE');
        if (last.code === 'DF_ERR_SUPERNODE_UNAVAILABLE') this.clients.drop(node);
        opts.logger.debug({ node, code: last.code, err: last.message }, 'registration failed');
        // A source error is the same on every supernode: no point asking the next one.
        if (last.code.startsWith('DF_ERR_SOURCE') || last.code === 'DF_ERR_INVALID_URL' || last.code === 'DF_ERR_INVALID_ARGUMENT') throw last;
      }
    }
    throw last;
  }

  private applyLength(contentLength: number, pieceSize: number): void {
    if (pieceSize > 0) this.pieceSize = pieceSize;
    if (contentLength >= 0 && this.contentLength < 0) {
      this.contentLength = contentLength;
      this.pieceCount = this.pieceSize > 0 ? Math.ceil(contentLength / this.pieceSize) : 0;
      this.emit('length', contentLength);
    }
  }

  private openStream(log: Logger): void {
    const call = this.client!.pieces();
    this.call = call;
    call.on('data', (msg: SupernodeMessage) => {
      if (msg.update) this.onUpdate(msg.update);
      else if (msg.assignment) this.fetchPiece(msg.assignment, log);
    });
    // The call's final status says why it ended ('end' can come before the
    // 'error' that carries the reason, so the status is what counts).
    call.on('error', () => { this.streamClosed = true; });
    call.on('end', () => { this.streamClosed = true; });
    call.on('status', (st: { code: number; details: string }) => {
      this.streamClosed = true;
      if (this.finished) return;
      if (st.code === grpcStatus.OK) {
        this.finish(new DfError('DF_ERR_SUPERNODE_UNAVAILABLE', 'supernode closed the scheduling stream'));
        return;
      }
      const e = toDfError(Object.assign(new Error(st.details), st), 'DF_ERR_SUPERNODE_UNAVAILABLE');
      this.finish(e.code === 'DF_ERR_INTERNAL' ? new DfError('DF_ERR_SUPERNODE_UNAVAILABLE', `scheduling stream broke: ${st.details}`) : e);
    });
    call.write({ hello: { taskId: this.taskId, peerId: this.opts.peerId, have: [] } });
    this.sendServing();
    this.armStall();
  }

  private onUpdate(u: TaskUpdate): void {
    if (u.errorCode) {
      const code = isErrorCode(u.errorCode) ? u.errorCode : 'DF_ERR_TASK_FAILED';
      this.finish(new DfError(code, `supernode: ${u.errorMessage || u.errorCode}`));
      return;
    }
    this.applyLength(u.contentLength, 0);
    this.checkDone();
  }

  private fetchPiece(a: PieceAssignment, log: Logger): void {
    const piece = a.piece;
    if (this.finished || !piece || this.held.has(piece.number)) return;
    const started = Date.now();
    this.fetchInto(a).then(
      (length) => {
        if (this.finished) return;
        this.held.set(piece.number, piece.sha256);
        if (a.holderId === SUPERNODE_HOLDER_ID) this.fromSupernode += length; else this.fromPeers += length;
        this.report(piece.number, a.holderId, true, '', started);
        log.debug({ piece: piece.number, holder: a.holderId, ms: Date.now() - started }, 'piece done');
        this.armStall();
        this.emit('piece', piece.number, piece.offset, length);
        this.checkDone();
      },
      (err) => {
        if (this.finished) return;
        const e = toDfError(err, 'DF_ERR_PEER_UNREACHABLE');
        // This host cannot write its data file (disk full, ...): no other holder can help.
        if (e.code === 'DF_ERR_OUTPUT_PATH') { this.finish(e); return; }
        if (e.code === 'DF_ERR_PIECE_DIGEST_MISMATCH') this.badHolders.add(a.holderId);
        log.warn({ piece: piece.number, holder: a.holderId, code: e.code, err: e.message }, 'piece fetch failed');
        this.report(piece.number, a.holderId, false, e.code, started);
      },
    ).catch((err) => this.finish(toDfError(err)));
  }

  /**
   * Streams a piece from its holder to its offset in the data file, hashing
   * on the way, and resolves with its length once the sha256 matched. Memory
   * stays at one shared read buffer, whatever the piece size and count.
   * Bytes of a piece that fails are on disk but never counted as held (so
   * never served or read); fetching the piece again overwrites them.
   */
  private async fetchInto(a: PieceAssignment): Promise<number> {
    const { piece } = a;
    if (!/^[a-f0-9]{64}$/.test(piece.sha256) || piece.length <= 0) {
      throw new DfError('DF_ERR_INVALID_ARGUMENT', `assignment for piece ${piece.number} has no valid digest or length`);
    }
    if (this.badHolders.has(a.holderId)) throw new DfError('DF_ERR_PIECE_DIGEST_MISMATCH', `holder ${a.holderId} sent corrupt bytes before`);
    const path = a.holderId === SUPERNODE_HOLDER_ID
      ? `/pieces/${this.taskId}`
      : `/pieces/${this.taskId}?peer=${encodeURIComponent(a.holderId)}`;
    const hash = createHash('sha256');
    const fd = this.fh!.fd;
    let filled = 0;
    // Chunks are copied into a batch and written together: reads from a
    // shaped link are a few KiB each, and one write per batch costs less than
    // one per read.
    const batch = writeBatches.take();
    const batchBytes = Math.min(WRITE_BATCH_BYTES, piece.length);
    let used = 0;
    const flush = () => {
      if (used === 0) return;
      const pos = piece.offset + filled - used;
      try {
        for (let at = 0; at < used;) at += fs.writeSync(fd, batch, at, used - at, pos + at);
      } catch (err) {
        throw new DfError('DF_ERR_OUTPUT_PATH', `writing piece ${piece.number} to ${this.opts.dataPath(this.taskId)} failed: ${(err as Error).message}`);
      }
      used = 0;
    };
    try {
      await this.pieces.fetch({
        addr: a.holderAddr, path, offset: piece.offset, length: piece.length,
        limiter: this.opts.limiter && !this.opts.limiter.unlimited ? this.opts.limiter : undefined,
        signal: this.abort.signal, timeoutMs: PIECE_TIMEOUT_MS,
        // Synchronous, straight from the read buffer, which is reused after.
        onData: (chunk) => {
          hash.update(chunk);
          let at = 0;
          while (at < chunk.length) {
            const n = Math.min(chunk.length - at, batchBytes - used);
            chunk.copy(batch, used, at, at + n);
            used += n;
            at += n;
            filled += n;
            if (used === batchBytes) flush();
          }
        },
      });
      flush();
    } finally {
      // Writes are synchronous, so nothing refers to the batch any more.
      writeBatches.give(batch);
    }
    if (filled !== piece.length) throw new DfError('DF_ERR_PEER_UNREACHABLE', `holder ${a.holderAddr} sent ${filled} of ${piece.length} bytes`);
    if (hash.digest('hex') !== piece.sha256) {
      this.badHolders.add(a.holderId);
      throw new DfError('DF_ERR_PIECE_DIGEST_MISMATCH', `piece ${piece.number} from ${a.holderAddr} failed its sha256`);
    }
    return filled;
  }

  private report(piece: number, holderId: string, success: boolean, errorCode: string, started: number): void {
    if (!this.call || this.call.writableEnded) return;
    this.call.write({ result: { piece, holderId, success, errorCode, costMs: Date.now() - started } });
  }

  private checkDone(): void {
    if (!this.finished && this.pieceCount >= 0 && this.held.size >= this.pieceCount) this.finish();
  }

  private armStall(): void {
    const ms = this.opts.stallTimeoutMs ?? 60_000;
    if (this.stallTimer) this.stallTimer.refresh();
    else this.stallTimer = setTimeout(() => this.finish(new DfError('DF_ERR_P2P_FAILED', `no piece arrived for ${Math.round(ms / 1000)} s`)), ms);
  }

  private finish(err?: DfError): void {
    if (this.finished) return;
    this.finished = true;
    this.failure = err;
    if (this.stallTimer) clearTimeout(this.stallTimer);
    if (err) this.abort.abort();
    // A complete download whose piece server is not up yet ends its stream in
    // cleanup(), after the port went out.
    if (this.call && !this.call.writableEnded && (err || !this.awaitsServing())) this.call.end();
    if (err) this.settle?.reject(err); else this.settle?.resolve();
  }

  private async cleanup(): Promise<void> {
    if (!this.finished) this.finish(new DfError('DF_ERR_CLOSED', 'download ended'));
    const call = this.call;
    if (call && !this.streamClosed && this.awaitsServing()) {
      // Without its port the supernode would never send anyone to this host.
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, SERVING_WAIT_MS);
        this.servingSettled = () => { clearTimeout(t); resolve(); };
        call.once('status', this.servingSettled);
        call.once('error', this.servingSettled);
      });
      this.servingSettled = undefined;
      if (!call.writableEnded) call.end();
    }
    if (call && !this.abort.signal.aborted && !this.streamClosed) {
      // Let the supernode read our last results and close its side: cancelling
      // at once could drop them, and then we would not count as a holder.
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 2_000);
        call.once('end', () => { clearTimeout(t); resolve(); });
        call.once('error', () => { clearTimeout(t); resolve(); });
        call.resume();
      });
    }
    call?.cancel();
    this.pieces.close();
    if (this.ownClients) this.clients.close();
    this.fh?.close().catch(() => undefined);
  }
}
