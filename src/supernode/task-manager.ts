/**
 * Tasks by id: registers peers, starts each source fetch once, serves cached
 * tasks from disk after a restart, and routes stream messages to the task.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { isIP } from 'node:net';
import type { Dispatcher } from 'undici';
import { DfError, invalidArgument } from '../common/errors';
import { parseDigest } from '../common/digest';
import { headerProblem, parseHttpUrl, taskIdFor } from '../common/url';
import { SUPERNODE_HOLDER_ID } from '../common/constants';
import { joinHostPort } from '../common/net';
import { redactUrl } from '../common/http';
import type { Logger } from '../common/logger';
import type { SupernodeMetrics } from '../common/metrics';
import type { RateLimiter } from '../common/ratelimit';
import type { RegisterRequest, RegisterResponse, Hello } from '../common/proto';
import { SourceFetch } from './cdn';
import type { TaskStore } from './store';
import { Task, type PeerStream } from './task';
import type { SchedulerOptions } from './scheduler';
import { chooseEvictions, type CacheEntry, type CachePolicy, type Eviction } from './cache-gc';

export interface TaskManagerOptions {
  /** Directory holding the pieces of every task, one file per task. */
  dataDir: string;
  store: TaskStore;
  logger: Logger;
  metrics: SupernodeMetrics;
  dispatcher: Dispatcher;
  sourceLimiter?: RateLimiter;
  pieceSize: number | 'auto';
  supernodeAddr: string;
  schedulerOptions?: Partial<SchedulerOptions>;
  /** What the cache GC deletes; absent = nothing. */
  cachePolicy?: CachePolicy;
}

/** A registration marks the file's mtime as its last use at most this often. */
const TOUCH_EVERY_MS = 60_000;

const PEER_ID_RE = /^[A-Za-z0-9._:@-]{1,128}$/;
const TASK_ID_RE = /^[a-f0-9]{64}$/;
const MAX_HEADERS = 64;
const MAX_HEADER_BYTES = 16 * 1024;
/** How many failed tasks, and for how long, a stream opened late is told the cause of (see TaskManager.failures). */
const FAILURES_KEPT = 1024;
const FAILURE_KEPT_MS = 60_000;

/** A TCP port; 0 too when allowZero (a piece server still starting). */
export function validPort(port: unknown, allowZero = false): port is number {
  return Number.isInteger(port) && (port as number) >= (allowZero ? 0 : 1) && (port as number) <= 65535;
}

export function validateRegister(req: RegisterRequest): void {
  parseHttpUrl(req.url);
  if (!PEER_ID_RE.test(req.peerId)) throw invalidArgument('peer_id must be 1-128 characters of [A-Za-z0-9._:@-]');
  if (req.peerId === SUPERNODE_HOLDER_ID) throw invalidArgument(`peer_id "${SUPERNODE_HOLDER_ID}" is reserved for the supernode`);
  if (!isIP(req.peerIp)) throw invalidArgument(`peer_ip "${String(req.peerIp).slice(0, 64)}" is not an IP address`);
  if (!validPort(req.peerPort, true)) throw invalidArgument('peer_port must be 0 (not serving yet) or 1-65535');
  if (req.expectedDigest) parseDigest(req.expectedDigest);
  if (req.identifier.length > 512) throw invalidArgument('identifier longer than 512 characters');
  const names = Object.keys(req.headers);
  if (names.length > MAX_HEADERS) throw invalidArgument(`more than ${MAX_HEADERS} headers`);
  let bytes = 0;
  for (const [k, v] of Object.entries(req.headers)) {
    bytes += k.length + v.length;
    const problem = headerProblem(k, v);
    if (problem) throw invalidArgument(`header "${k.slice(0, 40)}" cannot be sent to the source: ${problem}`);
  }
  if (bytes > MAX_HEADER_BYTES) throw invalidArgument('headers larger than 16 KiB');
}

export class TaskManager {
  private readonly tasks = new Map<string, Task>();
  /**
   * Why recent tasks failed, oldest first: a peer whose registration was
   * answered just before its task failed opens its stream after the task is
   * gone, and should learn the cause, not that the task is unknown.
   */
  private readonly failures = new Map<string, { err: DfError; at: number }>();
  /** Tasks being looked up or started, so concurrent registrations share one fetch. */
  private readonly pending = new Map<string, Promise<Task>>();
  /** Cached tasks being deleted: a registration for one waits, then fetches it again. */
  private readonly evicting = new Map<string, Promise<void>>();
  private gcRun?: Promise<Eviction[]>;
  private gcNext?: Promise<Eviction[]>;
  private closed = false;

  constructor(private readonly opts: TaskManagerOptions) {}

  get(taskId: string): Task | undefined { return this.tasks.get(taskId); }

  get size(): number { return this.tasks.size; }

  async register(req: RegisterRequest): Promise<RegisterResponse> {
    if (this.closed) throw new DfError('DF_ERR_CLOSED', 'supernode is shutting down');
    validateRegister(req);
    const taskId = taskIdFor(req.url, req.filter, req.identifier);
    let task = await this.obtain(taskId, req);
    // Deleted by the cache GC between the lookup and now: look again (it is fetched anew).
    while (task.evicted) task = await this.obtain(taskId, req);
    this.markUsed(task);
    task.dropSilentPeers();
    if (task.peers.get(req.peerId)?.stream) {
      throw invalidArgument(`peer ${req.peerId} is registered for this task and has its scheduling stream open: register under a new peer id`);
    }
    task.peers.set(req.peerId, {
      peerId: req.peerId, ip: req.peerIp, addr: req.peerPort > 0 ? joinHostPort(req.peerIp, req.peerPort) : '', complete: false,
      registeredAt: Date.now(),
    });
    task.log.debug({ peerId: req.peerId, host: req.hostname }, 'peer registered');
    return {
      taskId,
      contentLength: task.contentLength,
      pieceSize: task.pieceSize,
      pieceCount: task.pieceCount,
      sourceComplete: task.sourceComplete,
    };
  }

  /** The task for this id, ready to answer a registration: length and piece size known. */
  private async obtain(taskId: string, req: RegisterRequest): Promise<Task> {
    const existing = this.tasks.get(taskId);
    if (existing && existing.state !== 'failed') {
      if (existing.fetch && existing.state === 'fetching') await existing.fetch.info;
      return existing;
    }
    let p = this.pending.get(taskId);
    if (!p) {
      p = this.create(taskId, req).finally(() => this.pending.delete(taskId));
      this.pending.set(taskId, p);
    }
    return p;
  }

  private async create(taskId: string, req: RegisterRequest): Promise<Task> {
    const { opts } = this;
    await this.evicting.get(taskId);
    const filePath = path.join(opts.dataDir, taskId);
    const task = new Task(taskId, filePath, {
      logger: opts.logger, metrics: opts.metrics, supernodeAddr: opts.supernodeAddr, schedulerOptions: opts.schedulerOptions,
    });
    const cached = await this.loadCached(taskId, filePath);
    if (cached) {
      task.markReady(cached.contentLength, cached.pieceSize, cached.pieces);
      this.tasks.set(taskId, task);
      opts.metrics.tasks.set(this.tasks.size);
      task.log.info('serving cached task from disk');
      return task;
    }
    const fetch = new SourceFetch({
      url: req.url,
      headers: req.headers,
      filePath,
      pieceSize: opts.pieceSize,
      expectedSha256: req.expectedDigest ? parseDigest(req.expectedDigest).hex : undefined,
      dispatcher: opts.dispatcher,
      limiter: opts.sourceLimiter,
      logger: task.log,
      onBytes: (n) => opts.metrics.sourceBytes.inc(n),
    });
    task.fetch = fetch;
    this.tasks.set(taskId, task);
    opts.metrics.tasks.set(this.tasks.size);
    fetch.on('piece', (n: number, sha: string) => task.pieceArrived(n, sha));
    fetch.on('done', (sha: string) => {
      opts.metrics.sourceFetches.inc({ result: 'success' });
      task.markReady(fetch.contentLength, fetch.pieceSize, fetch.pieces);
      task.fetch = undefined;
      opts.store.put({
        taskId, urlPath: redactUrl(req.url), contentLength: fetch.contentLength, pieceSize: fetch.pieceSize,
        pieces: fetch.pieces, sha256: sha, completedAt: Date.now(),
      }).then(
        () => { if (opts.cachePolicy && (opts.cachePolicy.maxCacheBytes > 0 || opts.cachePolicy.minFreeBytes > 0)) this.gcSoon(); },
        (err) => task.log.error({ err: String(err) }, 'could not store task metadata'),
      );
      task.touchedAt = Date.now();
    });
    fetch.on('error', (err: DfError) => {
      opts.metrics.sourceFetches.inc({ result: 'failure' });
      this.drop(task, err);
    });
    fetch.start();
    const info = await fetch.info;
    task.setLength(info.contentLength, info.pieceSize);
    return task;
  }

  /** A failed task leaves nothing behind: no file, no metadata, no swarm. */
  private drop(task: Task, err: DfError): void {
    task.fail(err);
    this.failures.delete(task.id);
    this.failures.set(task.id, { err, at: Date.now() });
    if (this.failures.size > FAILURES_KEPT) this.failures.delete(this.failures.keys().next().value!);
    if (this.tasks.get(task.id) === task) this.tasks.delete(task.id);
    this.opts.metrics.tasks.set(this.tasks.size);
    fs.rm(task.filePath, { force: true }).catch(() => undefined);
    this.opts.store.delete(task.id).catch(() => undefined);
  }

  private async loadCached(taskId: string, filePath: string) {
    const meta = await this.opts.store.get(taskId);
    if (!meta) return undefined;
    const st = await fs.stat(filePath).catch(() => undefined);
    if (!st || st.size !== meta.contentLength) {
      this.opts.logger.warn({ taskId }, 'cached task file missing or wrong size; fetching again');
      await this.opts.store.delete(taskId);
      return undefined;
    }
    return meta;
  }

  /** Records a use of the task; on disk too (the file's mtime), so that it outlives a restart. */
  private markUsed(task: Task): void {
    const now = Date.now();
    task.lastUsedAt = now;
    if (task.state === 'ready' && now - task.touchedAt >= TOUCH_EVERY_MS) {
      task.touchedAt = now;
      fs.utimes(task.filePath, now / 1000, now / 1000).catch(() => undefined);
    }
  }

  /**
   * Deletes the cached tasks the policy picks (see cache-gc.ts), from memory,
   * the metadata store and the disk. Runs one at a time; a call during a run
   * waits for it and then runs again.
   */
  collectGarbage(): Promise<Eviction[]> {
    if (!this.gcRun) {
      this.gcRun = this.gcOnce().finally(() => { this.gcRun = undefined; });
      return this.gcRun;
    }
    // One more pass after the running one, shared by every caller meanwhile.
    this.gcNext ??= this.gcRun.catch(() => undefined).then(() => {
      this.gcNext = undefined;
      return this.collectGarbage();
    });
    return this.gcNext;
  }

  private gcSoon(): void {
    this.collectGarbage().catch((err) => this.opts.logger.error({ err: String(err) }, 'cache GC failed'));
  }

  private async gcOnce(): Promise<Eviction[]> {
    const { opts } = this;
    const policy = opts.cachePolicy;
    if (!policy || this.closed) return [];
    const entries: CacheEntry[] = [];
    const seen = new Set<string>();
    for (const t of this.tasks.values()) t.dropSilentPeers();
    for (const meta of await opts.store.list()) {
      seen.add(meta.taskId);
      const t = this.tasks.get(meta.taskId);
      if (t) {
        entries.push({ taskId: meta.taskId, bytes: meta.contentLength, lastUsedAt: t.lastUsedAt, busy: t.busy() });
        continue;
      }
      const st = await fs.stat(path.join(opts.dataDir, meta.taskId)).catch(() => undefined);
      if (!st) continue;
      entries.push({ taskId: meta.taskId, bytes: st.size, lastUsedAt: st.mtimeMs, busy: this.pending.has(meta.taskId) });
    }
    // Fetches in progress take space and are never deleted.
    for (const t of this.tasks.values()) {
      if (!seen.has(t.id)) entries.push({ taskId: t.id, bytes: Math.max(0, t.availableBytes()), lastUsedAt: t.lastUsedAt, busy: true });
    }
    let free = 0;
    if (policy.minFreeBytes > 0) {
      const fsInfo = await fs.statfs(opts.dataDir).catch(() => undefined);
      free = fsInfo ? fsInfo.bavail * fsInfo.bsize : Number.MAX_SAFE_INTEGER;
    }
    let cached = entries.reduce((s, e) => s + e.bytes, 0);
    const done: Eviction[] = [];
    for (const ev of chooseEvictions(entries, policy, Date.now(), free)) {
      if (this.closed) break;
      // Checked again now, synchronously: a peer may have registered during the awaits above.
      const t = this.tasks.get(ev.taskId);
      if (t ? t.busy() : this.pending.has(ev.taskId) || this.evicting.has(ev.taskId)) continue;
      if (t) {
        t.evicted = true;
        this.tasks.delete(t.id);
        t.close();
        opts.metrics.tasks.set(this.tasks.size);
      }
      const filePath = path.join(opts.dataDir, ev.taskId);
      const removal = (async () => {
        await opts.store.delete(ev.taskId);
        await fs.rm(filePath, { force: true });
      })().finally(() => this.evicting.delete(ev.taskId));
      this.evicting.set(ev.taskId, removal);
      try {
        await removal;
      } catch (err) {
        opts.logger.error({ taskId: ev.taskId, err: String(err) }, 'could not delete cached task');
        continue;
      }
      cached -= ev.bytes;
      done.push(ev);
      opts.metrics.cacheEvictions.inc({ reason: ev.reason });
      opts.logger.info({ taskId: ev.taskId, reason: ev.reason, bytes: ev.bytes }, 'cached task deleted');
    }
    opts.metrics.cacheBytes.set(cached);
    return done;
  }

  /**
   * Task files with no metadata are what a fetch cut short by a stop left
   * behind: nothing serves them, so they go. Other files are left alone.
   */
  async removeOrphans(): Promise<number> {
    const known = new Set((await this.opts.store.list()).map((m) => m.taskId));
    let removed = 0;
    for (const name of await fs.readdir(this.opts.dataDir)) {
      if (!TASK_ID_RE.test(name) || known.has(name) || this.tasks.has(name) || this.pending.has(name)) continue;
      await fs.rm(path.join(this.opts.dataDir, name), { force: true });
      removed++;
    }
    if (removed > 0) this.opts.logger.info({ removed }, 'deleted task files left by unfinished fetches');
    return removed;
  }

  /** First message of a Pieces stream. */
  hello(stream: PeerStream, hello: Hello): Task {
    if (!TASK_ID_RE.test(hello.taskId)) throw invalidArgument('hello.task_id must be 64 hex characters');
    const task = this.tasks.get(hello.taskId);
    if (!task || task.state === 'failed') {
      const failed = this.failures.get(hello.taskId);
      if (failed && Date.now() - failed.at < FAILURE_KEPT_MS) throw failed.err;
      throw new DfError('DF_ERR_TASK_NOT_FOUND', `task ${hello.taskId.slice(0, 12)} is not known; register first`);
    }
    const entry = task.peers.get(hello.peerId);
    if (!entry) throw new DfError('DF_ERR_TASK_NOT_FOUND', `peer ${hello.peerId.slice(0, 64)} has not registered for this task`);
    if (entry.stream) throw invalidArgument('a scheduling stream for this peer and task is already open');
    entry.stream = stream;
    try {
      task.addPeerStream(entry, hello.have);
    } catch (err) {
      // Refused: the peer has no stream, and a later hello may try again.
      entry.stream = undefined;
      throw err;
    }
    return task;
  }

  leave(peerId: string, taskId: string): void {
    if (taskId) {
      this.tasks.get(taskId)?.removePeer(peerId, 'leave');
      return;
    }
    for (const t of this.tasks.values()) t.removePeer(peerId, 'leave');
  }

  close(): void {
    this.closed = true;
    for (const t of this.tasks.values()) t.close();
    this.tasks.clear();
  }
}
