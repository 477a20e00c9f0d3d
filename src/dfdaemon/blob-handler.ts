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
 */
import { pipeline } from 'node:stream/promises';
import type { Transform } from 'node:stream';
import { VERSION } from '../common/constants';
import { type DfError, toDfError } from '../common/errors';
import type { DfdaemonMetrics } from '../common/metrics';
import type { RateLimiter } from '../common/ratelimit';
import type { BlobRange, BlobSource, OpenedBlob } from '../peer/blob-source';
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
      length = r.end - r.start + 1;
      headersOut['content-range'] = contentRange(r, total);
    }
    headersOut['content-length'] = length;
    ctx.via = 'p2p';
    ctx.res.writeHead(status, headersOut);
    const counter = new ByteCounter((n) => this.d.metrics.blobBytes.inc({ via: 'p2p' }, n));
    try {
      await pipeline(opened.body, new ExactLength(length), counter, ctx.res);
    } catch (e) {
      if (!ctx.signal.aborted) {
        const err = toDfError(e);
        ctx.log.warn({ code: err.code, err: err.message, digest: digest.digest }, 'P2P blob stream failed; connection closed');
      }
      ctx.res.destroy();
    }
    return true;
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
      rangeNotSatisfiable(ctx, digest.digest, err.message);
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
    if (up.status === 206) {
      const cr = headerValue(up.headers, 'content-range');
      if (cr) out['content-range'] = cr;
    } else {
      // Only a whole blob can be checked against its digest.
      stages.push(new DigestVerifier(digest.algorithm, digest.hex));
    }
    if (len !== undefined && /^\d+$/.test(len)) stages.push(new ExactLength(Number(len)));
    stages.push(new ByteCounter((n) => this.d.metrics.blobBytes.inc({ via: 'direct' }, n)));
    ctx.res.writeHead(up.status, out);
    try {
      await pipeline([up.body, ...stages, ctx.res]);
    } catch (e) {
      if (!ctx.signal.aborted) {
        const err = toDfError(e);
        ctx.log.warn({ code: err.code, err: err.message, digest: digest.digest }, 'direct blob stream failed; connection closed');
      }
      ctx.res.destroy();
    }
  }
}
