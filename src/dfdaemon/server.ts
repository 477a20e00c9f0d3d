/**
 * The registry mirror: an HTTP server on host_ip:port that docker,
 * containerd and podman point at. It validates each request at the edge,
 * sends blob GETs to the BlobHandler (P2P or direct) and passes everything
 * else to the upstream. Bad input gets a 4xx in the registry error format;
 * nothing a client sends can crash the process.
 *
 * The BlobSource is injected and owned by the caller (the CLI closes it):
 * the server only uses it.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { DfError, toDfError } from '../common/errors';
import { type Logger, silentLogger } from '../common/logger';
import { dfdaemonMetrics, type DfdaemonMetrics, newRegistry, type Registry } from '../common/metrics';
import { RateLimiter } from '../common/ratelimit';
import type { BlobSource } from '../peer/blob-source';
import { BlobHandler } from './blob-handler';
import type { DfdaemonConfig } from './config';
import { passThrough, type RequestContext } from './passthrough';
import { ProxyRules } from './proxy-rules';
import { API_VERSION_HEADER, rawRegistryError, RegistryError, sendRegistryError } from './registry-errors';
import { parseRoute, splitTarget, type Route } from './routes';
import { Upstream } from './upstream';
import { pullScope } from './upstream-auth';

export interface DfdaemonServerOptions {
  config: DfdaemonConfig;
  /** The P2P network; absent: blobs are fetched from the upstream directly. */
  blobSource?: BlobSource;
  logger?: Logger;
  /** Where the dfdaemon metrics are registered and what /metrics serves. */
  metricsRegistry?: Registry;
  /** How long close() lets in-flight responses finish before cutting them, ms. */
  shutdownGraceMs?: number;
}

const DEFAULT_SHUTDOWN_GRACE_MS = 5_000;

export class DfdaemonServer {
  private readonly config: DfdaemonConfig;
  private readonly logger: Logger;
  private readonly registry: Registry;
  private readonly metrics: DfdaemonMetrics;
  private readonly upstream: Upstream;
  private readonly blobs: BlobHandler;
  private readonly server: Server;
  private readonly graceMs: number;
  private closing: Promise<void> | undefined;

  constructor(opts: DfdaemonServerOptions) {
    this.config = opts.config;
    this.logger = opts.logger ?? silentLogger();
    this.registry = opts.metricsRegistry ?? newRegistry();
    this.metrics = dfdaemonMetrics(this.registry);
    this.graceMs = opts.shutdownGraceMs ?? DEFAULT_SHUTDOWN_GRACE_MS;
    this.upstream = new Upstream({ mirror: opts.config.registryMirror, logger: this.logger });
    this.blobs = new BlobHandler({
      upstream: this.upstream,
      blobSource: opts.blobSource,
      rules: new ProxyRules(opts.config.proxies),
      limiter: new RateLimiter(opts.config.rateLimitBytesPerSec),
      metrics: this.metrics,
    });
    this.server = createServer((req, res) => this.onRequest(req, res));
    // Bad bytes on a socket are the client's problem, not ours.
    this.server.on('clientError', (err, socket) => {
      const code = (err as NodeJS.ErrnoException).code;
      this.logger.debug({ err: err.message, code }, 'bad HTTP request from client');
      if (socket.writable) socket.end(rawRegistryError(code));
      else socket.destroy();
    });
  }

  /** The upstream API base actually used (Docker Hub mapped to registry-1.docker.io). */
  get upstreamBase(): string {
    return this.upstream.apiBase;
  }

  async start(): Promise<{ port: number; host: string }> {
    const { port, hostIp } = this.config;
    await new Promise<void>((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException) => {
        reject(new DfError('DF_ERR_INVALID_ARGUMENT', `cannot listen on ${hostIp}:${port}: ${err.code ?? err.message}`, { cause: err }));
      };
      this.server.once('error', onError);
      this.server.listen(port, hostIp, () => {
        this.server.off('error', onError);
        resolve();
      });
    });
    this.server.on('error', (err) => this.logger.error({ err: err.message }, 'server error'));
    const addr = this.server.address() as AddressInfo;
    this.logger.info({ host: addr.address, port: addr.port, upstream: this.upstream.apiBase }, 'dfdaemon listening');
    return { port: addr.port, host: addr.address };
  }

  /** Stops accepting, lets in-flight responses finish for the grace period, then cuts them. Idempotent. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      if (this.server.listening) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(() => this.server.closeAllConnections(), this.graceMs);
          timer.unref();
          this.server.close(() => {
            clearTimeout(timer);
            resolve();
          });
          this.server.closeIdleConnections();
        });
      }
      await this.upstream.close();
    })();
    return this.closing;
  }

  private onRequest(req: IncomingMessage, res: ServerResponse): void {
    const startedMs = performance.now();
    const { path, query } = splitTarget(req.url ?? '/');
    const ac = new AbortController();
    const ctx: RequestContext = {
      req, res, path, query,
      signal: ac.signal,
      log: this.logger.child({ method: req.method, path }),
      via: 'local',
    };
    let routeLabel = 'invalid';
    res.on('close', () => {
      if (!res.writableFinished) ac.abort();
      const status = res.writableFinished ? String(res.statusCode) : 'aborted';
      this.metrics.requests.inc({ route: routeLabel, via: ctx.via, status });
      this.metrics.duration.observe({ route: routeLabel }, (performance.now() - startedMs) / 1000);
      ctx.log.debug({ status, via: ctx.via, ms: Math.round(performance.now() - startedMs) }, 'request done');
    });
    // Errors on the client socket surface through 'close'; never let them be unhandled.
    req.on('error', () => undefined);
    res.on('error', () => undefined);

    let route: Route;
    try {
      route = parseRoute(path);
    } catch (e) {
      this.fail(ctx, e);
      return;
    }
    routeLabel = route.kind;
    this.dispatch(ctx, route).catch((e) => this.fail(ctx, e));
  }

  private async dispatch(ctx: RequestContext, route: Route): Promise<void> {
    const method = ctx.req.method ?? 'GET';
    const readOnly = method === 'GET' || method === 'HEAD';
    switch (route.kind) {
      case 'healthz':
      case 'metrics': {
        if (!readOnly) throw new RegistryError(405, 'UNSUPPORTED', `${method} not allowed on ${ctx.path}`);
        const isMetrics = route.kind === 'metrics';
        const body = isMetrics ? await this.registry.metrics() : 'ok\n';
        ctx.res.writeHead(200, {
          'content-type': isMetrics ? this.registry.contentType : 'text/plain; charset=utf-8',
          'content-length': Buffer.byteLength(body),
        });
        ctx.res.end(method === 'HEAD' ? undefined : body);
        return;
      }
      case 'base':
        await passThrough(ctx, this.upstream, { upstreamPath: '/v2/', scope: '' });
        return;
      case 'catalog':
        await passThrough(ctx, this.upstream, { upstreamPath: '/v2/_catalog', scope: 'registry:catalog:*' });
        return;
      case 'blob':
        if (method === 'GET') {
          await this.blobs.handle(ctx, route.name, route.digest);
          return;
        }
        break;
      default:
        break;
    }
    const repo = this.upstream.repoName(route.name);
    await passThrough(ctx, this.upstream, {
      upstreamPath: `/v2/${repo}${route.rest}`,
      scope: readOnly ? pullScope(repo) : `repository:${repo}:pull,push`,
    });
  }

  /** Answers a failed request; a response already streaming is cut. */
  private fail(ctx: RequestContext, e: unknown): void {
    // Drain an unread request body so the connection can be reused.
    if (!ctx.req.readableEnded) ctx.req.resume();
    if (ctx.signal.aborted) return;
    let err: RegistryError;
    if (e instanceof RegistryError) {
      err = e;
    } else {
      const df = toDfError(e);
      if (df.code === 'DF_ERR_SOURCE_UNREACHABLE' || df.code === 'DF_ERR_SOURCE_STATUS') {
        ctx.log.warn({ code: df.code, err: df.message }, 'upstream failed');
        err = new RegistryError(502, 'UNKNOWN', df.message);
      } else {
        ctx.log.error({ code: df.code, err: df.message }, 'request failed');
        err = new RegistryError(500, 'UNKNOWN', 'internal error');
      }
    }
    if (ctx.res.headersSent) {
      ctx.res.destroy();
      return;
    }
    sendRegistryError(ctx.res, err, err.status === 405 ? { ...API_VERSION_HEADER, allow: 'GET, HEAD' } : {});
  }
}
