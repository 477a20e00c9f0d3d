/**
 * The upstream registry (or mirror) dfdaemon forwards to: URL mapping,
 * TLS settings, redirects and credentials in one place.
 *
 * - Docker Hub: "https://index.docker.io" is the index, its registry API is at
 *   registry-1.docker.io, and its official images live under "library/", so
 *   "alpine" is sent as "library/alpine".
 * - Redirects (a registry sends blob GETs to its storage with 307) are
 *   followed here for the direct path; the Authorization header is dropped
 *   when a redirect leaves the registry's origin, since storage URLs are
 *   signed and must not see the registry credentials.
 */
import { readFileSync } from 'node:fs';
import { rootCertificates } from 'node:tls';
import { Readable } from 'node:stream';
import type { IncomingHttpHeaders } from 'node:http';
import { Agent, type Dispatcher, request } from 'undici';
import { DfError } from '../common/errors';
import { redactUrl, sleep } from '../common/http';
import type { Logger } from '../common/logger';
import type { RegistryMirrorConfig } from './config';
import { discard } from './blob-streams';
import { parseChallenge, UpstreamCredentials } from './upstream-auth';

/** Hosts that mean Docker Hub. */
const DOCKER_HUB_HOSTS = new Set(['index.docker.io', 'docker.io', 'registry-1.docker.io', 'registry.hub.docker.com']);
/** Where Docker Hub's registry API actually is. */
const DOCKER_HUB_API_HOST = 'registry-1.docker.io';
const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);
const MAX_REDIRECTS = 10;
/** Largest 401 body kept in memory while a token is fetched (registry error JSON is tiny). */
const MAX_CHALLENGE_BODY_BYTES = 64 * 1024;
/** Connection and header timeouts towards the upstream, ms. */
/** A GET or HEAD that fails this way is sent again, UPSTREAM_RETRIES times... */
const RETRY_STATUSES = new Set([502, 503, 504]);
const UPSTREAM_RETRIES = 2;
/** ...after this long, twice as long before the next; a Retry-After is honoured up to RETRY_AFTER_MAX_MS. */
const RETRY_BACKOFF_MS = 250;
const RETRY_AFTER_MAX_MS = 5_000;

/** Retry-After in ms (delta-seconds or an HTTP date); undefined when absent or malformed. */
export function retryAfterMs(value: string | string[] | undefined): number | undefined {
  if (typeof value !== 'string') return undefined;
  if (/^\d+$/.test(value.trim())) return Number(value.trim()) * 1000;
  const at = Date.parse(value);
  return Number.isFinite(at) ? Math.max(0, at - Date.now()) : undefined;
}

const CONNECT_TIMEOUT_MS = 10_000;
const HEADERS_TIMEOUT_MS = 60_000;
/** No data for this long on a body = the upstream stalled, ms. */
const BODY_TIMEOUT_MS = 120_000;

/**
 * Headers that belong to one connection (RFC 9110 section 7.6.1) or that we
 * set ourselves; never copied between client and upstream.
 */
export const HOP_BY_HOP = new Set([
  'connection', 'keep-alive', 'proxy-connection', 'proxy-authenticate', 'proxy-authorization',
  'te', 'trailer', 'transfer-encoding', 'upgrade', 'host', 'expect',
]);

export interface UpstreamRequest {
  method: string;
  url: string;
  /** Headers to send, lower-case names, without Authorization (see clientAuthorization). */
  headers: Record<string, string>;
  /** The client's own Authorization; when absent the configured credentials (if any) are used. */
  clientAuthorization?: string;
  /** Token scope of the request ("repository:NAME:pull", "" for /v2/). */
  scope: string;
  body?: Readable;
  followRedirects: boolean;
  signal?: AbortSignal;
}

export interface UpstreamResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: Readable;
  /** The URL that answered, after redirects. */
  url: string;
}

export interface UpstreamOptions {
  mirror: RegistryMirrorConfig;
  logger: Logger;
}

export class Upstream {
  /** Base of registry API URLs, no trailing slash (may carry a path prefix). */
  readonly apiBase: string;
  readonly isDockerHub: boolean;
  readonly dispatcher: Agent;
  private readonly credentials: UpstreamCredentials;
  private readonly logger: Logger;

  constructor(opts: UpstreamOptions) {
    const u = new URL(opts.mirror.remote);
    this.isDockerHub = DOCKER_HUB_HOSTS.has(u.hostname.toLowerCase());
    if (this.isDockerHub) u.hostname = DOCKER_HUB_API_HOST;
    this.apiBase = u.toString().replace(/\/+$/, '');
    this.logger = opts.logger;
    let ca: string[] | undefined;
    if (opts.mirror.certs.length > 0) {
      // Giving `ca` replaces the default trust store: keep the system roots too.
      ca = [...rootCertificates];
      for (const file of opts.mirror.certs) {
        try {
          ca.push(readFileSync(file, 'utf8'));
        } catch (e) {
          throw new DfError('DF_ERR_INVALID_CONFIG', `registry_mirror.certs: cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
        }
      }
    }
    this.dispatcher = new Agent({
      connect: { rejectUnauthorized: !opts.mirror.insecure, timeout: CONNECT_TIMEOUT_MS, ...(ca ? { ca } : {}) },
      headersTimeout: HEADERS_TIMEOUT_MS,
      bodyTimeout: BODY_TIMEOUT_MS,
    });
    this.credentials = new UpstreamCredentials(opts.mirror.auth, this.dispatcher, opts.logger);
  }

  /** The repository name as the upstream knows it ("alpine" -> "library/alpine" on Docker Hub). */
  repoName(name: string): string {
    return this.isDockerHub && !name.includes('/') ? `library/${name}` : name;
  }

  /** Absolute upstream URL of an API path ("/v2/..." plus query). */
  url(pathAndQuery: string): string {
    return this.apiBase + pathAndQuery;
  }

  blobUrl(name: string, digest: string): string {
    return this.url(`/v2/${this.repoName(name)}/blobs/${digest}`);
  }

  /** The Authorization to send for a request: the client's, else the configured credentials'. */
  authorizationFor(clientAuthorization: string | undefined, scope: string): string | undefined {
    return clientAuthorization ?? this.credentials.authorization(scope);
  }

  /**
   * Sends a request upstream. A GET or HEAD that cannot reach the upstream,
   * or gets 502, 503 or 504, is sent again (UPSTREAM_RETRIES times, with
   * backoff; a Retry-After up to RETRY_AFTER_MAX_MS is honoured): nothing
   * has gone to the client yet. With configured credentials and no client
   * Authorization, a Bearer challenge is answered by fetching a token and
   * retrying once (bodyless requests only). Rejects with
   * DF_ERR_SOURCE_UNREACHABLE when the upstream cannot be reached.
   */
  async send(req: UpstreamRequest): Promise<UpstreamResponse> {
    const idempotent = !req.body && (req.method === 'GET' || req.method === 'HEAD');
    for (let attempt = 1; ; attempt++) {
      let waitMs = RETRY_BACKOFF_MS * 2 ** (attempt - 1);
      let why: string;
      try {
        const res = await this.sendOnce(req);
        if (!idempotent || attempt > UPSTREAM_RETRIES || !RETRY_STATUSES.has(res.status)) return res;
        why = `HTTP ${res.status}`;
        const after = retryAfterMs(res.headers['retry-after']);
        if (after !== undefined) waitMs = Math.min(Math.max(after, waitMs), RETRY_AFTER_MAX_MS);
        discard(res.body);
      } catch (e) {
        if (!idempotent || attempt > UPSTREAM_RETRIES || req.signal?.aborted || !(e instanceof DfError && e.code === 'DF_ERR_SOURCE_UNREACHABLE')) throw e;
        why = e.message;
      }
      this.logger.warn({ url: redactUrl(req.url), method: req.method, attempt, why, waitMs }, 'upstream failed; trying again');
      await sleep(waitMs, req.signal);
      if (req.signal?.aborted) throw new DfError('DF_ERR_CLOSED', 'request cancelled');
    }
  }

  private async sendOnce(req: UpstreamRequest): Promise<UpstreamResponse> {
    const usingOwnCredentials = req.clientAuthorization === undefined && this.credentials.configured;
    const auth = this.authorizationFor(req.clientAuthorization, req.scope);
    const res = await this.follow(req, auth);
    if (res.status !== 401 || !usingOwnCredentials || req.body) return res;

    const challenge = parseChallenge(res.headers['www-authenticate']);
    if (!challenge || challenge.scheme !== 'bearer') return res;
    // Keep the 401 so the client gets it unchanged if no token can be had.
    const saved = await readSmall(res.body, MAX_CHALLENGE_BODY_BYTES);
    const token = await this.credentials.fetchToken(challenge, req.scope, req.signal);
    if (!token) {
      return { ...res, headers: { ...res.headers, 'content-length': String(saved.length) }, body: Readable.from([saved]) };
    }
    return this.follow(req, `Bearer ${token}`);
  }

  private async follow(req: UpstreamRequest, authorization: string | undefined): Promise<UpstreamResponse> {
    let url = new URL(req.url);
    const origin = url.origin;
    let method = req.method;
    const headers: Record<string, string> = { ...req.headers };
    if (authorization) headers.authorization = authorization;
    for (let hop = 0; ; hop++) {
      let res: Dispatcher.ResponseData;
      try {
        res = await request(url, {
          method: method as Dispatcher.HttpMethod,
          headers,
          body: hop === 0 ? req.body : undefined,
          dispatcher: this.dispatcher,
          signal: req.signal,
        });
      } catch (e) {
        if (req.signal?.aborted) throw e;
        // Only the host is named: the URL of a redirect may carry a signature.
        throw new DfError('DF_ERR_SOURCE_UNREACHABLE', `upstream ${url.host} unreachable: ${(e as Error).message}`, { cause: e });
      }
      const location = res.headers.location;
      if (!req.followRedirects || !REDIRECT_STATUSES.has(res.statusCode) || typeof location !== 'string') {
        return { status: res.statusCode, headers: res.headers, body: res.body, url: url.toString() };
      }
      await res.body.dump().catch(() => undefined);
      if (hop >= MAX_REDIRECTS) {
        throw new DfError('DF_ERR_SOURCE_STATUS', `upstream redirected more than ${MAX_REDIRECTS} times`, { status: 502 });
      }
      const next = new URL(location, url);
      if (next.protocol !== 'http:' && next.protocol !== 'https:') {
        throw new DfError('DF_ERR_SOURCE_STATUS', `upstream redirected to an unsupported scheme ${next.protocol}`, { status: 502 });
      }
      if (next.origin !== origin) delete headers.authorization;
      if (res.statusCode === 303 && method !== 'HEAD') method = 'GET';
      this.logger.debug({ from: url.host, to: next.host, status: res.statusCode }, 'following upstream redirect');
      url = next;
    }
  }

  async close(): Promise<void> {
    await this.dispatcher.close().catch(() => undefined);
  }
}

/** Reads at most `limit` bytes of a body (the rest is dropped). */
async function readSmall(body: Readable, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const c of body) {
      const b = Buffer.isBuffer(c) ? c : Buffer.from(c as Uint8Array);
      if (size + b.length > limit) {
        discard(body);
        break;
      }
      chunks.push(b);
      size += b.length;
    }
  } catch {
    // A broken error body is not worth failing the request over.
  }
  return Buffer.concat(chunks);
}
