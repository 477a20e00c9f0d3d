/**
 * The CDN role: fetch a source once, cut it into pieces on disk, and announce
 * each piece as soon as its bytes are written and hashed, so peers can start
 * on piece 0 while the rest is still arriving.
 */
import { EventEmitter } from 'node:events';
import { createHash, type Hash } from 'node:crypto';
import { writeSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import type { Dispatcher } from 'undici';
import { DfError, toDfError } from '../common/errors';
import { DEFAULTS } from '../common/constants';
import { openSource, resumableBody } from '../common/http';
import type { RateLimiter } from '../common/ratelimit';
import type { Logger } from '../common/logger';

/** Piece size for --piece-size auto: about autoPieceTarget pieces, a power of two, within bounds. */
export function autoPieceSize(contentLength: number): number {
  if (contentLength < 0) return DEFAULTS.unknownLengthPieceSizeBytes;
  let size = DEFAULTS.minPieceSizeBytes;
  while (size < DEFAULTS.maxPieceSizeBytes && size * DEFAULTS.autoPieceTarget < contentLength) size *= 2;
  return size;
}

/**
 * Most pieces a task is cut into. The scheduler keeps some bytes per piece
 * (and a bit per piece and peer), so a length the source announces, whatever
 * it is, must not set how much memory a task takes: a longer file gets
 * larger pieces instead.
 */
export const MAX_PIECES = 65_536;

/** The piece size for a file of contentLength bytes (-1: unknown) under the --piece-size setting, within MAX_PIECES. */
export function pieceSizeFor(contentLength: number, setting: number | 'auto'): number {
  let size = setting === 'auto' ? autoPieceSize(contentLength) : setting;
  while (contentLength > 0 && Math.ceil(contentLength / size) > MAX_PIECES) size *= 2;
  return size;
}

export interface SourceInfo {
  /** -1 when the source sent no Content-Length. */
  contentLength: number;
  pieceSize: number;
}

export interface SourceFetchOptions {
  url: string;
  headers: Record<string, string>;
  /** Where the bytes go; the file is created (or truncated). */
  filePath: string;
  /** Fixed piece size in bytes, or 'auto'. */
  pieceSize: number | 'auto';
  /** Hex sha256 the whole source must have, if known. */
  expectedSha256?: string;
  dispatcher: Dispatcher;
  limiter?: RateLimiter;
  logger: Logger;
  /** Called with every chunk's length, for the bytes-from-source counter. */
  onBytes?: (n: number) => void;
}

/**
 * Events: 'piece' (number, sha256Hex) in order; 'done' (sha256Hex of the
 * whole file); 'error' (DfError). `info` resolves when the response headers
 * are in (or rejects when the source cannot be fetched).
 */
export class SourceFetch extends EventEmitter {
  readonly pieces: string[] = [];
  contentLength = -1;
  pieceSize = 0;
  done = false;
  error?: DfError;
  sha256 = '';
  readonly info: Promise<SourceInfo>;
  private resolveInfo!: (i: SourceInfo) => void;
  private rejectInfo!: (e: DfError) => void;
  private readonly abort = new AbortController();

  constructor(private readonly opts: SourceFetchOptions) {
    super();
    this.info = new Promise<SourceInfo>((res, rej) => { this.resolveInfo = res; this.rejectInfo = rej; });
    // The info promise may be awaited by nobody when the fetch fails late.
    this.info.catch(() => undefined);
  }

  /** Begins the fetch; never throws (failures arrive as 'error' and on `info`). */
  start(): void {
    this.run().catch((err) => this.fail(toDfError(err)));
  }

  cancel(): void {
    this.abort.abort();
  }

  private fail(err: DfError): void {
    if (this.done || this.error) return;
    this.error = err;
    this.rejectInfo(err);
    this.emit('error', err);
  }

  private async run(): Promise<void> {
    const { opts } = this;
    const log = opts.logger;
    const res = await openSource(opts.url, opts.headers, opts.dispatcher, this.abort.signal);
    const { contentLength } = res;
    const pieceSize = pieceSizeFor(contentLength, opts.pieceSize);
    this.contentLength = contentLength;
    this.pieceSize = pieceSize;

    const fh = await fs.open(opts.filePath, 'w');
    try {
      if (contentLength > 0) await fh.truncate(contentLength);
      this.resolveInfo({ contentLength, pieceSize });
      log.info({ contentLength, pieceSize }, 'source fetch started');

      const whole = createHash('sha256');
      let pieceHash: Hash = createHash('sha256');
      let pieceFill = 0;
      let offset = 0;
      const chunks = resumableBody(opts.url, res, {
        headers: opts.headers, dispatcher: opts.dispatcher, signal: this.abort.signal, digestChecked: opts.expectedSha256 !== undefined,
        onResume: (at, attempt, e) => log.warn({ offset: at, contentLength, attempt, code: e.code, err: e.message }, 'source broke off; resuming where it stopped'),
      });
      for await (let chunk of chunks) {
        // Awaited only when the budget says wait: a turn of the event loop per
        // chunk is latency a busy host cannot spare.
        if (opts.limiter) await opts.limiter.take(chunk.length);
        // A write into the page cache takes microseconds; through the thread
        // pool it would cost a round trip of scheduling per chunk.
        writeSync(fh.fd, chunk, 0, chunk.length, offset);
        offset += chunk.length;
        opts.onBytes?.(chunk.length);
        whole.update(chunk);
        // Cut the chunk at piece boundaries; announce each piece once its bytes are on disk.
        while (chunk.length > 0) {
          const take = Math.min(chunk.length, pieceSize - pieceFill);
          pieceHash.update(take === chunk.length ? chunk : chunk.subarray(0, take));
          pieceFill += take;
          chunk = chunk.subarray(take);
          if (pieceFill === pieceSize) {
            this.finishPiece(pieceHash);
            pieceHash = createHash('sha256');
            pieceFill = 0;
          }
        }
      }
      if (pieceFill > 0) this.finishPiece(pieceHash);
      if (contentLength < 0) this.contentLength = offset;
      this.sha256 = whole.digest('hex');
      if (opts.expectedSha256 && opts.expectedSha256 !== this.sha256) {
        throw new DfError('DF_ERR_DIGEST_MISMATCH', `source bytes do not match digest sha256:${opts.expectedSha256} (got sha256:${this.sha256})`);
      }
      // Peers may have the last piece now; the flush to disk only guards the
      // cache a restarted supernode trusts, so it comes after and before 'done'.
      this.releaseHeld();
      await fh.datasync();
    } finally {
      await fh.close();
    }
    this.done = true;
    log.info({ contentLength: this.contentLength, pieces: this.pieces.length }, 'source fetch complete');
    this.emit('done', this.sha256);
  }

  /**
   * With an expected digest, the newest piece is announced only when the next
   * one completes, and the last only after the whole file verified: no peer
   * can finish a file whose bytes do not match its digest.
   */
  private held = -1;

  private finishPiece(h: Hash): void {
    const n = this.pieces.length;
    this.pieces.push(h.digest('hex'));
    if (!this.opts.expectedSha256) {
      this.emit('piece', n, this.pieces[n]);
      return;
    }
    this.releaseHeld();
    this.held = n;
  }

  private releaseHeld(): void {
    if (this.held < 0) return;
    const n = this.held;
    this.held = -1;
    this.emit('piece', n, this.pieces[n]);
  }
}
