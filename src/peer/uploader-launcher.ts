/** Finds this home's detached uploader, or starts one, and keeps it alive. */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as http from 'node:http';
import * as os from 'node:os';
import { DfError } from '../common/errors';
import { readUploaderInfo, pidAlive, claimLock, writeUploaderInfo } from './uploader-files';
import type { PieceUploader } from './uploader';
import { makeDirs } from '../common/dirs';

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

/** The niceness of an uploader a dfget hands its piece server to. */
export const UPLOADER_NICE = 10;

interface UploaderOptions { home: string; uploadRateBytesPerSec: number; aliveTimeMs: number }

/** Starts a detached uploader (see uploader-daemon.ts) with an IPC channel to us. */
function spawnUploader(opts: UploaderOptions, extra: string[] = []): ChildProcess {
  const logDir = path.join(opts.home, 'logs');
  makeDirs(logDir);
  // The uploader outlives us: its output goes to its own log file, never to
  // our pipes (a test runner or CI would wait on them).
  const logFd = fs.openSync(path.join(logDir, 'uploader.log'), 'a');
  const script = path.join(__dirname, 'uploader-daemon.js');
  try {
    return spawn(process.execPath, [
      script, '--home', opts.home, '--upload-rate', String(opts.uploadRateBytesPerSec), '--alivetime-ms', String(opts.aliveTimeMs), ...extra,
    ], { detached: true, stdio: ['ignore', logFd, logFd, 'ipc'] });
  } finally {
    fs.closeSync(logFd);
  }
}

/**
 * Lets a started uploader live on without us. A handle we sent is in the
 * channel already (the uploader reads it even after we exited), so nothing
 * waits for its acknowledgement: the channel no longer holds our process
 * up, and its late end (reported as an 'error' once we disconnected) is
 * expected.
 */
function release(child: ChildProcess): void {
  child.removeAllListeners();
  child.on('error', () => undefined);
  if (child.connected) child.disconnect();
  (child.channel as { unref?: () => void } | null | undefined)?.unref?.();
  child.unref();
}

/**
 * Hands the piece server a dfget ran in its own process over to a new
 * detached uploader, which keeps serving on the same port after the dfget
 * exits (so the supernode's address for this peer stays right). The new
 * uploader becomes the home's (its lock and info are written for it here,
 * so a dfget that starts right after finds it) unless a live one owns the
 * home: then it serves this socket beside that one until its alive time is
 * over. It runs at niceness UPLOADER_NICE. `adopting(pid)` runs before the
 * socket goes (to make the pieces the new uploader's; synchronous, as all
 * before it here: while other programs compete for the CPU, every turn of
 * the event loop waits for a time slice). Resolves with the new uploader's
 * pid once the responses this process had under way are sent: it does not
 * wait for the uploader to be up (connections wait in the socket's queue
 * until it is).
 */
export async function handOverToUploader(opts: UploaderOptions & {
  server: PieceUploader;
  adopting: (pid: number) => void;
}): Promise<number> {
  const child = spawnUploader(opts, ['--inherit']);
  try {
    const pid = child.pid;
    if (pid === undefined) {
      throw new DfError('DF_ERR_INTERNAL', await new Promise<string>((resolve) => {
        child.once('error', (err) => resolve(`could not start the uploader: ${err.message}`));
      }));
    }
    // Below the host's own work: it serves others in the background, and
    // its start-up (about 0.1 s of CPU) should not delay what the host does
    // next, nor, where hosts share CPUs, another host's download.
    try {
      os.setPriority(pid, UPLOADER_NICE);
    } catch { /* not allowed here: it runs at our priority */ }
    const primary = claimLock(opts.home, pid);
    if (primary) writeUploaderInfo(opts.home, pid, opts.server.port);
    opts.adopting(pid);
    await opts.server.handOver((listener) => new Promise<void>((resolve, reject) => {
      child.send({ role: primary ? 'primary' : 'secondary' }, listener, (err) => {
        if (err) reject(new DfError('DF_ERR_INTERNAL', `could not hand the piece server to the uploader: ${err.message}`));
        else resolve();
      });
    }));
    return pid;
  } finally {
    release(child);
  }
}

export async function ensureUploader(opts: UploaderOptions): Promise<UploaderHandle> {
  const running = await findUploader(opts.home, opts.aliveTimeMs);
  if (running) return running;

  const child = spawnUploader(opts);
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
    release(child);
  }
}

/** Stops this home's uploader and waits until it has exited (tests and benchmarks). */
export async function stopUploader(home: string, timeoutMs = 10_000): Promise<void> {
  const info = await readUploaderInfo(home);
  if (!info || !pidAlive(info.pid)) return;
  // One that is still starting (handed a socket a moment ago) answers once it
  // is up: a signal before then could end it before it can leave the swarm.
  await ping(info.port, 0);
  try {
    process.kill(info.pid, 'SIGTERM');
  } catch {
    return;
  }
  const deadline = Date.now() + timeoutMs;
  while (pidAlive(info.pid)) {
    if (Date.now() > deadline) { process.kill(info.pid, 'SIGKILL'); break; }
    await new Promise((r) => setTimeout(r, 20));
  }
}
