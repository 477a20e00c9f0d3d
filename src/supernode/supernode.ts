/** The supernode: task manager + gRPC scheduling service + piece download port. */
import * as path from 'node:path';
import type * as grpc from '@grpc/grpc-js';
import type { Dispatcher } from 'undici';
import { DEFAULTS } from '../common/constants';
import type { Logger } from '../common/logger';
import { newRegistry, supernodeMetrics, type Registry, type SupernodeMetrics } from '../common/metrics';
import { RateLimiter, uplinkLimiter } from '../common/ratelimit';
import type { RangeFront } from '../common/range-front';
import { joinHostPort } from '../common/net';
import { sourceAgent } from '../common/http';
import { LevelTaskStore, type TaskStore } from './store';
import { TaskManager } from './task-manager';
import { startGrpcServer, supernodeHandlers } from './grpc-server';
import { createPieceServer } from './piece-server';
import type { SchedulerOptions } from './scheduler';
import type { CachePolicy, Eviction } from './cache-gc';
import { makeHomeDirs } from '../common/dirs';

export interface SupernodeOptions {
  homeDir: string;
  /** Address peers are told to dial for pieces held by the supernode. */
  advertiseIp: string;
  /** gRPC port; 0 picks a free one. */
  port?: number;
  /** Piece download port; 0 picks a free one. */
  downloadPort?: number;
  /** Address both servers listen on. */
  listenHost?: string;
  /** Cap on bytes/s pulled from sources, all tasks together; 0 = unlimited. */
  maxBandwidthBytesPerSec?: number;
  /** Cap on bytes/s of pieces served to peers, all uploads together; 0 = unlimited. */
  uploadRateBytesPerSec?: number;
  pieceSize?: number | 'auto';
  /** Longest silence from a source before its fetch fails, ms. */
  sourceTimeoutMs?: number;
  logger: Logger;
  schedulerOptions?: Partial<SchedulerOptions>;
  /** What the cache GC deletes (defaults: DEFAULTS.supernodeTaskExpireMs etc.). */
  cachePolicy?: Partial<CachePolicy>;
  /** How often the cache GC runs, ms; 0 = only after a fetch completes and when asked. */
  gcIntervalMs?: number;
}

export class Supernode {
  readonly register: Registry = newRegistry(true);
  readonly metrics: SupernodeMetrics = supernodeMetrics(this.register);
  port = 0;
  downloadPort = 0;
  private store?: TaskStore;
  private tasks?: TaskManager;
  private grpcServer?: grpc.Server;
  private pieceServer?: RangeFront;
  private dispatcher?: Dispatcher;
  private closing?: Promise<void>;
  private gcTimer?: NodeJS.Timeout;

  constructor(private readonly opts: SupernodeOptions) {}

  async start(): Promise<void> {
    const { opts } = this;
    const listenHost = opts.listenHost ?? '0.0.0.0';
    const dataDir = path.join(opts.homeDir, 'repo');
    makeHomeDirs(dataDir, `home directory ${opts.homeDir}`);
    const store = new LevelTaskStore(path.join(opts.homeDir, 'meta'));
    await store.open();
    this.store = store;
    this.dispatcher = sourceAgent({ headersTimeoutMs: opts.sourceTimeoutMs, bodyTimeoutMs: opts.sourceTimeoutMs });

    // The download port is bound first: its address goes into every assignment.
    this.pieceServer = createPieceServer((id) => this.tasks?.get(id), this.register, this.metrics, opts.logger, uplinkLimiter(opts.uploadRateBytesPerSec ?? 0));
    this.downloadPort = await this.pieceServer.listen(opts.downloadPort ?? DEFAULTS.supernodeDownloadPort, listenHost);

    const bw = opts.maxBandwidthBytesPerSec ?? DEFAULTS.supernodeMaxBandwidthBytesPerSec;
    this.tasks = new TaskManager({
      dataDir,
      store,
      logger: opts.logger,
      metrics: this.metrics,
      dispatcher: this.dispatcher,
      sourceLimiter: bw > 0 ? new RateLimiter(bw) : undefined,
      pieceSize: opts.pieceSize ?? 'auto',
      supernodeAddr: joinHostPort(opts.advertiseIp, this.downloadPort),
      schedulerOptions: opts.schedulerOptions,
      cachePolicy: {
        taskExpireMs: opts.cachePolicy?.taskExpireMs ?? DEFAULTS.supernodeTaskExpireMs,
        maxCacheBytes: opts.cachePolicy?.maxCacheBytes ?? DEFAULTS.supernodeCacheMaxBytes,
        minFreeBytes: opts.cachePolicy?.minFreeBytes ?? DEFAULTS.supernodeMinFreeBytes,
      },
    });
    await this.tasks.removeOrphans();
    const gcEvery = opts.gcIntervalMs ?? DEFAULTS.supernodeGcIntervalMs;
    if (gcEvery > 0) {
      this.gcTimer = setInterval(() => {
        this.collectGarbage().catch((err) => opts.logger.error({ err: String(err) }, 'cache GC failed'));
      }, gcEvery);
      this.gcTimer.unref();
    }
    const { server, port } = await startGrpcServer(
      supernodeHandlers(this.tasks, opts.logger, this.metrics), listenHost, opts.port ?? DEFAULTS.supernodePort);
    this.grpcServer = server;
    this.port = port;
    opts.logger.info({ port, downloadPort: this.downloadPort, advertiseIp: opts.advertiseIp }, 'supernode started');
  }

  /** Runs the cache GC now; resolves with what it deleted. */
  collectGarbage(): Promise<Eviction[]> {
    return this.tasks ? this.tasks.collectGarbage() : Promise.resolve([]);
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      clearInterval(this.gcTimer);
      this.tasks?.close();
      if (this.grpcServer) {
        const s = this.grpcServer;
        await new Promise<void>((res) => {
          const t = setTimeout(() => { s.forceShutdown(); res(); }, 2000);
          s.tryShutdown(() => { clearTimeout(t); res(); });
        });
      }
      await this.pieceServer?.close();
      await this.dispatcher?.close().catch(() => undefined);
      await this.store?.close();
    })();
    return this.closing;
  }
}
