/**
 * Passing a client request through to the upstream and its answer back:
 * manifests, /v2/, blob HEADs, uploads, tags... everything that does not go
 * through the P2P network. Status, headers (Content-Type,
 * Docker-Content-Digest, WWW-Authenticate...) and body come back unchanged, so
 * a 401 challenge reaches the client and it runs its own token flow.
 */
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import type { OutgoingHttpHeaders } from 'node:http';
import { pipeline } from 'node:stream/promises';
import type { Logger } from '../common/logger';
import { discard } from './blob-streams';
import { HOP_BY_HOP, type Upstream, type UpstreamResponse } from './upstream';

/** What a request handler knows about the request it serves. */
export interface RequestContext {
  req: IncomingMessage;
  res: ServerResponse;
  /** Raw path, as the client sent it. */
  path: string;
  /** "" or "?...", forwarded unchanged (containerd sends ?ns=docker.io). */
  query: string;
  /** Aborted when the client goes away before the response finished. */
  signal: AbortSignal;
  log: Logger;
  /** How the answer was produced, for metrics: set by the handler. */
  via: 'p2p' | 'direct' | 'local';
}

/** A single header value as a string (repeated headers joined as HTTP allows). */
export function headerValue(h: IncomingHttpHeaders, name: string): string | undefined {
  const v = h[name];
  if (v === undefined) return undefined;
  return Array.isArray(v) ? v.join(', ') : v;
}

/** Client headers to send upstream: hop-by-hop ones and Authorization (handled by Upstream) left out. */
export function forwardableRequestHeaders(h: IncomingHttpHeaders, keepBody: boolean): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(h)) {
    if (v === undefined || HOP_BY_HOP.has(k) || k === 'authorization') continue;
    if (!keepBody && k === 'content-length') continue;
    out[k] = Array.isArray(v) ? v.join(', ') : v;
  }
  return out;
}

/** Upstream response headers to give the client. */
export function forwardableResponseHeaders(h: IncomingHttpHeaders): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  for (const [k, v] of Object.entries(h)) {
    if (v === undefined || HOP_BY_HOP.has(k)) continue;
    out[k] = v;
  }
  return out;
}

/** Whether a request carries a body to forward. */
export function hasRequestBody(req: IncomingMessage): boolean {
  if (req.headers['transfer-encoding'] !== undefined) return true;
  const len = req.headers['content-length'];
  return len !== undefined && len !== '0';
}

/** Writes an upstream response to the client: status, headers and body as they are. */
export async function relayResponse(ctx: RequestContext, up: UpstreamResponse): Promise<void> {
  const { res } = ctx;
  res.writeHead(up.status, forwardableResponseHeaders(up.headers));
  if (ctx.req.method === 'HEAD' || up.status === 204 || up.status === 304) {
    discard(up.body);
    res.end();
    return;
  }
  await pipeline(up.body, res);
}

export interface PassThroughOptions {
  /** Upstream path, with the repository name as the upstream knows it. */
  upstreamPath: string;
  /** Token scope for configured credentials. */
  scope: string;
}

export async function passThrough(ctx: RequestContext, upstream: Upstream, opts: PassThroughOptions): Promise<void> {
  const { req } = ctx;
  const method = req.method ?? 'GET';
  const withBody = method !== 'GET' && method !== 'HEAD' && hasRequestBody(req);
  ctx.via = 'direct';
  const up = await upstream.send({
    method,
    url: upstream.url(opts.upstreamPath + ctx.query),
    headers: forwardableRequestHeaders(req.headers, withBody),
    clientAuthorization: headerValue(req.headers, 'authorization'),
    scope: opts.scope,
    body: withBody ? req : undefined,
    followRedirects: method === 'GET' || method === 'HEAD',
    signal: ctx.signal,
  });
  ctx.log.debug({ status: up.status, method }, 'upstream answered');
  await relayResponse(ctx, up);
}
