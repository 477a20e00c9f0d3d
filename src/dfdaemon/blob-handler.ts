/**
 * GET /v2/<name>/blobs/<digest>: the request that matters. The blob comes
 * through the P2P network (one swarm per digest, whatever registry or
 * mirror it was requested through) unless a proxy rule says direct, the
 * digest is not sha256, or the range form needs the length first. When the
 * P2P network cannot serve it (supernode unreachable, task failed before any
 * byte) the blob is fetched from the upstream directly, so pulls keep working.
 *
 * Integrity: the P2P side verifies what it serves. On the direct path the
 * bytes are hashed while they stream and a mismatch cuts the connection
 * before the last chunk, so a client never gets a complete, corrupt blob.
 *
 * A P2P stream that breaks off after the response started (every peer and
 * the supernode gone, the disk full) is finished from the upstream, so the
 * pull goes on instead of failing: a client's range with a range request for
 * the bytes it does not have yet; a whole blob by fetching it again and
 * sending what the client lacks once it is checked (finishWhole).
 */
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import type { ServerResponse } from 'node:http';
import { pipeline } from 'node:stream/promises';
import { pipeline as pipelineCb, type Readable, type Transform } from 'node:stream';
import { VERSION } from '../common/constants';
import { DfError, toDfError } from '../common/errors';
import type { DfdaemonMetrics } from '../common/metrics';
import type { RateLimiter } from '../common/ratelimit';
import { RangeNotSatisfiable, type BlobRange, type BlobSource, type OpenedBlob } from '../peer/blob-source';
import { ByteCounter, DigestVerifier, discard, ExactLength, ThrottleStream } from './blob-streams';
import { headerValue, relayResponse, type RequestContext } from './passthrough';
import type { ProxyRules } from './proxy-rules';
import { contentRange, parseRangeHeader, resolveRange, type ParsedRange } from './range';
import { API_VERSION_HEADER, codeForStatus, RegistryError, sendRegistryError } from './registry-errors';
import { validateDigest, type ValidDigest } from './routes';
import type { Upstream } from './upstream';
import { pullScope } from './upstream-auth';

/** Sent upstream (and by the P2P side) for blob fetches. */
export const DFDAEMON_USER_AGENT = `dfdaemon/${VERSION}`;

export interface BlobHandlerDeps {
  upstream: Upstream;
  /** Absent: every blob is fetched directly (no supernode configured). */
  blobSource?: BlobSource;
  rules: ProxyRules;
  /** Budget of direct blob fetches (the P2P side applies the same rate itself). */
  limiter: RateLimiter;
  metrics: DfdaemonMetrics;
}

interface BlobJob {
  ctx: RequestContext;
  name: string;
  digest: ValidDigest;
  range: ParsedRange;
  url: string;
  scope: string;
  clientAuthorization?: string;
}

function blobHeaders(digest: string): Record<string, string> {
  return {
    ...API_VERSION_HEADER,
    'content-type': 'application/octet-stream',
    'docker-content-digest': digest,
    'accept-ranges': 'bytes',
    etag: `"${digest}"`,
    // A blob is content-addressed: it never changes.
    'cache-control': 'max-age=31536000',
  };
}

/**
 * Writes what `onChunk` makes of each chunk of `body` to the response as the
 * client takes it, without ending the response; `pace` is awaited before
 * each chunk. A chunk written as it came is given to `recycle` once its write
 * completed. Rejects when the body fails, is not exactly `bytes` long
 * (ExactLength) or `onChunk` throws (the response is left open), or when the
 * client goes away (`signal`).
 */
async function forward(
  body: Readable, bytes: number, res: ServerResponse, signal: AbortSignal,
  onChunk: (chunk: Buffer) => Buffer | undefined,
  opts: { pace?: (bytes: number) => Promise<void>; recycle?: (chunk: Buffer) => void; from?: 'upstream' | 'p2p' } = {},
): Promise<void> {
  const { pace, recycle } = opts;
  const exact = pipelineCb(body, new ExactLength(bytes, opts.from), () => undefined);
  for await (const chunk of exact as AsyncIterable<Buffer>) {
    if (pace) await pace(chunk.length);
    const out = onChunk(chunk);
    if (!out || out.length === 0) continue;
    const written = recycle && out === chunk ? (err?: Error | null) => { if (!err) recycle(chunk); } : undefined;
    if (!res.write(out, written)) await once(res, 'drain', { signal });
  }
}

/** Whether a Content-Range value is bytes 0 to the last byte of the whole: "bytes 0-(N-1)/N". */
function coversWhole(contentRange: string): boolean {
  const m = /^bytes 0-(\d+)\/(\d+)$/.exec(contentRange.trim());
  return m !== null && Number(m[1]) + 1 === Number(m[2]);
}

function rangeNotSatisfiable(ctx: RequestContext, digest: string, reason: string, total?: number): void {
  sendRegistryError(ctx.res, new RegistryError(416, 'RANGE_INVALID', `range not satisfiable: ${reason}`, { digest }),
    total !== undefined ? { 'content-range': `bytes */${total}` } : {});
}

export class BlobHandler {
  private readonly d: BlobHandlerDeps;

  constructor(deps: BlobHandlerDeps) {
    this.d = deps;
  }

  async handle(ctx: RequestContext, name: string, digestText: string): Promise<void> {
    const digest = validateDigest(digestText);
    const range = parseRangeHeader(ctx.req.headers.range);
    if (range.kind === 'invalid') {
      ctx.via = 'local';
      rangeNotSatisfiable(ctx, digest.digest, range.reason);
      return;
    }
    const repo = this.d.upstream.repoName(name);
    const job: BlobJob = {
      ctx, name, digest, range,
      url: this.d.upstream.blobUrl(name, digest.digest),
      scope: pullScope(repo),
      clientAuthorization: headerValue(ctx.req.headers, 'authorization'),
    };
    let via = this.d.rules.viaForBlob(ctx.path);
    // The swarm is keyed by sha256; a suffix range needs the length before
    // the P2P request can name its first byte.
    if (!this.d.blobSource || digest.algorithm !== 'sha256' || range.kind === 'suffix') via = 'direct';
    if (via === 'p2p' && (await this.tryP2P(job, this.d.blobSource as BlobSource))) return;
    if (ctx.signal.aborted) return;
    await this.serveDirect(job);
  }

  /** Serves the blob through P2P; false when the caller should go to the upstream directly instead. */
  private async tryP2P(job: BlobJob, source: BlobSource): Promise<boolean> {
    const { ctx, digest, range } = job;
    // The swarm hands a blob to whoever names its digest. Ask the upstream
    // first whether this client may read it, so P2P never bypasses the
    // registry's access control; the answer also warms a token for the fetch.
    let allowed: number;
    try {
      const head = await this.d.upstream.send({
        method: 'HEAD', url: job.url, headers: { 'user-agent': DFDAEMON_USER_AGENT },
        clientAuthorization: job.clientAuthorization, scope: job.scope, followRedirects: false, signal: ctx.signal,
      });
      head.body.resume();
      allowed = head.status;
    } catch {
      return false;
    }
    if (allowed === 401 || allowed === 403 || allowed >= 500) return false;
    if (allowed === 404) {
      ctx.via = 'direct';
      sendRegistryError(ctx.res, new RegistryError(404, 'BLOB_UNKNOWN', 'blob unknown to registry', { digest: digest.digest }));
      return true;
    }
    const headers: Record<string, string> = { 'user-agent': DFDAEMON_USER_AGENT };
    const auth = this.d.upstream.authorizationFor(job.clientAuthorization, job.scope);
    if (auth) headers.authorization = auth;
    const want: BlobRange | undefined = range.kind === 'range'
      ? (range.end !== undefined ? { start: range.start, end: range.end } : { start: range.start })
      : undefined;

    let opened: OpenedBlob;
    try {
      opened = await source.open({ url: job.url, headers, digest: digest.digest }, want);
    } catch (e) {
      if (ctx.signal.aborted) return true;
      return this.onP2PRejected(job, toDfError(e));
    }
    if (ctx.signal.aborted || ctx.res.destroyed) {
      discard(opened.body);
      return true;
    }

    const total = opened.length;
    let status = 200;
    let first = 0;
    let length = total;
    const headersOut: Record<string, string | number> = blobHeaders(digest.digest);
    if (range.kind === 'range') {
      const r = resolveRange(range, total);
      if (!r) {
        discard(opened.body);
        ctx.via = 'p2p';
        rangeNotSatisfiable(ctx, digest.digest, `blob has ${total} bytes`, total);
        return true;
      }
      status = 206;
      first = r.start;
      length = r.end - r.start + 1;
      headersOut['content-range'] = contentRange(r, total);
    }
    headersOut['content-length'] = length;
    ctx.via = 'p2p';
    ctx.res.writeHead(status, headersOut);
    let taken = 0;
    try {
      await forward(opened.body, length, ctx.res, ctx.signal, (chunk) => {
        taken += chunk.length;
        return this.counted(chunk, 'p2p');
      }, { recycle: opened.recycle, from: 'p2p' });
    } catch (e) {
      if (ctx.signal.aborted || ctx.res.destroyed) {
        ctx.res.destroy();
        return true;
      }
      const err = toDfError(e);
      ctx.log.warn({ code: err.code, err: err.message, digest: digest.digest, taken, length },
        'P2P blob stream failed part way; fetching the rest from the upstream');
      try {
        if (status === 200) await this.finishWhole(job, total, taken, opened.pieces?.());
        else await this.finishRange(job, { from: first + taken, to: first + length - 1 });
        ctx.res.end();
      } catch (e2) {
        if (!ctx.signal.aborted) {
          const err2 = toDfError(e2);
          ctx.log.warn({ code: err2.code, err: err2.message, digest: digest.digest }, 'the rest of the blob from the upstream failed; connection closed');
        }
        ctx.res.destroy();
      }
      return true;
    }
    ctx.res.end();
    return true;
  }

  /**
   * Asks the upstream for the whole `total`-byte blob or for bytes from..to,
   * and checks that it answers with exactly that.
   */
  private async fetchUpstream(job: BlobJob, want: { total: number } | { from: number; to: number }): Promise<Readable> {
    const range = 'from' in want ? want : undefined;
    const total = 'total' in want ? want.total : 0;
    const headers: Record<string, string> = { 'user-agent': DFDAEMON_USER_AGENT };
    if (range) headers.range = `bytes=${range.from}-${range.to}`;
    const up = await this.d.upstream.send({
      method: 'GET', url: job.url, headers,
      clientAuthorization: job.clientAuthorization, scope: job.scope, followRedirects: true, signal: job.ctx.signal,
    });
    const cr = headerValue(up.headers, 'content-range') ?? '';
    const len = headerValue(up.headers, 'content-length');
    const ok = range
      ? up.status === 206 && cr.startsWith(`bytes ${range.from}-${range.to}/`)
      : up.status === 200 && (len === undefined || Number(len) === total);
    if (!ok) {
      discard(up.body);
      throw new DfError('DF_ERR_SOURCE_STATUS', `upstream answered ${up.status} ${cr || len || ''} to a request for ${range ? `bytes ${range.from}-${range.to}` : `all ${total} bytes`}`.trim(), { status: up.status });
    }
    return up.body;
  }

  /**
   * Sends bytes from..to (inclusive) of a range the client asked for, from the
   * upstream. Ranges are not checked against the digest, here as on the
   * direct path.
   */
  private async finishRange(job: BlobJob, range: { from: number; to: number }): Promise<void> {
    const body = await this.fetchUpstream(job, range);
    await forward(body, range.to - range.from + 1, job.ctx.res, job.ctx.signal,
      (chunk) => this.counted(chunk, 'direct'), { pace: (n) => this.d.limiter.take(n) });
  }

  /**
   * Sends the rest of a whole blob after the first `taken` bytes went out over
   * P2P. The blob is fetched again from its first byte: all of it is hashed
   * against its digest, and the bytes the client already has are checked
   * piece by piece against the sha256 the P2P download verified them with, so
   * what the client ends up with is the upstream's blob, which matches its
   * digest. The last chunk is held back until both checks passed; a failure
   * throws and the caller cuts the connection, so the client never gets a
   * complete blob that does not match. It costs the `taken` bytes fetched
   * again, and only when a P2P download broke off: a P2P stream that runs to
   * its end is not hashed here (its pieces were).
   */
  private async finishWhole(job: BlobJob, total: number, taken: number,
    pieces: { pieceSize: number; sha256: ReadonlyMap<number, string> } | undefined): Promise<void> {
    const { digest } = job;
    const pieceSize = pieces?.pieceSize ?? 0;
    if (taken > 0 && (!pieces || pieceSize <= 0)) throw new DfError('DF_ERR_P2P_FAILED', 'no piece digests to check the bytes already sent with');
    // Pieces 0..lastSent hold the bytes the client has.
    const lastSent = taken > 0 ? Math.floor((taken - 1) / pieceSize) : -1;
    const whole = createHash(digest.algorithm);
    let piece = 0;
    let pieceHash = createHash('sha256');
    let pieceEnd = Math.min(total, pieceSize);
    let pos = 0;
    let held: Buffer | undefined;
    const body = await this.fetchUpstream(job, { total });
    await forward(body, total, job.ctx.res, job.ctx.signal, (chunk) => {
      whole.update(chunk);
      for (let at = 0; piece <= lastSent && at < chunk.length;) {
        const n = Math.min(chunk.length - at, pieceEnd - (pos + at));
        pieceHash.update(chunk.subarray(at, at + n));
        at += n;
        if (pos + at === pieceEnd) {
          if (pieceHash.digest('hex') !== pieces!.sha256.get(piece)) {
            throw new DfError('DF_ERR_DIGEST_MISMATCH', `piece ${piece} the client already has differs from the upstream's`);
          }
          piece++;
          pieceHash = createHash('sha256');
          pieceEnd = Math.min(total, pieceEnd + pieceSize);
        }
      }
      const rest = chunk.subarray(Math.max(0, Math.min(chunk.length, taken - pos)));
      pos += chunk.length;
      if (rest.length === 0) return undefined;
      const out = held;
      held = rest;
      return this.counted(out, 'direct');
    }, { pace: (n) => this.d.limiter.take(n) });
    const actual = whole.digest('hex');
    if (actual !== digest.hex) throw new DfError('DF_ERR_DIGEST_MISMATCH', `blob digest mismatch: expected ${digest.digest}, got ${digest.algorithm}:${actual}`);
    const last = this.counted(held, 'direct');
    if (last) job.ctx.res.write(last);
  }

  /** A chunk of the blob about to go to the client, counted by the way it came. */
  private counted(chunk: Buffer | undefined, via: 'p2p' | 'direct'): Buffer | undefined {
    if (chunk) this.d.metrics.blobBytes.inc({ via }, chunk.length);
    return chunk;
  }

  private onP2PRejected(job: BlobJob, err: DfError): boolean {
    const { ctx, digest } = job;
    if (err.code === 'DF_ERR_SOURCE_STATUS') {
      const st = err.status !== undefined && err.status >= 400 && err.status <= 599 ? err.status : 502;
      // Ask the upstream ourselves: the client needs its real WWW-Authenticate
      // challenge to run its token flow (and our credentials may fetch a token).
      if (st === 401 || st === 403) return false;
      ctx.via = 'p2p';
      sendRegistryError(ctx.res, new RegistryError(st, codeForStatus(st, 'blob'),
        st === 404 ? 'blob unknown to registry' : `upstream answered ${st} for the blob`, { digest: digest.digest }));
      return true;
    }
    if (err.code === 'DF_ERR_RANGE_NOT_SATISFIABLE') {
      ctx.via = 'p2p';
      rangeNotSatisfiable(ctx, digest.digest, err.message, err instanceof RangeNotSatisfiable ? err.total : undefined);
      return true;
    }
    ctx.log.warn({ code: err.code, err: err.message, digest: digest.digest }, 'P2P network cannot serve the blob; fetching it from the upstream directly');
    return false;
  }

  private async serveDirect(job: BlobJob): Promise<void> {
    const { ctx, digest, range } = job;
    ctx.via = 'direct';
    const headers: Record<string, string> = { 'user-agent': DFDAEMON_USER_AGENT };
    const rangeHeader = headerValue(ctx.req.headers, 'range');
    if (range.kind !== 'none' && rangeHeader) headers.range = rangeHeader;
    const up = await this.d.upstream.send({
      method: 'GET',
      url: job.url,
      headers,
      clientAuthorization: job.clientAuthorization,
      scope: job.scope,
      followRedirects: true,
      signal: ctx.signal,
    });

    if (up.status !== 200 && up.status !== 206) {
      const ct = headerValue(up.headers, 'content-type') ?? '';
      // A registry's own errors are already in the registry format; storage
      // behind a redirect (S3 XML...) is not, so those are rewritten.
      if (up.status >= 400 && /json/i.test(ct)) {
        await relayResponse(ctx, up);
        return;
      }
      discard(up.body);
      const st = up.status >= 400 && up.status <= 599 ? up.status : 502;
      const extra: Record<string, string> = {};
      const challenge = headerValue(up.headers, 'www-authenticate');
      if (challenge) extra['www-authenticate'] = challenge;
      if (st === 416) {
        const cr = headerValue(up.headers, 'content-range');
        if (cr) extra['content-range'] = cr;
      }
      sendRegistryError(ctx.res, new RegistryError(st, codeForStatus(st, 'blob'),
        `upstream answered ${up.status} for the blob`, { digest: digest.digest }), extra);
      return;
    }

    const out: Record<string, string | number> = blobHeaders(digest.digest);
    const len = headerValue(up.headers, 'content-length');
    if (len !== undefined) out['content-length'] = len;
    const stages: Transform[] = [new ThrottleStream(this.d.limiter)];
    const cr = up.status === 206 ? headerValue(up.headers, 'content-range') : undefined;
    if (cr) out['content-range'] = cr;
    // Only a whole blob can be checked against its digest: a 200, or a 206 of
    // bytes 0 to the end (what `Range: bytes=0-` asks for).
    if (up.status === 200 || (cr !== undefined && coversWhole(cr))) stages.push(new DigestVerifier(digest.algorithm, digest.hex));
    if (len !== undefined && /^\d+$/.test(len)) stages.push(new ExactLength(Number(len)));
    stages.push(new ByteCounter((n) => this.d.metrics.blobBytes.inc({ via: 'direct' }, n)));
    ctx.res.writeHead(up.status, out);
    try {
      await pipeline([up.body, ...stages, ctx.res]);
    } catch (e) {
      if (!ctx.signal.aborted) {
        // After the head, a failure with no code of ours is the upstream's body breaking off.
        const err = toDfError(e, 'DF_ERR_SOURCE_TRUNCATED');
        ctx.log.warn({ code: err.code, err: err.message, digest: digest.digest }, 'direct blob stream failed; connection closed');
      }
      ctx.res.destroy();
    }
  }
}
