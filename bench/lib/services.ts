/**
 * The long-running programs of a benchmark, each started inside its netbed
 * host: the HTTP origin, the registry (both on the origin host), the supernode
 * and the per-host dfdaemons. Each start waits until the program answers.
 */
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as readline from 'node:readline';
import { setTimeout as delay } from 'node:timers/promises';
import type { Netbed, Spawned } from './netbed';
import type { BenchContext } from './types';

export const ORIGIN_HOST = 'origin';
export const SN_HOST = 'sn';
export const ORIGIN_PORT = 8080;
export const REGISTRY_PORT = 5000;
export const SN_PORT = 8002;
export const SN_DOWNLOAD_PORT = 8001;
export const DFDAEMON_PORT = 65001;

/** Environment for Node programs under test: the exit hook that records their CPU and memory. */
export function measuredEnv(ctx: Pick<BenchContext, 'hookPath' | 'procstatDir'>): NodeJS.ProcessEnv {
  const prev = process.env.NODE_OPTIONS ? `${process.env.NODE_OPTIONS} ` : '';
  return { NODE_OPTIONS: `${prev}--require ${ctx.hookPath}`, BENCH_PROCSTAT_DIR: ctx.procstatDir };
}

/** `--upload-rate` for the programs that serve pieces, when the run caps uploads. */
export function uploadRateArgs(ctx: Pick<BenchContext, 'uploadRateBytesPerSec'>): string[] {
  return ctx.uploadRateBytesPerSec > 0 ? ['--upload-rate', String(ctx.uploadRateBytesPerSec)] : [];
}

/** The last lines of a log, for error messages (the run's temp dir is removed afterwards). */
export async function tail(file: string, lines = 4): Promise<string> {
  const text = await readFile(file, 'utf8').catch(() => '');
  return text.trim().split('\n').slice(-lines).join(' | ').slice(0, 800) || '(empty log)';
}

/** Waits for a JSON line with ready:true on the child's stdout. */
function readyLine<T>(s: Spawned, what: string, logFile: string, timeoutMs: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const rl = readline.createInterface({ input: s.child.stdout! });
    const t = setTimeout(() => finish(new Error(`${what} not ready after ${timeoutMs} ms (log: ${logFile})`)), timeoutMs);
    const finish = (err: Error | null, v?: T): void => {
      clearTimeout(t);
      rl.removeAllListeners('line');
      // Keep draining stdout so the program never blocks on a full pipe.
      s.child.stdout!.resume();
      if (err) reject(err); else resolve(v as T);
    };
    rl.on('line', (line) => {
      try {
        const v = JSON.parse(line) as { ready?: boolean };
        if (v.ready) finish(null, v as T);
      } catch { /* not the ready line */ }
    });
    void s.exited.then(async ({ code }) => finish(new Error(`${what} exited with ${code} before it was ready: ${await tail(logFile)}`)));
  });
}

/**
 * cmd and args under `nice`: the origin host's and the supernode host's
 * programs stand for machines of their own, but share this machine's cores
 * with every peer host's programs. With the N hosts' dfget and uploaders (2N
 * programs) starting at once, an even share left the supernode a few percent
 * of a core, and its source fetch stalled for most of a second.
 */
function niced(nice: number, cmd: string, args: string[]): [cmd: string, args: string[]] {
  return nice !== 0 ? ['nice', ['-n', String(nice), cmd, ...args]] : [cmd, args];
}

export interface OriginServer { spawned: Spawned; url: string; statsUrl: string }

export async function startOriginServer(ctx: Pick<BenchContext, 'nb' | 'distDir' | 'workDir' | 'serviceNice'>, filePath: string, fileName: string): Promise<OriginServer> {
  const logFile = join(ctx.workDir, 'origin-server.log');
  const s = ctx.nb.exec(ORIGIN_HOST, ...niced(ctx.serviceNice, process.execPath, [
    join(ctx.distDir, 'bench', 'lib', 'origin-server.js'), '--file', filePath, '--port', String(ORIGIN_PORT), '--host', '0.0.0.0',
  ]), { logFile, pipeStdout: true });
  ctx.nb.procs.persist(s.child);
  await readyLine(s, 'origin server', logFile, 20_000);
  const ip = ctx.nb.ip(ORIGIN_HOST);
  return { spawned: s, url: `http://${ip}:${ORIGIN_PORT}/${fileName}`, statsUrl: `http://${ip}:${ORIGIN_PORT}/__stats` };
}

export async function originBodyBytes(statsUrl: string): Promise<number> {
  const res = await fetch(statsUrl, { signal: AbortSignal.timeout(10_000) });
  return ((await res.json()) as { bodyBytes: number }).bodyBytes;
}

export interface SupernodeHandle {
  spawned: Spawned;
  ip: string;
  /** SN_IP:8002, for --node. */
  node: string;
  logFile: string;
  metrics(): Promise<string>;
  /** The piece size the supernode chose, from its "source fetch started" log line. */
  pieceSize(): Promise<number | null>;
  /** Epoch ms of the first "source fetch started" and the last "source fetch complete" in its log. */
  sourceFetchTimes(): Promise<{ startedMs: number | null; completeMs: number | null }>;
}

export async function startSupernode(ctx: BenchContext, dir: string): Promise<SupernodeHandle> {
  const ip = ctx.nb.ip(SN_HOST);
  const logFile = join(dir, 'supernode.log');
  const s = ctx.nb.exec(SN_HOST, ...niced(ctx.serviceNice, process.execPath, [
    join(ctx.distDir, 'src', 'cli', 'supernode.js'),
    '--advertise-ip', ip, '--home-dir', join(dir, 'supernode-home'), '--max-bandwidth', '1G',
    ...uploadRateArgs(ctx), ...ctx.supernodeArgs,
  ]), { logFile, pipeStdout: true, env: measuredEnv(ctx) });
  const ready = await readyLine<{ port: number; downloadPort: number }>(s, 'supernode', logFile, 30_000);
  const metricsUrl = `http://${ip}:${ready.downloadPort}/metrics`;
  return {
    spawned: s,
    ip,
    node: `${ip}:${ready.port}`,
    logFile,
    metrics: async () => {
      const res = await fetch(metricsUrl, { signal: AbortSignal.timeout(10_000) });
      return res.text();
    },
    pieceSize: async () => {
      for (const v of await logRecords(logFile)) if (typeof v.pieceSize === 'number') return v.pieceSize;
      return null;
    },
    sourceFetchTimes: async () => {
      let startedMs: number | null = null;
      let completeMs: number | null = null;
      for (const v of await logRecords(logFile)) {
        if (typeof v.time !== 'number') continue;
        if (v.msg === 'source fetch started' && startedMs === null) startedMs = v.time;
        if (v.msg === 'source fetch complete') completeMs = v.time;
      }
      return { startedMs, completeMs };
    },
  };
}

/** The JSON lines of a pino log (anything else is skipped). */
async function logRecords(file: string): Promise<Array<{ msg?: string; time?: number; pieceSize?: number }>> {
  const out: Array<{ msg?: string; time?: number; pieceSize?: number }> = [];
  for (const line of (await readFile(file, 'utf8').catch(() => '')).split('\n')) {
    try {
      const v = JSON.parse(line) as unknown;
      if (v && typeof v === 'object') out.push(v as { msg?: string; time?: number; pieceSize?: number });
    } catch { /* not JSON */ }
  }
  return out;
}

export interface RegistryHandle { spawned: Spawned; host: string; url: string }

/**
 * docker-registry on the origin host, on 0.0.0.0:5000 (so every host reaches
 * it over the shaped links, and skopeo on the origin host can push over its
 * own loopback, which is not shaped).
 */
export async function startRegistryOnOrigin(ctx: Pick<BenchContext, 'nb' | 'workDir' | 'serviceNice'>): Promise<RegistryHandle> {
  const dir = join(ctx.workDir, 'registry');
  const config = {
    version: '0.1',
    log: { level: 'warn', formatter: 'text', accesslog: { disabled: true } },
    storage: { filesystem: { rootdirectory: join(dir, 'data') }, maintenance: { uploadpurging: { enabled: false } } },
    http: { addr: `0.0.0.0:${REGISTRY_PORT}`, secret: randomBytes(16).toString('hex') },
  };
  await mkdir(dir, { recursive: true });
  const cfg = join(dir, 'config.yml');
  // JSON is YAML.
  await writeFile(cfg, JSON.stringify(config, null, 2));
  const logFile = join(ctx.workDir, 'registry.log');
  const s = ctx.nb.exec(ORIGIN_HOST, ...niced(ctx.serviceNice, 'docker-registry', ['serve', cfg]), { logFile, cwd: dir });
  ctx.nb.procs.persist(s.child);
  const host = `${ctx.nb.ip(ORIGIN_HOST)}:${REGISTRY_PORT}`;
  const url = `http://${host}`;
  const deadline = Date.now() + 30_000;
  let exited = false;
  void s.exited.then(() => { exited = true; });
  for (;;) {
    try {
      const res = await fetch(`${url}/v2/`, { signal: AbortSignal.timeout(2_000) });
      await res.arrayBuffer();
      if (res.status === 200) break;
    } catch { /* not up yet */ }
    if (exited) throw new Error(`docker-registry exited before it answered: ${await tail(logFile)}`);
    if (Date.now() > deadline) throw new Error(`docker-registry on ${url} not ready after 30 s; see ${logFile}`);
    await delay(100);
  }
  return { spawned: s, host, url };
}

export interface DfdaemonHandle { host: string; spawned: Spawned; logFile: string; home: string }

export function dfdaemonScript(distDir: string): string {
  return join(distDir, 'src', 'cli', 'dfdaemon.js');
}

export function dfdaemonAvailable(distDir: string): boolean {
  return existsSync(dfdaemonScript(distDir));
}

/** Starts dfdaemon on a host's own 127.0.0.1:65001, and waits until /healthz answers there. */
export async function startDfdaemon(ctx: BenchContext, host: string, dir: string, registryUrl: string, snNode: string): Promise<DfdaemonHandle> {
  const logFile = join(dir, 'dfdaemon.log');
  const home = join(dir, 'dfdaemon-home');
  const s = ctx.nb.exec(host, process.execPath, [
    dfdaemonScript(ctx.distDir),
    '--registry', registryUrl, '--port', String(DFDAEMON_PORT), '--host-ip', '127.0.0.1',
    '--node', snNode, '--home', home, '--ratelimit', '1G', ...uploadRateArgs(ctx),
  ], { logFile, env: measuredEnv(ctx) });
  let exited: number | undefined;
  void s.exited.then(({ code }) => { exited = code; });
  const deadline = Date.now() + 60_000;
  for (;;) {
    const r = await ctx.nb.execOut(host, 'curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '2', `http://127.0.0.1:${DFDAEMON_PORT}/healthz`]);
    if (r.stdout.trim() === '200') break;
    if (exited !== undefined) throw new Error(`dfdaemon on ${host} exited with ${exited} before it answered: ${await tail(logFile)}`);
    if (Date.now() > deadline) throw new Error(`dfdaemon on ${host} not ready after 60 s; see ${logFile}`);
    await delay(200);
  }
  return { host, spawned: s, logFile, home };
}

/** A dfdaemon's /metrics, read from inside its host (it listens on that host's loopback). */
export async function dfdaemonMetrics(nb: Netbed, host: string): Promise<string> {
  const r = await nb.execOut(host, 'curl', ['-s', '--max-time', '10', `http://127.0.0.1:${DFDAEMON_PORT}/metrics`]);
  return r.stdout;
}
