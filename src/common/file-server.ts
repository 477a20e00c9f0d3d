/** Sends a byte range of a file over HTTP, under an optional upload limit. */
import * as fs from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Writable } from 'node:stream';
import { pieceBuffers } from './buffer-pool';
import type { RateLimiter } from './ratelimit';

/**
 * Bytes read from the file per write, into buffers of the shared pool given
 * back once the socket took them. Under a limiter, a write is at most its
 * burst, so the bytes go out paced rather than a chunk at a time.
 */
const CHUNK_BYTES = pieceBuffers.size;
/** Writes handed to the socket and not yet taken, per response. */
const WRITES_AHEAD = 2;

/**
 * Answers 206 with bytes start..end (inclusive) of filePath. The file calls
 * (open, read, close) are synchronous: the files served are local and were
 * just written, so they are in the page cache and each call takes
 * microseconds, far less than a round trip through the thread pool. Rejects before
 * any header is sent when the file cannot be opened, and after (the response
 * is destroyed) when the file ends early, reading fails or the client leaves.
 */
export async function sendFileRange(
  res: ServerResponse, filePath: string, start: number, end: number, totalLength: number | '*',
  opts: PumpOptions = {},
): Promise<void> {
  const fd = fs.openSync(filePath, 'r');
  try {
    res.writeHead(206, {
      'Content-Type': 'application/octet-stream',
      'Content-Length': String(end - start + 1),
      'Content-Range': `bytes ${start}-${end}/${totalLength}`,
    });
    if (res.req?.method === 'HEAD') { res.end(); return; }
    await pumpFileRange(res, fd, start, end, opts);
    res.end();
  } finally {
    fs.closeSync(fd);
  }
}

export interface PumpOptions {
  limiter?: RateLimiter;
  onBytes?: (n: number) => void;
  /** Written just before the first bytes of the file, in the same write (a response head). */
  prefix?: string;
}

/**
 * Writes bytes start..end (inclusive) of the open file fd to `out`, paced by
 * the limiter, and resolves once the last write was taken; it does not end
 * `out`. Rejects, with `out` destroyed, when the file ends early, reading
 * fails or `out` closes.
 */
export async function pumpFileRange(
  out: Writable, fd: number, start: number, end: number, opts: PumpOptions,
): Promise<void> {
  const limiter = opts.limiter && !opts.limiter.unlimited ? opts.limiter : undefined;
  const chunkBytes = limiter ? Math.max(1, Math.min(CHUNK_BYTES, limiter.burst)) : CHUNK_BYTES;
  let prefix = opts.prefix;
  let pending = 0;
  let failure: Error | undefined;
  let wake: (() => void) | undefined;
  const onClose = () => {
    failure ??= new Error('the client closed the connection');
    wake?.();
  };
  out.once('close', onClose);
  // Resolves once fewer than `max` writes are outstanding, or the response failed.
  const room = (max: number) => new Promise<void>((resolve) => {
    if (pending < max || failure) resolve();
    else wake = resolve;
  });
  try {
    for (let pos = start; pos <= end;) {
      if (failure) throw failure;
      const buf = pieceBuffers.take();
      const n = fs.readSync(fd, buf, 0, Math.min(chunkBytes, end - pos + 1), pos);
      if (n === 0) throw new Error('the file is shorter than the range');
      if (limiter) await limiter.take(n);
      if (failure) throw failure;
      pos += n;
      opts.onBytes?.(n);
      pending++;
      const head = prefix;
      prefix = undefined;
      if (head !== undefined) {
        // One writev for the head and the first bytes, not a packet of its own.
        out.cork();
        out.write(head, 'latin1');
      }
      out.write(buf.subarray(0, n), (err) => {
        pending--;
        // A buffer whose write failed may still be referenced by the socket: let it go.
        if (err) failure ??= err; else pieceBuffers.give(buf);
        const w = wake;
        wake = undefined;
        w?.();
      });
      if (head !== undefined) out.uncork();
      await room(WRITES_AHEAD);
    }
    await room(1);
    if (failure) throw failure;
  } catch (err) {
    out.destroy();
    throw err;
  } finally {
    out.off('close', onClose);
  }
}

/**
 * The request's target as a URL; undefined, with 400 answered, when it
 * cannot be parsed (an absolute-form target such as `http://[::1`): the
 * client's error, not the server's.
 */
export function requestUrl(req: IncomingMessage, res: ServerResponse): URL | undefined {
  try {
    return new URL(req.url ?? '/', 'http://x');
  } catch {
    sendText(res, 400, 'bad request target');
    return undefined;
  }
}

export function sendText(res: ServerResponse, status: number, text: string, contentType = 'text/plain; charset=utf-8'): void {
  if (res.headersSent) { res.destroy(); return; }
  res.writeHead(status, { 'Content-Type': contentType, 'Content-Length': String(Buffer.byteLength(text)) });
  res.end(text);
}
