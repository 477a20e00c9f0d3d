/** Sends a byte range of a file over HTTP, under an optional upload limit. */
import * as fs from 'node:fs';
import type { ServerResponse } from 'node:http';
import { pipeline } from 'node:stream/promises';
import type { RateLimiter } from './ratelimit';

export async function sendFileRange(
  res: ServerResponse, filePath: string, start: number, end: number, totalLength: number | '*',
  opts: { limiter?: RateLimiter; onBytes?: (n: number) => void } = {},
): Promise<void> {
  const src = fs.createReadStream(filePath, { start, end, highWaterMark: 1024 * 1024 });
  await new Promise<void>((resolve, reject) => {
    src.once('open', () => resolve());
    src.once('error', reject);
  });
  res.writeHead(206, {
    'Content-Type': 'application/octet-stream',
    'Content-Length': String(end - start + 1),
    'Content-Range': `bytes ${start}-${end}/${totalLength}`,
  });
  const { limiter, onBytes } = opts;
  if (!limiter || limiter.unlimited) {
    // No pacing: a plain pipe is cheaper than a pass through an async generator.
    if (onBytes) src.on('data', (c) => onBytes((c as Buffer).length));
    await pipeline(src, res);
    return;
  }
  await pipeline(src, async function* (chunks: AsyncIterable<Buffer>) {
    for await (const c of chunks) {
      if (limiter) await limiter.take(c.length);
      onBytes?.(c.length);
      yield c;
    }
  }, res);
}

export function sendText(res: ServerResponse, status: number, text: string, contentType = 'text/plain; charset=utf-8'): void {
  if (res.headersSent) { res.destroy(); return; }
  res.writeHead(status, { 'Content-Type': contentType, 'Content-Length': String(Buffer.byteLength(text)) });
  res.end(text);
}
