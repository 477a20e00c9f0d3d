/**
 * The supernode's download port: piece bytes by HTTP range for peers
 * (GET /pieces/<taskId>), plus /metrics and /healthz. A RangeFront answers
 * the piece requests; the HTTP server here answers the rest and every error.
 */
import * as http from 'node:http';
import type { Logger } from '../common/logger';
import type { Registry, SupernodeMetrics } from '../common/metrics';
import type { RateLimiter } from '../common/ratelimit';
import { requestUrl, sendText } from '../common/file-server';
import { RangeFront, sendTarget, type RangeTarget } from '../common/range-front';
import type { Task } from './task';

const PIECE_PATH = /^\/pieces\/([a-f0-9]{64})$/;

const KEEP_ALIVE_MS = 30_000;

/** `limiter` caps all piece uploads together (the supernode's --upload-rate). Listen with the front's listen(). */
export function createPieceServer(
  lookup: (taskId: string) => Task | undefined, register: Registry, metrics: SupernodeMetrics, log: Logger, limiter?: RateLimiter,
): RangeFront {
  const server = http.createServer((req, res) => {
    handle(req, res).catch((err) => {
      log.debug({ err: String(err) }, 'piece upload ended early');
      if (!res.headersSent) sendText(res, 500, 'internal error');
      else res.destroy();
    });
  });
  async function handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = requestUrl(req, res);
    if (!url) return;
    if (req.method !== 'GET' && req.method !== 'HEAD') return sendText(res, 405, 'method not allowed');
    if (url.pathname === '/healthz') return sendText(res, 200, 'ok');
    if (url.pathname === '/metrics') return sendText(res, 200, await register.metrics(), register.contentType);
    const m = PIECE_PATH.exec(url.pathname);
    if (!m) return sendText(res, 404, 'not found');
    const target = taskTarget(m[1]);
    if (!target) return sendText(res, 404, 'task not found');
    await sendTarget(req, res, target, { onBytes: (n) => metrics.uploadBytes.inc(n), limiter });
  }
  /** A task's file as far as it may be served, or undefined when there is none (unknown or failed). */
  function taskTarget(taskId: string): RangeTarget | undefined {
    const task = lookup(taskId);
    if (!task || task.state === 'failed') return undefined;
    return { filePath: task.filePath, available: task.availableBytes(), total: task.contentLength >= 0 ? task.contentLength : '*' };
  }
  server.keepAliveTimeout = KEEP_ALIVE_MS;
  return new RangeFront(server, {
    resolve: (target) => {
      const m = PIECE_PATH.exec(target);
      return m ? taskTarget(m[1]) : undefined;
    },
    limiter,
    onBytes: (n) => metrics.uploadBytes.inc(n),
    idleTimeoutMs: KEEP_ALIVE_MS,
    logger: log,
  });
}
