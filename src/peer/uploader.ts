/**
 * A peer's piece server: other peers fetch the pieces this host holds with
 * GET /pieces/<taskId>?peer=<peerId> and a Range header. The supernode only
 * points requesters at pieces this peer reported as verified, so serving a
 * range of the data file is safe; the requester checks every digest anyway.
 */
import * as http from 'node:http';
import type * as net from 'node:net';
import * as path from 'node:path';
import { statSync } from 'node:fs';
import type { Logger } from '../common/logger';
import { requestUrl, sendText } from '../common/file-server';
import { RangeFront, sendTarget, type RangeTarget } from '../common/range-front';
import type { RateLimiter } from '../common/ratelimit';
import { makeDirs } from '../common/dirs';

const PIECE_PATH = /^\/pieces\/([a-f0-9]{64})$/;
const PEER_ID_RE = /^[A-Za-z0-9._:@-]{1,128}$/;
/** A piece request's target as our piece client sends it, for the front (anything else goes to the HTTP handler). */
const FAST_TARGET = /^\/pieces\/([a-f0-9]{64})\?peer=([A-Za-z0-9._%-]{1,384})$/;
const KEEP_ALIVE_MS = 30_000;
/** Longest a piece server handed over waits for its responses under way before it cuts them. */
const HAND_OVER_DRAIN_MS = 5_000;

/** Where a peer keeps the bytes of a task it downloads and serves. */
export function dataFilePath(dataDir: string, taskId: string, peerId: string): string {
  return path.join(dataDir, `${taskId}.${peerId}`);
}

export interface UploaderOptions {
  dataDir: string;
  limiter?: RateLimiter;
  logger: Logger;
  /** Called on every request: the alive timer of a detached uploader restarts on use. */
  onActivity?: () => void;
  /** Called for each piece request of a file this uploader holds (dfdaemon keeps such a file longer). */
  onServe?: (taskId: string, peerId: string) => void;
  /** Extra routes (the detached uploader adds POST /alive). Return true when handled. */
  extraRoute?: (req: http.IncomingMessage, res: http.ServerResponse, url: URL) => boolean;
}

export class PieceUploader {
  private front?: RangeFront;
  port = 0;
  uploadedBytes = 0;
  private active = 0;
  /** Called once no upload is under way (see handOver). */
  private quiet?: () => void;

  constructor(private readonly opts: UploaderOptions) {}

  get activeUploads(): number { return this.active + (this.front?.active ?? 0); }

  /**
   * Listens on port (0: any), or on the listening socket another process
   * handed over. Piece requests are answered by a RangeFront; the HTTP
   * server behind it (never listening itself) takes the rest.
   */
  async start(port: number | net.Server = 0, host = '0.0.0.0'): Promise<number> {
    const server = http.createServer((req, res) => {
      this.opts.onActivity?.();
      this.active++;
      res.once('close', () => {
        this.active--;
        this.opts.onActivity?.();
        if (this.activeUploads === 0) this.quiet?.();
      });
      this.handle(req, res).catch((err) => {
        this.opts.logger.debug({ err: String(err) }, 'upload ended early');
        if (!res.headersSent) sendText(res, 500, 'internal error'); else res.destroy();
      });
    });
    server.keepAliveTimeout = KEEP_ALIVE_MS;
    const front = new RangeFront(server, {
      resolve: (target) => this.resolve(target),
      limiter: this.opts.limiter,
      onBytes: (n) => { this.uploadedBytes += n; },
      onActivity: this.opts.onActivity,
      idleTimeoutMs: KEEP_ALIVE_MS,
      logger: this.opts.logger,
    });
    this.front = front;
    if (typeof port !== 'number') {
      // Served from now on, before anything is awaited (see RangeFront.adopt).
      this.port = front.adopt(port);
      makeDirs(this.opts.dataDir);
      return this.port;
    }
    makeDirs(this.opts.dataDir);
    this.port = await front.listen(port, host);
    return this.port;
  }

  /**
   * Gives the listening socket to another process and stops serving: `send`
   * passes it on (child_process send with a server); then no connection is
   * taken here any more, idle ones close, and the responses under way finish
   * (a client's next request goes to the new owner of the port), or are
   * cut after a few seconds (a client that stopped reading). Resolves once
   * every connection is closed.
   */
  async handOver(send: (listener: net.Server) => Promise<void>): Promise<void> {
    const f = this.front;
    if (!f) return;
    await send(f.listener);
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      (async () => {
        await f.drain();
        if (this.activeUploads > 0) await new Promise<void>((resolve) => { this.quiet = resolve; });
      })(),
      new Promise<void>((resolve) => { timer = setTimeout(resolve, HAND_OVER_DRAIN_MS); }),
    ]);
    clearTimeout(timer);
    this.quiet = undefined;
    await this.close();
  }

  /** The data file a piece request names, when it is here (for the front). */
  private resolve(target: string): RangeTarget | undefined {
    const m = FAST_TARGET.exec(target);
    if (!m) return undefined;
    let peerId: string;
    try {
      peerId = decodeURIComponent(m[2]);
    } catch {
      return undefined;
    }
    return PEER_ID_RE.test(peerId) ? this.held(m[1], peerId) : undefined;
  }

  /** The data file of a task this uploader holds for peerId, or undefined. */
  private held(taskId: string, peerId: string): RangeTarget | undefined {
    const filePath = dataFilePath(this.opts.dataDir, taskId, peerId);
    let size: number;
    try {
      // Synchronous: a stat of a local file takes microseconds (see sendFileRange).
      size = statSync(filePath).size;
    } catch {
      return undefined;
    }
    this.opts.onServe?.(taskId, peerId);
    return { filePath, available: size, total: size };
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = requestUrl(req, res);
    if (!url) return;
    if (this.opts.extraRoute?.(req, res, url)) return;
    if (url.pathname === '/healthz') return sendText(res, 200, 'ok');
    if (req.method !== 'GET') return sendText(res, 405, 'method not allowed');
    const m = PIECE_PATH.exec(url.pathname);
    const peerId = url.searchParams.get('peer') ?? '';
    if (!m || !PEER_ID_RE.test(peerId)) return sendText(res, 404, 'not found');
    const target = this.held(m[1], peerId);
    if (!target) return sendText(res, 404, 'task not held here');
    await sendTarget(req, res, target, {
      limiter: this.opts.limiter,
      onBytes: (n) => { this.uploadedBytes += n; },
    });
  }

  async close(): Promise<void> {
    const f = this.front;
    if (!f) return;
    this.front = undefined;
    await f.close();
  }
}
