/**
 * What `dfget` does: P2P download through a supernode, back to the source
 * when that fails (unless --notbs), whole-file checks, and an atomic rename:
 * FILE appears only when every byte has verified.
 */
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import * as os from 'node:os';
import { randomBytes } from 'node:crypto';
import { DfError, toDfError } from '../common/errors';
import type { Logger } from '../common/logger';
import { RateLimiter, uplinkLimiter } from '../common/ratelimit';
import { DEFAULTS } from '../common/constants';
import { hashFile } from '../common/digest';
import { P2PDownload } from './downloader';
import type * as BackSource from './backsource';
import type * as Http from '../common/http';
import { dataFilePath, PieceUploader } from './uploader';
import { findUploader, handOverToUploader } from './uploader-launcher';
import { checkOutput } from './output';
import { SIDECAR_SUFFIX, type TaskSidecar } from './uploader-files';
import { SupernodeClients } from '../supernode/client';
import { makeHomeDirs } from '../common/dirs';

export interface DfgetOptions {
  url: string;
  output: string;
  nodes: string[];
  rateLimitBytesPerSec: number;
  headers: Record<string, string>;
  filter: string[];
  identifier: string;
  /** Hex sha256 the file must have. */
  sha256?: string;
  /** Hex md5 the file must have. */
  md5?: string;
  timeoutMs: number;
  notbs: boolean;
  aliveTimeMs: number;
  uploadRateBytesPerSec: number;
  home: string;
  logger: Logger;
  /** Progress: bytes done, total (-1 unknown). */
  onProgress?: (done: number, total: number) => void;
  /**
   * Stops the download when aborted (a signal to the CLI): dfget then rejects
   * with the DfError given as the reason, having removed what it wrote and
   * left the swarm, and does not turn to the source.
   */
  signal?: AbortSignal;
}

export interface DfgetResult {
  via: 'p2p' | 'source';
  length: number;
  ms: number;
  /** Why P2P was not used, when via is 'source'. */
  fallbackReason?: string;
}

export function newPeerId(): string {
  const host = os.hostname().replace(/[^A-Za-z0-9.-]/g, '').slice(0, 40) || 'host';
  return `${host}-${process.pid}-${randomBytes(4).toString('hex')}`;
}

function verify(opts: DfgetOptions, sha256: string, md5: string): void {
  if (opts.sha256 && sha256 !== opts.sha256) {
    throw new DfError('DF_ERR_DIGEST_MISMATCH', `downloaded file has sha256:${sha256}, expected sha256:${opts.sha256}`);
  }
  if (opts.md5 && md5 !== opts.md5) {
    throw new DfError('DF_ERR_DIGEST_MISMATCH', `downloaded file has md5 ${md5}, expected ${opts.md5}`);
  }
}

/**
 * Makes the temporary output from the P2P data file: a hard link (no second
 * write of the whole file; the uploader keeps serving the same bytes), or a
 * copy across file systems. A digest to check is checked on the data file
 * first, so a file that fails it never becomes the output.
 */
async function linkVerified(opts: DfgetOptions, src: string, dst: string): Promise<void> {
  if (opts.sha256 || opts.md5) {
    const sums = await hashFile(src, { sha256: Boolean(opts.sha256), md5: Boolean(opts.md5) });
    verify(opts, sums.sha256, sums.md5);
  }
  try {
    await fsp.link(src, dst);
  } catch {
    await fsp.copyFile(src, dst, fs.constants.COPYFILE_FICLONE);
  }
}

/** Moves (or copies, across file systems) a failed download's data file to tmp; undefined when that fails. */
async function keepHeld(d: P2PDownload, dataPath: string, tmp: string): Promise<BackSource.HeldPieces | undefined> {
  const pieces = { contentLength: d.contentLength, pieceSize: d.pieceSize, held: new Set(d.held.keys()) };
  try {
    await fsp.rename(dataPath, tmp);
    return pieces;
  } catch {
    try {
      await fsp.copyFile(dataPath, tmp);
      return pieces;
    } catch {
      return undefined;
    }
  }
}

export async function dfget(opts: DfgetOptions): Promise<DfgetResult> {
  const started = Date.now();
  await checkOutput(opts.output, opts.home);
  const outAbs = path.resolve(opts.output);
  const peerId = newPeerId();
  const tmp = path.join(path.dirname(outAbs), `.${path.basename(outAbs)}.${peerId}.dfget.tmp`);
  const limiter = new RateLimiter(opts.rateLimitBytesPerSec);
  const log = opts.logger.child({ peerId });
  const abort = new AbortController();
  let current: P2PDownload | undefined;
  // What becomes of this process's piece server, once FILE is in place (see p2p()).
  const serving: { end?: () => Promise<void> } = {};
  const stop = (err: DfError) => {
    if (abort.signal.aborted) return;
    abort.abort(err);
    current?.cancel(err);
  };
  const timer = setTimeout(() => {
    stop(new DfError('DF_ERR_TIMEOUT', `download did not finish within ${Math.round(opts.timeoutMs / 1000)} s`));
  }, opts.timeoutMs);
  const onCancel = () => stop(toDfError(opts.signal?.reason ?? new DfError('DF_ERR_CLOSED', 'download cancelled')));
  if (opts.signal?.aborted) onCancel();
  opts.signal?.addEventListener('abort', onCancel, { once: true });
  try {
    let fallbackReason: string | undefined;
    // Pieces a failed P2P download verified, moved to tmp (only when a digest will check the result).
    const left: { pieces?: BackSource.HeldPieces } = {};
    if (opts.nodes.length > 0) {
      try {
        const length = await p2p(opts, peerId, limiter, log, tmp, (d) => { current = d; if (abort.signal.aborted) d.cancel(abort.signal.reason as DfError); }, left, serving);
        await fsp.rename(tmp, outAbs);
        return { via: 'p2p', length, ms: Date.now() - started };
      } catch (err) {
        const e = abort.signal.aborted ? (abort.signal.reason as DfError) : toDfError(err);
        if (abort.signal.aborted || e.code === 'DF_ERR_TIMEOUT' || e.code === 'DF_ERR_DIGEST_MISMATCH' || e.code === 'DF_ERR_OUTPUT_PATH') throw e;
        if (opts.notbs) {
          throw e.code.startsWith('DF_ERR_SOURCE') || e.code === 'DF_ERR_SUPERNODE_UNAVAILABLE' ? e
            : new DfError('DF_ERR_P2P_FAILED', `P2P download failed and --notbs forbids the source: ${e.message}`);
        }
        fallbackReason = `${e.code}: ${e.message}`;
        log.warn({ code: e.code, err: e.message }, 'P2P download failed; fetching from the source');
      }
    } else if (opts.notbs) {
      throw new DfError('DF_ERR_SUPERNODE_UNAVAILABLE', 'no supernode given (--node) and --notbs forbids the source');
    }
    // The source path (and undici with it) is loaded only when it is taken:
    // a P2P download starts faster and costs less CPU without it.
    const { sourceAgent } = require('../common/http') as typeof Http;
    const { fetchFromSource, fetchMissingFromSource } = require('./backsource') as typeof BackSource;
    const dispatcher = sourceAgent();
    try {
      if (left.pieces) {
        try {
          const r = await fetchMissingFromSource({
            url: opts.url, headers: opts.headers, filePath: tmp, pieces: left.pieces, dispatcher, limiter, signal: abort.signal,
            onBytes: opts.onProgress,
          });
          verify(opts, r.sha256, r.md5);
          await fsp.rename(tmp, outAbs);
          log.info({ fromSource: r.fetched, held: left.pieces.held.size }, 'missing pieces fetched from the source');
          return { via: 'source', length: r.length, ms: Date.now() - started, fallbackReason };
        } catch (err) {
          if (abort.signal.aborted) throw err;
          const e = toDfError(err);
          log.warn({ code: e.code, err: e.message }, 'the missing pieces could not be completed from the source; fetching the whole file');
        }
      }
      const r = await fetchFromSource({
        url: opts.url, headers: opts.headers, filePath: tmp, dispatcher, limiter, signal: abort.signal,
        onBytes: opts.onProgress, digestChecked: Boolean(opts.sha256 || opts.md5),
      });
      verify(opts, r.sha256, r.md5);
      await fsp.rename(tmp, outAbs);
      return { via: 'source', length: r.length, ms: Date.now() - started, fallbackReason };
    } catch (err) {
      throw abort.signal.aborted ? (abort.signal.reason as DfError) : err;
    } finally {
      await dispatcher.close().catch(() => undefined);
    }
  } finally {
    clearTimeout(timer);
    opts.signal?.removeEventListener('abort', onCancel);
    await fsp.rm(tmp, { force: true });
    await serving.end?.();
  }
}

async function p2p(opts: DfgetOptions, peerId: string, limiter: RateLimiter, log: Logger, tmp: string,
  setCurrent: (d: P2PDownload) => void, left: { pieces?: BackSource.HeldPieces }, serving: { end?: () => Promise<void> }): Promise<number> {
  const dataDir = path.join(opts.home, 'data');
  // While we download, an uploader already running holds a lease of two ping
  // periods beyond --alivetime, so it cannot expire (and leave the swarm)
  // under our feet however short --alivetime is; at the end it gets exactly
  // --alivetime.
  const pingMs = Math.min(30_000, Math.max(1_000, opts.aliveTimeMs / 2));
  const leaseMs = opts.aliveTimeMs + 2 * pingMs;
  let keepAlive: NodeJS.Timeout | undefined;
  // An uploader this home already runs (an earlier dfget's) serves our pieces.
  // Otherwise this process serves them while it downloads, and at the end
  // hands its listening socket to a new detached uploader that serves them
  // on after we exit: no second program starts beside every download.
  const uploader = await findUploader(opts.home, leaseMs);
  // An unusable home is the operator's setting to fix, not a reason to load the source instead.
  makeHomeDirs(dataDir, `--home ${opts.home}`, 'DF_ERR_OUTPUT_PATH');
  const server = uploader ? undefined : new PieceUploader({ dataDir, limiter: uplinkLimiter(opts.uploadRateBytesPerSec), logger: log });
  if (uploader) {
    keepAlive = setInterval(() => void uploader.keepAlive(leaseMs), pingMs);
    keepAlive.unref();
  }
  await server?.start(0);
  let sidecar: string | undefined;
  let registeredNode: string | undefined;
  let dataPath: string | undefined;
  let done = 0;
  // The uploader that serves the task is named beside it: an uploader
  // starting up clears the tasks of uploaders that are gone (a dfget killed
  // while serving its own pieces, say).
  const writeSidecar = (uploaderPid: number) => {
    const side: TaskSidecar = { taskId: d.taskId, peerId, node: registeredNode!, uploaderPid };
    fs.writeFileSync(sidecar!, JSON.stringify(side));
  };
  const clients = new SupernodeClients();
  const d: P2PDownload = new P2PDownload({
    nodes: opts.nodes, url: opts.url, headers: opts.headers, filter: opts.filter, identifier: opts.identifier,
    expectedDigest: opts.sha256 ? `sha256:${opts.sha256}` : '',
    peerId, uploadPort: uploader?.port ?? server!.port,
    dataPath: (taskId) => dataFilePath(dataDir, taskId, peerId),
    limiter, logger: log, connectTimeoutMs: DEFAULTS.supernodeConnectTimeoutMs, clients,
    onRegistered: async (info) => {
      registeredNode = info.node;
      dataPath = info.dataPath;
      sidecar = info.dataPath + SIDECAR_SUFFIX;
      writeSidecar(uploader?.pid ?? process.pid);
    },
  });
  setCurrent(d);
  d.on('piece', (_n: number, _off: number, len: number) => { done += len; opts.onProgress?.(done, d.contentLength); });
  try {
    const r = await d.run();
    // Once FILE is in place, the pieces go on being served by a detached uploader.
    if (server) serving.end = () => handOver(opts, server, writeSidecar, log);
    log.debug({ fromPeers: r.fromPeers, fromSupernode: r.fromSupernode }, 'all pieces verified');
    await linkVerified(opts, r.dataPath, tmp);
    return r.contentLength;
  } catch (err) {
    // Nothing of a failed download stays to be served.
    serving.end = undefined;
    await server?.close();
    if (dataPath && d.held.size > 0 && d.contentLength > 0 && (opts.sha256 || opts.md5)) {
      // Its verified pieces need not come from the source again: they become
      // the start of the output (never served: the sidecar goes below).
      left.pieces = await keepHeld(d, dataPath, tmp);
    }
    if (dataPath) await fsp.rm(dataPath, { force: true });
    if (sidecar) await fsp.rm(sidecar, { force: true });
    if (registeredNode && d.taskId) await clients.leave(registeredNode, peerId, d.taskId);
    throw err;
  } finally {
    clients.close();
    if (keepAlive) clearInterval(keepAlive);
    if (uploader) await uploader.keepAlive(opts.aliveTimeMs);
  }
}

/** Hands this process's piece server to a new detached uploader (see handOverToUploader); never throws. */
async function handOver(opts: DfgetOptions, server: PieceUploader, adopting: (pid: number) => void, log: Logger): Promise<void> {
  try {
    const pid = await handOverToUploader({
      home: opts.home, uploadRateBytesPerSec: opts.uploadRateBytesPerSec, aliveTimeMs: opts.aliveTimeMs, server, adopting,
    });
    log.debug({ pid, port: server.port }, 'piece server handed to the uploader');
  } catch (err) {
    log.warn({ err: toDfError(err).message }, 'the uploader did not start: this host will not serve the file');
    await server.close();
  }
}
