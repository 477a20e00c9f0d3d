/**
 * A thin wrapper around ../shared/netbed.sh and the processes the benchmark
 * starts inside its hosts.
 *
 * Every process goes through one ProcessTable so that it can be stopped at the
 * end of a scenario, and so that an interrupted or crashing benchmark kills
 * all of them (synchronously, from process 'exit') before it tears the
 * testbed down. `netbed.sh exec` ends in `exec ip netns exec NS CMD`, which
 * execs CMD itself: the pid of the spawned child is the pid of CMD.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { once } from 'node:events';
import { pidAlive } from '../../src/peer/uploader-files';
import { stopChild } from '../../test/helpers/registry';

export interface HostInfo { name: string; ip: string; rate: string }

export interface Spawned {
  /** The command's pid (same pid namespace as ours, different network namespace). */
  pid: number;
  child: ChildProcess;
  /** Resolves with the exit code (or 128 + signal number) and when it happened (performance.now()). */
  exited: Promise<{ code: number; atMs: number }>;
}

const SIGNAL_CODES: Record<string, number> = { SIGHUP: 1, SIGINT: 2, SIGKILL: 9, SIGTERM: 15 };

/** The children we started and still have to stop. */
export class ProcessTable {
  private readonly live = new Set<ChildProcess>();
  /** Pids we did not spawn ourselves (detached uploaders) but must not leave behind. */
  private readonly extraPids = new Set<number>();
  private readonly persistent = new WeakSet<ChildProcess>();

  add(child: ChildProcess): void {
    this.live.add(child);
    child.once('exit', () => this.live.delete(child));
  }

  /** Marks a child that lives for the whole benchmark (origin server, registry): stopAll() leaves it unless told otherwise. */
  persist(child: ChildProcess): void {
    this.persistent.add(child);
  }

  addPid(pid: number): void {
    if (pid > 0) this.extraPids.add(pid);
  }

  /** SIGTERM, then SIGKILL after graceMs; resolves when the child has exited. */
  stop(child: ChildProcess, graceMs = 5_000): Promise<void> {
    return stopChild(child, graceMs);
  }

  /** Stops every child still running (persistent ones too when `all`), politely first. */
  async stopAll(graceMs = 5_000, all = false): Promise<void> {
    await Promise.all([...this.live].filter((c) => all || !this.persistent.has(c)).map((c) => this.stop(c, graceMs)));
    for (const pid of this.extraPids) await stopPid(pid, graceMs);
    this.extraPids.clear();
  }

  /** For process 'exit' and signal handlers: no waiting, no promises. */
  killAllSync(): void {
    for (const c of this.live) {
      try { c.kill('SIGKILL'); } catch { /* already gone */ }
    }
    for (const pid of this.extraPids) {
      try { process.kill(pid, 'SIGKILL'); } catch { /* already gone */ }
    }
  }
}

export { pidAlive };

/** SIGTERM a pid we did not spawn, SIGKILL after graceMs; resolves once it is gone. */
export async function stopPid(pid: number, graceMs = 5_000): Promise<void> {
  if (!pidAlive(pid)) return;
  try { process.kill(pid, 'SIGTERM'); } catch { return; }
  const deadline = Date.now() + graceMs;
  while (pidAlive(pid)) {
    if (Date.now() > deadline) {
      try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
      break;
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  // A zombie (a detached child whose parent is gone) counts as alive until
  // reaped by init; give it a moment, do not spin forever.
  const reapBy = Date.now() + 1_000;
  while (pidAlive(pid) && Date.now() < reapBy) await new Promise((r) => setTimeout(r, 20));
}

export interface ExecOptions {
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** stdout and stderr go to this file (appended); default: ignored. */
  logFile?: string;
  /** Pipe stdout instead (for ready lines); stderr still goes to logFile. */
  pipeStdout?: boolean;
}

export class Netbed {
  readonly procs = new ProcessTable();
  private hostIps = new Map<string, string>();

  constructor(readonly script: string, readonly id: number) {}

  /** The address the hosts use to reach the root namespace (unshaped). */
  get rootIp(): string {
    return `10.${77 + this.id}.0.1`;
  }

  private env(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
    return { ...process.env, ...extra, NETBED_ID: String(this.id) };
  }

  /** Runs netbed.sh to completion; rejects with its stderr on a non-zero exit. */
  async run(args: string[], timeoutMs = 120_000): Promise<string> {
    const child = spawn(this.script, args, { env: this.env(), stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (b: Buffer) => { out += b.toString(); });
    child.stderr.on('data', (b: Buffer) => { err += b.toString(); });
    const t = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    const [code] = await once(child, 'close') as [number | null];
    clearTimeout(t);
    if (code !== 0) throw new Error(`netbed.sh ${args.join(' ')} exited with ${code}: ${err.trim()}`);
    return out;
  }

  async up(names: string[], rate: string): Promise<void> {
    // Batches keep each call short; netbed.sh adds hosts one after another anyway.
    for (let i = 0; i < names.length; i += 16) await this.run(['up', ...names.slice(i, i + 16), '--rate', rate]);
    await this.refresh();
  }

  private async refresh(): Promise<void> {
    this.hostIps.clear();
    for (const line of (await this.run(['list'])).split('\n')) {
      const [name, ip] = line.trim().split(/\s+/);
      if (name && ip) this.hostIps.set(name, ip);
    }
  }

  ip(name: string): string {
    const ip = this.hostIps.get(name);
    if (!ip) throw new Error(`netbed host ${name} is not up`);
    return ip;
  }

  async list(): Promise<HostInfo[]> {
    const out: HostInfo[] = [];
    for (const line of (await this.run(['list'])).split('\n')) {
      const [name, ip, rate] = line.trim().split(/\s+/);
      if (name && ip) out.push({ name, ip, rate: rate ?? '' });
    }
    return out;
  }

  /** Bytes the host has sent on its link (its eth0 tx counter, frames with headers). */
  async tx(name: string): Promise<number> {
    return Number((await this.run(['tx', name])).trim());
  }

  /** Removes this ID's hosts (and kills what runs in them). Safe to call when nothing is up. */
  async down(): Promise<void> {
    await this.run(['down']);
    this.hostIps.clear();
  }

  /** For exit and signal handlers. */
  downSync(): void {
    spawnSync(this.script, ['down'], { env: this.env(), stdio: 'ignore', timeout: 60_000 });
    this.hostIps.clear();
  }

  /** Starts CMD on a host; tracked until it exits. */
  exec(host: string, cmd: string, args: string[], opts: ExecOptions = {}): Spawned {
    const fd = opts.logFile ? openSync(opts.logFile, 'a') : undefined;
    const out = fd ?? 'ignore';
    let child: ChildProcess;
    try {
      child = spawn(this.script, ['exec', host, cmd, ...args], {
        env: this.env(opts.env),
        cwd: opts.cwd,
        stdio: ['ignore', opts.pipeStdout ? 'pipe' : out, out],
      });
    } finally {
      if (fd !== undefined) closeSync(fd);
    }
    this.procs.add(child);
    const exited = new Promise<{ code: number; atMs: number }>((resolve) => {
      child.once('error', () => resolve({ code: 127, atMs: performance.now() }));
      child.once('exit', (code, signal) => {
        resolve({ code: code ?? 128 + (signal ? SIGNAL_CODES[signal] ?? 0 : 0), atMs: performance.now() });
      });
    });
    return { pid: child.pid ?? -1, child, exited };
  }

  /**
   * Fills every host's neighbour (ARP) table with permanent entries for all
   * other hosts and the bridge. On a saturated tbf link ARP replies queue
   * behind bulk data and can be dropped, and a connect() to a host whose entry
   * has expired then fails with EHOSTUNREACH; static entries take address
   * resolution out of the measurement.
   */
  async staticNeighbours(): Promise<void> {
    const hosts = await this.list();
    const macs = new Map<string, string>();
    for (const h of hosts) {
      const r = await this.execOut(h.name, 'cat', ['/sys/class/net/eth0/address']);
      macs.set(h.ip, r.stdout.trim());
    }
    const br = spawnSync('cat', [`/sys/class/net/nb${this.id}br/address`], { encoding: 'utf8' });
    if (br.status === 0) macs.set(this.rootIp, br.stdout.trim());
    for (const h of hosts) {
      const lines = [...macs].filter(([ip, mac]) => ip !== h.ip && mac)
        .map(([ip, mac]) => `neigh replace ${ip} lladdr ${mac} dev eth0 nud permanent`);
      const r = spawnSync(this.script, ['exec', h.name, 'ip', '-batch', '-'], { env: this.env(), input: lines.join('\n') + '\n', encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`static neighbours on ${h.name}: ${r.stderr.trim()}`);
    }
  }

  /** Runs CMD on a host to completion and returns its stdout. */
  async execOut(host: string, cmd: string, args: string[], timeoutMs = 30_000): Promise<{ code: number; stdout: string }> {
    const child = spawn(this.script, ['exec', host, cmd, ...args], { env: this.env(), stdio: ['ignore', 'pipe', 'ignore'] });
    this.procs.add(child);
    let stdout = '';
    child.stdout!.on('data', (b: Buffer) => { stdout += b.toString(); });
    const t = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    const [code] = await once(child, 'close') as [number | null];
    clearTimeout(t);
    return { code: code ?? 1, stdout };
  }
}
