/** Runs the real programs as child processes, the way users run them. */
import { spawn, type ChildProcess } from 'node:child_process';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { request } from 'undici';
import { stopUploader } from '../../src/peer/uploader-launcher';

export const DIST = path.resolve(__dirname, '..', '..');
export const CLI = (name: string) => path.join(DIST, 'src', 'cli', `${name}.js`);

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

/** Starts `supernode` on free ports and waits for its ready line. */
export async function startSupernode(homeDir: string, extra: string[] = []): Promise<SupernodeProc> {
  const proc = spawn(process.execPath, [CLI('supernode'), '--advertise-ip', '127.0.0.1', '--listen', '127.0.0.1',
    '--port', '0', '--download-port', '0', '--home-dir', homeDir, ...extra], { stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  proc.stderr!.on('data', (d) => { err += d; });
  const ready = await new Promise<{ port: number; downloadPort: number }>((resolve, reject) => {
    const rl = readline.createInterface({ input: proc.stdout! });
    rl.on('line', (line) => {
      try {
        const v = JSON.parse(line) as { ready?: boolean; port: number; downloadPort: number };
        if (v.ready) resolve(v);
      } catch { /* not the ready line */ }
    });
    proc.once('exit', (code) => reject(new Error(`supernode exited with ${code}: ${err}`)));
  });
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  return {
    ...ready,
    addr: `127.0.0.1:${ready.port}`,
    proc,
    stderr: () => err,
    metrics: async () => {
      const res = await request(`http://127.0.0.1:${ready.downloadPort}/metrics`);
      return res.body.text();
    },
    stop: async () => {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
      await exited;
    },
  };
}

export { stopUploader };
