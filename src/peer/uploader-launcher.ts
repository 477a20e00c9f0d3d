/** Finds this home's detached uploader, or starts one, and keeps it alive. */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as http from 'node:http';
import { DfError } from '../common/errors';
import { readUploaderInfo, pidAlive } from './uploader-files';

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

export async function ensureUploader(opts: { home: string; uploadRateBytesPerSec: number; aliveTimeMs: number }): Promise<UploaderHandle> {
  const running = await findUploader(opts.home, opts.aliveTimeMs);
  if (running) return running;

  const logDir = path.join(opts.home, 'logs');
  fs.mkdirSync(logDir, { recursive: true });
  // The uploader outlives us: its output goes to its own log file, never to
  // our pipes (a test runner or CI would wait on them).
  const logFd = fs.openSync(path.join(logDir, 'uploader.log'), 'a');
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
