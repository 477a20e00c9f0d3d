/** Back to source: fetch the URL directly, under the same rate limit, into a file. */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs/promises';
import type { Dispatcher } from 'undici';
import { openSource, resumableBody } from '../common/http';
import type { RateLimiter } from '../common/ratelimit';

export interface BackSourceResult {
  length: number;
  sha256: string;
  md5: string;
}

export async function fetchFromSource(opts: {
  url: string;
  headers: Record<string, string>;
  filePath: string;
  dispatcher: Dispatcher;
  limiter?: RateLimiter;
  signal?: AbortSignal;
  onBytes?: (n: number, total: number) => void;
  /** The caller checks the file's digest: a broken-off fetch may resume even without a validator. */
  digestChecked?: boolean;
}): Promise<BackSourceResult> {
  const res = await openSource(opts.url, opts.headers, opts.dispatcher, opts.signal);
  const expected = res.contentLength;
  const sha = createHash('sha256');
  const md5 = createHash('md5');
  const fh = await fs.open(opts.filePath, 'w');
  let length = 0;
  try {
    const chunks = resumableBody(opts.url, res, {
      headers: opts.headers, dispatcher: opts.dispatcher, signal: opts.signal, digestChecked: opts.digestChecked ?? false,
    });
    for await (const c of chunks) {
      if (opts.limiter) await opts.limiter.take(c.length);
      await fh.write(c, 0, c.length, length);
      length += c.length;
      sha.update(c);
      md5.update(c);
      opts.onBytes?.(length, expected);
    }
  } finally {
    await fh.close();
  }
  return { length, sha256: sha.digest('hex'), md5: md5.digest('hex') };
}
