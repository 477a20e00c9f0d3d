/**
 * Finds this home's detached uploader, or starts one, and keeps it alive; or
 * makes the running dfget the home's uploader until it hands over to one.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as http from 'node:http';
import { DfError } from '../common/errors';
import type { Logger } from '../common/logger';
import { uplinkLimiter } from '../common/ratelimit';
import { PieceUploader, aliveRoute } from './uploader';
import {
  readUploaderInfo, pidAlive, acquireLock, lockOwner, lockPath, infoPath, writeUploaderInfo, moveSidecars, sidecarsOf, type AdoptMessage,
} from './uploader-files';

export interface UploaderHandle {
  port: number;
  pid: number;
  /** Asks the uploader to stay for aliveTimeMs from now (it never shortens its life). */
  keepAlive(aliveTimeMs: number): Promise<void>;
}

/** Asks the uploader on this host to stay alive; false when nobody answers. */
function ping(port: number, aliveTimeMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const req = http.request({ host: '127.0.0.1', port, method: 'POST', path: `/alive?ms=${Math.round(aliveTimeMs)}`, timeout: 2_000 }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode === 200));
      res.on('error', () => resolve(false));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(false));
    req.end();
  });
}

function handle(port: number, pid: number): UploaderHandle {
  return {
    port, pid,
    keepAlive: async (ms) => { await ping(port, ms); },
  };
}

/** This home's running uploader, asked to stay for aliveTimeMs; undefined when none answers. */
export async function findUploader(home: string, aliveTimeMs: number): Promise<UploaderHandle | undefined> {
  const info = await readUploaderInfo(home);
  if (info && pidAlive(info.pid) && await ping(info.port, aliveTimeMs)) return handle(info.port, info.pid);
  return undefined;
}

/** How long a dfget handing over its socket waits for the uploads it is still sending. */
const DRAIN_MS = 2_000;

/** The detached uploader's log, opened for appending (the uploader outlives us: never our pipes). */
function uploaderLog(home: string): number {
  const logDir = path.join(home, 'logs');
  fs.mkdirSync(logDir, { recursive: true });
  return fs.openSync(path.join(logDir, 'uploader.log'), 'a');
}

/** This process serving the home's pieces itself, for as long as it runs. */
export interface LocalUploader {
  port: number;
  pid: number;
  /** Asks it to serve for ms more after this process is done (other dfget runs under the home do the same by POST /alive). */
  keepAlive(ms: number): void;
  /**
   * Starts the detached uploader that handOff() will hand over to; it waits
   * for the socket, so that its start-up is not part of our exit.
   */
  prepare(): void;
  /**
   * At the end of this process: when some task under the home names us as
   * its uploader, a detached uploader takes over the lock, the tasks and the
   * listening socket (so the port stays and nothing is refused meanwhile),
   * and the uploads under way here finish (DRAIN_MS at most); otherwise the
   * home is simply let go.
   */
  handOff(): Promise<void>;
}

/**
 * Makes this process the home's uploader, serving from its own piece server
 * at once: nothing waits for another program to start. Undefined when
 * another live process holds the home's lock.
 */
export async function serveHere(opts: { home: string; uploadRateBytesPerSec: number; aliveTimeMs: number; logger: Logger }): Promise<LocalUploader | undefined> {
  const { home, logger } = opts;
  fs.mkdirSync(home, { recursive: true });
  if (await acquireLock(home) !== undefined) return undefined;
  const dataDir = path.join(home, 'data');
  const lease = { expiresAt: Date.now() + opts.aliveTimeMs };
  const server = new PieceUploader({
    dataDir, limiter: uplinkLimiter(opts.uploadRateBytesPerSec), logger, extraRoute: aliveRoute(lease, () => undefined),
  });
  let port: number;
  try {
    port = await server.start(0);
    writeUploaderInfo(home, process.pid, port);
  } catch (err) {
    await server.close();
    fs.rmSync(lockPath(home), { force: true });
    throw err;
  }
  let child: ChildProcess | undefined;
  const prepare = (): ChildProcess | undefined => {
    if (child) return child;
    const logFd = uploaderLog(home);
    try {
      // It learns its alive time from the lease in the message.
      child = spawn(process.execPath, [path.join(__dirname, 'uploader-daemon.js'), '--home', home,
        '--upload-rate', String(opts.uploadRateBytesPerSec), '--alivetime-ms', '0', '--adopt'], {
        detached: true,
        stdio: ['ignore', logFd, logFd, 'ipc'],
      });
    } finally {
      fs.closeSync(logFd);
    }
    child.on('error', (err) => logger.warn({ err: err.message }, 'could not start the uploader'));
    child.unref();
    child.channel?.unref();
    return child;
  };
  const letGo = async () => {
    child?.kill('SIGTERM');
    await server.drain(DRAIN_MS);
    if ((await readUploaderInfo(home))?.pid === process.pid) fs.rmSync(infoPath(home), { force: true });
    if (await lockOwner(home) === process.pid) fs.rmSync(lockPath(home), { force: true });
  };
  return {
    port,
    pid: process.pid,
    keepAlive: (ms) => { lease.expiresAt = Math.max(lease.expiresAt, Date.now() + ms); },
    prepare: () => { prepare(); },
    handOff: async () => {
      const sidecars = sidecarsOf(dataDir, process.pid);
      if (sidecars.length === 0) return letGo();
      const c = prepare();
      const pid = c?.pid;
      if (!c || !pid) {
        logger.warn('the uploader did not start: this host stops serving');
        return letGo();
      }
      try {
        // The uploader reads these only once it has the socket.
        fs.writeFileSync(lockPath(home), String(pid));
        writeUploaderInfo(home, pid, port);
        moveSidecars(sidecars, pid);
        const message: AdoptMessage = { adopt: true, expiresAt: lease.expiresAt };
        await new Promise<void>((resolve, reject) => c.send(message, server.listener, (err) => (err ? reject(err) : resolve())));
      } catch (err) {
        logger.warn({ err: String(err) }, 'could not hand the piece server over: this host stops serving');
        c.kill('SIGKILL');
      }
      await server.drain(DRAIN_MS);
    },
  };
}

export async function ensureUploader(opts: { home: string; uploadRateBytesPerSec: number; aliveTimeMs: number }): Promise<UploaderHandle> {
  const running = await findUploader(opts.home, opts.aliveTimeMs);
  if (running) return running;

  // The uploader outlives us: its output goes to its own log file, never to
  // our pipes (a test runner or CI would wait on them).
  const logFd = uploaderLog(opts.home);
  const script = path.join(__dirname, 'uploader-daemon.js');
  const child = spawn(process.execPath, [script, '--home', opts.home, '--upload-rate', String(opts.uploadRateBytesPerSec), '--alivetime-ms', String(opts.aliveTimeMs)], {
    detached: true,
    stdio: ['ignore', logFd, logFd, 'ipc'],
  });
  fs.closeSync(logFd);
  try {
    const port = await new Promise<number>((resolve, reject) => {
      const t = setTimeout(() => reject(new DfError('DF_ERR_INTERNAL', 'the uploader did not start within 10 s')), 10_000);
      child.once('message', (m: { port?: number; error?: string }) => {
        clearTimeout(t);
        if (typeof m.port === 'number') resolve(m.port);
        else reject(new DfError('DF_ERR_INTERNAL', `the uploader failed to start: ${m.error ?? 'unknown error'}`));
      });
      child.once('exit', (code) => { clearTimeout(t); reject(new DfError('DF_ERR_INTERNAL', `the uploader exited with code ${code} before it started`)); });
      child.once('error', (err) => { clearTimeout(t); reject(new DfError('DF_ERR_INTERNAL', `could not start the uploader: ${err.message}`)); });
    });
    if (!(await ping(port, opts.aliveTimeMs))) throw new DfError('DF_ERR_INTERNAL', 'the uploader does not answer');
    const now = await readUploaderInfo(opts.home);
    return handle(port, now?.pid ?? child.pid ?? 0);
  } finally {
    child.removeAllListeners();
    if (child.connected) child.disconnect();
    child.unref();
  }
}

/** Stops this home's uploader and waits until it has exited (tests and `dfget --stop-uploader`). */
export async function stopUploader(home: string, timeoutMs = 10_000): Promise<void> {
  const info = await readUploaderInfo(home);
  if (!info || !pidAlive(info.pid)) return;
  process.kill(info.pid, 'SIGTERM');
  const deadline = Date.now() + timeoutMs;
  while (pidAlive(info.pid)) {
    if (Date.now() > deadline) { process.kill(info.pid, 'SIGKILL'); break; }
    await new Promise((r) => setTimeout(r, 20));
  }
}
