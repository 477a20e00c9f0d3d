/**
 * dfdaemon's way into the P2P network: blobs by digest, each one a task whose
 * identity is the digest, streamed to the client in order as pieces land.
 * One download per digest per process; later requests for the same blob join
 * it or read the finished file. Pieces are served to other peers from the
 * same files by an in-process uploader. A finished blob that nobody has
 * read or fetched pieces of for expireTimeMs leaves the swarm and the disk.
 */
import { EventEmitter } from 'node:events';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { pieceBuffers } from '../common/buffer-pool';
import { DEFAULTS } from '../common/constants';
import { DfError, toDfError } from '../common/errors';
import { parseDigest } from '../common/digest';
import type { Logger } from '../common/logger';
import { RateLimiter, uplinkLimiter } from '../common/ratelimit';
import { RangeNotSatisfiable, type BlobRange, type BlobRequest, type BlobSource, type OpenedBlob } from './blob-source';
import { P2PDownload } from './downloader';
import { PieceUploader, dataFilePath } from './uploader';
import { SupernodeClients } from '../supernode/client';
import { makeHomeDirs } from '../common/dirs';

export interface P2PBlobSourceOptions {
  /** Supernodes "host:port", tried in order. */
  nodes: string[];
  /** Directory for blob data (data/) served to other peers. */
  homeDir: string;
  /** Download limit for all blobs together, bytes/s. */
  rateLimitBytesPerSec: number;
  /** Upload limit of the piece server, bytes/s (0 = unlimited). */
  uploadRateBytesPerSec?: number;
  /** Port of the piece server (0 = any free port). */
  uploadPort?: number;
  /** A finished blob unused this long is deleted, ms; 0 or absent = kept until close(). */
  expireTimeMs?: number;
  logger: Logger;
}

/** Chunks handed to readers, each with the pooled buffer it is a view of. */
const lent = new WeakMap<Buffer, Buffer>();

function recycle(chunk: Buffer): void {
  const whole = lent.get(chunk);
  if (!whole) return;
  lent.delete(chunk);
  pieceBuffers.give(whole);
}

/** One blob's download, shared by every reader of that blob. */
class BlobEntry extends EventEmitter {
  taskId = '';
  node = '';
  failed?: DfError;
  complete = false;
  /** Bytes from offset 0 that are on disk and verified. */
  contiguous = 0;
  /** Clients reading it now. */
  readers = 0;
  /** Last read or piece request (ms since the epoch). */
  lastUsedAt = Date.now();

  constructor(readonly digest: string, readonly peerId: string, readonly download: P2PDownload, public dataPath = '') {
    super();
    this.setMaxListeners(0);
  }

  /** Total length, -1 until the supernode knows it. */
  get length(): number { return this.download.contentLength; }

  advance(): void {
    const { held, pieceSize } = this.download;
    if (this.length >= 0 && pieceSize > 0) {
      let n = Math.floor(this.contiguous / pieceSize);
      while (held.has(n)) n++;
      this.contiguous = Math.min(n * pieceSize, this.length);
    }
    this.emit('progress');
  }

  /** Resolves on the next change: more bytes, completion or failure. */
  changed(): Promise<void> {
    return new Promise((r) => this.once('progress', r));
  }
}

/** Events: 'expired' (digest) when a finished blob left the disk. */
export class P2PBlobSource extends EventEmitter implements BlobSource {
  private readonly entries = new Map<string, BlobEntry>();
  private readonly limiter: RateLimiter;
  private readonly uploader: PieceUploader;
  private readonly dataDir: string;
  private readonly clients = new SupernodeClients();
  private started?: Promise<number>;
  private closed = false;
  private sweepTimer?: NodeJS.Timeout;

  constructor(private readonly opts: P2PBlobSourceOptions) {
    super();
    this.limiter = new RateLimiter(opts.rateLimitBytesPerSec);
    this.dataDir = path.join(opts.homeDir, 'data');
    const up = opts.uploadRateBytesPerSec ?? DEFAULTS.dfgetUploadRateBytesPerSec;
    this.uploader = new PieceUploader({
      dataDir: this.dataDir, limiter: uplinkLimiter(up), logger: opts.logger,
      onServe: (taskId, peerId) => {
        for (const e of this.entries.values()) if (e.taskId === taskId && e.peerId === peerId) e.lastUsedAt = Date.now();
      },
    });
    const expire = opts.expireTimeMs ?? 0;
    if (expire > 0) {
      this.sweepTimer = setInterval(() => this.sweep(expire), Math.max(100, Math.min(expire / 2, 30_000)));
      this.sweepTimer.unref();
    }
  }

  /** Deletes the finished blobs nobody reads and nobody fetched pieces of for expireMs. */
  private sweep(expireMs: number): void {
    const now = Date.now();
    for (const [digest, e] of this.entries) {
      if (!e.complete || e.readers > 0 || now - e.lastUsedAt < expireMs) continue;
      this.entries.delete(digest);
      const idleMs = now - e.lastUsedAt;
      void (async () => {
        if (e.taskId && e.node) await this.clients.leave(e.node, e.peerId, e.taskId);
        if (e.dataPath) await fs.rm(e.dataPath, { force: true }).catch(() => undefined);
        this.opts.logger.info({ digest, idleMs }, 'blob expired: left its swarm and deleted');
        this.emit('expired', digest);
      })();
    }
  }

  /** Starts the piece server; open() calls it too. */
  async start(): Promise<number> {
    this.started ??= (async () => {
      // Blob files of an earlier run were never announced to this run's supernode: start clean.
      await fs.rm(this.dataDir, { recursive: true, force: true });
      makeHomeDirs(this.dataDir, `home directory ${this.opts.homeDir}`);
      const port = await this.uploader.start(this.opts.uploadPort ?? 0);
      // The first blob should not wait for the connection to the supernode.
      const first = this.opts.nodes[0];
      if (first) {
        void this.clients.warm(first, DEFAULTS.supernodeConnectTimeoutMs).then((ok) => {
          if (!ok && !this.closed) this.opts.logger.warn({ node: first }, 'supernode not reachable yet; blobs will try again, or come from the registry');
        });
      }
      return port;
    })();
    return this.started;
  }

  get uploadPort(): number { return this.uploader.port; }

  async open(req: BlobRequest, range?: BlobRange): Promise<OpenedBlob> {
    if (this.closed) throw new DfError('DF_ERR_CLOSED', 'blob source closed');
    parseDigest(req.digest);
    await this.start();
    let entry = this.entries.get(req.digest);
    if (!entry || entry.failed) entry = this.begin(req);
    entry.lastUsedAt = Date.now();
    while ((entry.length < 0 || !entry.dataPath) && !entry.failed) await entry.changed();
    if (entry.failed) throw entry.failed;
    const start = range?.start ?? 0;
    const end = Math.min(range?.end ?? entry.length - 1, entry.length - 1);
    if (start > end && entry.length > 0) throw new RangeNotSatisfiable(entry.length, `the range starts at byte ${start} of a blob of ${entry.length} bytes`);
    const { download } = entry;
    return {
      length: entry.length,
      // Few chunks read ahead: each is a pooled buffer until it is given back.
      body: Readable.from(this.read(entry, start, end), { highWaterMark: 2 }),
      pieces: () => ({ pieceSize: download.pieceSize, sha256: download.held }),
      recycle,
    };
  }

  private begin(req: BlobRequest): BlobEntry {
    const log = this.opts.logger.child({ digest: req.digest });
    const host = os.hostname().replace(/[^A-Za-z0-9.-]/g, '').slice(0, 40) || 'host';
    const peerId = `${host}-dfdaemon-${process.pid}-${randomBytes(4).toString('hex')}`;
    const download = new P2PDownload({
      nodes: this.opts.nodes, url: req.url, headers: req.headers, filter: [], identifier: req.digest,
      expectedDigest: req.digest, peerId, uploadPort: this.uploader.port,
      dataPath: (taskId) => dataFilePath(this.dataDir, taskId, peerId),
      limiter: this.limiter, logger: log, connectTimeoutMs: DEFAULTS.supernodeConnectTimeoutMs, clients: this.clients,
      onRegistered: (info) => {
        entry.taskId = info.taskId;
        entry.node = info.node;
        entry.dataPath = info.dataPath;
        entry.advance();
      },
    });
    const entry = new BlobEntry(req.digest, peerId, download);
    this.entries.set(req.digest, entry);
    download.on('length', () => entry.advance());
    download.on('piece', () => entry.advance());
    download.run().then(
      () => { entry.complete = true; entry.advance(); log.debug('blob complete'); },
      (err) => {
        entry.failed = toDfError(err);
        log.info({ code: entry.failed.code, err: entry.failed.message }, 'P2P blob download failed');
        if (this.entries.get(req.digest) === entry) this.entries.delete(req.digest);
        // Nothing of a failed blob stays to be served or read again.
        if (entry.dataPath) fs.rm(entry.dataPath, { force: true }).catch(() => undefined);
        if (entry.taskId && entry.node) void this.clients.leave(entry.node, peerId, entry.taskId);
        entry.emit('progress');
      },
    );
    return entry;
  }

  /** The bytes start..end (inclusive), each handed out once it is verified on disk. */
  private async *read(entry: BlobEntry, start: number, end: number): AsyncGenerator<Buffer> {
    if (end < start) return;
    entry.readers++;
    const fh = await fs.open(entry.dataPath, 'r').catch((err: unknown) => { entry.readers--; throw err; });
    try {
      let pos = start;
      const chunk = pieceBuffers.size;
      while (pos <= end) {
        if (entry.failed) throw entry.failed;
        // The last bytes wait for the whole download: only a finished task is a verified blob.
        const limit = end === entry.length - 1 && !entry.complete ? Math.min(entry.contiguous, entry.length - 1) : entry.contiguous;
        if (limit <= pos) { await entry.changed(); continue; }
        const n = Math.min(chunk, limit - pos, end + 1 - pos);
        const whole = pieceBuffers.take();
        const buf = whole.subarray(0, n);
        const { bytesRead } = await fh.read(buf, 0, n, pos);
        if (bytesRead !== n) throw new DfError('DF_ERR_INTERNAL', `short read of blob data at ${pos}`);
        pos += n;
        lent.set(buf, whole);
        yield buf;
      }
    } finally {
      entry.readers--;
      entry.lastUsedAt = Date.now();
      await fh.close();
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.sweepTimer);
    for (const e of this.entries.values()) if (!e.complete) e.download.cancel();
    await Promise.all([...this.entries.values()].filter((e) => e.taskId && e.node).map((e) => this.clients.leave(e.node, e.peerId, e.taskId)));
    this.entries.clear();
    this.clients.close();
    await this.uploader.close();
  }
}
