/** Runs the real programs as child processes, the way users run them. */
import { spawn, type ChildProcess } from 'node:child_process';
import * as net from 'node:net';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { request } from 'undici';
import type { TestContext } from 'node:test';
import { stopUploader } from '../../src/peer/uploader-launcher';
import { makeRandomFile, startOrigin, tempDir, type Origin } from './origin';

export const DIST = path.resolve(__dirname, '..', '..');
/** The program as users start it: bin/NAME.js (dfget runs from its bundle, dist/bundle/). */
export const CLI = (name: string) => path.join(DIST, '..', 'bin', `${name}.js`);

export interface RunResult { code: number | null; stdout: string; stderr: string; ms: number }

export function runCli(name: string, args: string[], opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<RunResult> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI(name), ...args], { env: { ...process.env, ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => { stdout += d; });
    child.stderr.on('data', (d) => { stderr += d; });
    const t = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 120_000);
    child.on('error', reject);
    child.on('close', (code) => { clearTimeout(t); resolve({ code, stdout, stderr, ms: Date.now() - started }); });
  });
}

export interface SupernodeProc {
  port: number;
  downloadPort: number;
  addr: string;
  proc: ChildProcess;
  metrics: () => Promise<string>;
  stderr: () => string;
  stop: () => Promise<void>;
}

/** Spawns a CLI that prints a JSON line with "ready": true once it listens, and waits for that line. */
async function startReady<T>(name: string, args: string[]): Promise<{ ready: T; proc: ChildProcess; stderr: () => string; stop: () => Promise<void> }> {
  const proc = spawn(process.execPath, [CLI(name), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  proc.stderr!.on('data', (d) => { err += d; });
  const ready = await new Promise<T>((resolve, reject) => {
    const rl = readline.createInterface({ input: proc.stdout! });
    rl.on('line', (line) => {
      try {
        const v = JSON.parse(line) as T & { ready?: boolean };
        if (v.ready) resolve(v);
      } catch { /* a log line */ }
    });
    proc.once('exit', (code) => reject(new Error(`${name} exited with ${code}: ${err}`)));
  });
  const exited = new Promise<void>((r) => { if (proc.exitCode !== null) r(); else proc.once('exit', () => r()); });
  return {
    ready, proc, stderr: () => err,
    stop: async () => {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
      await exited;
    },
  };
}

export interface DfdaemonProc { port: number; url: string; host: string; proc: ChildProcess; stderr: () => string; stop: () => Promise<void> }

/**
 * Resolves with the first `count` stderr lines of proc (the text so far, then
 * as it comes) that contain `text`; rejects after timeoutMs without them.
 */
export function stderrLines(p: { proc: ChildProcess; stderr: () => string }, text: string, count = 1, timeoutMs = 60_000): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const found = () => p.stderr().split('\n').filter((l) => l.includes(text));
    const stop = () => { clearTimeout(timer); p.proc.stderr!.off('data', check); };
    const check = () => {
      const lines = found();
      if (lines.length >= count) { stop(); resolve(lines.slice(0, count)); }
    };
    const timer = setTimeout(() => {
      stop();
      reject(new Error(`${found().length} of ${count} stderr lines with "${text}" within ${timeoutMs} ms`));
    }, timeoutMs);
    // Runs after the listener that accumulates the text (registered first).
    p.proc.stderr!.on('data', check);
    check();
  });
}

/** Starts `dfdaemon` on a free port of 127.0.0.1. */
export async function startDfdaemon(args: string[]): Promise<DfdaemonProc> {
  const p = await startReady<{ port: number }>('dfdaemon', ['--port', '0', '--host-ip', '127.0.0.1', ...args]);
  return { port: p.ready.port, host: `127.0.0.1:${p.ready.port}`, url: `http://127.0.0.1:${p.ready.port}`, proc: p.proc, stderr: p.stderr, stop: p.stop };
}

/** Starts `supernode` on free ports and waits for its ready line. */
export async function startSupernode(homeDir: string, extra: string[] = []): Promise<SupernodeProc> {
  const p = await startReady<{ port: number; downloadPort: number }>('supernode', ['--advertise-ip', '127.0.0.1', '--listen', '127.0.0.1',
    '--port', '0', '--download-port', '0', '--home-dir', homeDir, ...extra]);
  const { port, downloadPort } = p.ready;
  return {
    port, downloadPort,
    addr: `127.0.0.1:${port}`,
    proc: p.proc,
    stderr: p.stderr,
    metrics: async () => {
      const res = await request(`http://127.0.0.1:${downloadPort}/metrics`);
      return res.body.text();
    },
    stop: p.stop,
  };
}

export { stopUploader };

export interface Fixture {
  dir: string;
  file: { path: string; sha256: string };
  origin: Origin;
  /** Present when asked for. */
  sn: SupernodeProc;
  /** A peer home under dir, whose uploader is stopped when the test ends. */
  home: (name: string) => string;
}

/**
 * The usual set-up of a P2P test: a temp dir, a random file of `bytes`, an
 * origin serving it as /f.bin, a supernode (unless `supernode: false`), each
 * torn down when the test ends.
 */
export async function fixture(t: TestContext, bytes: number, opts: { supernode?: boolean } = {}): Promise<Fixture> {
  const dir = await tempDir();
  const file = await makeRandomFile(dir, 'f.bin', bytes);
  const origin = await startOrigin(dir);
  t.after(() => origin.close());
  let sn: SupernodeProc | undefined;
  if (opts.supernode !== false) {
    sn = await startSupernode(path.join(dir, 'sn'));
    t.after(() => sn!.stop());
  }
  return {
    dir, file, origin,
    get sn(): SupernodeProc {
      if (!sn) throw new Error('fixture started without a supernode');
      return sn;
    },
    home: (name: string) => {
      const h = path.join(dir, name);
      t.after(() => stopUploader(h));
      return h;
    },
  };
}

/** n ports that nothing listened on a moment ago (each taken, then released). */
export async function freePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(Array.from({ length: n }, () => new Promise<net.Server>((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '0.0.0.0', () => resolve(s));
  })));
  const ports = servers.map((s) => (s.address() as net.AddressInfo).port);
  await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  return ports;
}
