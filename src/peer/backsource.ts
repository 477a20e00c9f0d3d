/** Back to source: fetch the URL directly, under the same rate limit, into a file. */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs/promises';
import type { Dispatcher } from 'undici';
import { hashFile } from '../common/digest';
import { DfError } from '../common/errors';
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

/** What a P2P download that failed part way left: its verified pieces, in the file given. */
export interface HeldPieces {
  contentLength: number;
  pieceSize: number;
  held: ReadonlySet<number>;
}

/** Range requests for missing pieces beyond this many runs become one request from the first to the last. */
const MAX_RANGE_REQUESTS = 64;

/** The byte runs (inclusive) of the pieces not held, adjacent pieces joined. */
export function missingRuns(p: HeldPieces): Array<{ start: number; end: number }> {
  const runs: Array<{ start: number; end: number }> = [];
  const count = Math.ceil(p.contentLength / p.pieceSize);
  for (let i = 0; i < count; i++) {
    if (p.held.has(i)) continue;
    const start = i * p.pieceSize;
    const end = Math.min(p.contentLength, start + p.pieceSize) - 1;
    const last = runs[runs.length - 1];
    if (last && last.end + 1 === start) last.end = end;
    else runs.push({ start, end });
  }
  if (runs.length > MAX_RANGE_REQUESTS) return [{ start: runs[0].start, end: runs[runs.length - 1].end }];
  return runs;
}

/**
 * Fills in the pieces a failed P2P download did not get, with range requests
 * to the source, then hashes the whole file. Only for a caller that checks
 * the result against a digest it was given: the pieces held came from the
 * supernode's fetch of the source, the rest from this one, and only the
 * whole file's digest shows they are the same version (the first answer's
 * validator is sent as If-Range with the next requests, so a source that
 * changes in between is caught early). Rejects with a coded error when the
 * source will not answer a range with exactly that range; the caller then
 * fetches the whole file.
 */
export async function fetchMissingFromSource(opts: {
  url: string;
  headers: Record<string, string>;
  filePath: string;
  pieces: HeldPieces;
  dispatcher: Dispatcher;
  limiter?: RateLimiter;
  signal?: AbortSignal;
  onBytes?: (n: number, total: number) => void;
}): Promise<BackSourceResult & { fetched: number }> {
  const { contentLength: length } = opts.pieces;
  const fh = await fs.open(opts.filePath, 'r+');
  let fetched = 0;
  try {
    let validator = '';
    const runs = missingRuns(opts.pieces);
    const already = length - runs.reduce((n, r) => n + r.end - r.start + 1, 0);
    for (const run of runs) {
      const res = await openSource(opts.url, opts.headers, opts.dispatcher, opts.signal, { from: run.start, to: run.end, length, validator });
      validator ||= res.validator;
      let pos = run.start;
      for await (const raw of res.body) {
        const c = raw as Buffer;
        if (pos + c.length > run.end + 1) {
          res.body.destroy();
          throw new DfError('DF_ERR_SOURCE_TRUNCATED', `source sent more than the ${run.end - run.start + 1} bytes of range ${run.start}-${run.end}`);
        }
        if (opts.limiter) await opts.limiter.take(c.length);
        await fh.write(c, 0, c.length, pos);
        pos += c.length;
        fetched += c.length;
        opts.onBytes?.(already + fetched, length);
      }
      if (pos !== run.end + 1) throw new DfError('DF_ERR_SOURCE_TRUNCATED', `source sent ${pos - run.start} of the ${run.end - run.start + 1} bytes of range ${run.start}-${run.end}`);
    }
  } finally {
    await fh.close();
  }
  return { length, ...await hashFile(opts.filePath, { sha256: true, md5: true }), fetched };
}
