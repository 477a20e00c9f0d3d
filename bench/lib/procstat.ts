/**
 * CPU time and peak memory of the processes under test, from /proc.
 *
 * Node programs are measured exactly: procstat-hook.ts (preloaded) writes their
 * /proc/self/stat and /proc/self/status from their 'exit' event. Other programs
 * (curl) are sampled: ProcSampler reads /proc/PID/stat and /proc/PID/status
 * every intervalMs and keeps the last reading, so it misses at most the final
 * interval of CPU time. VmHWM (peak resident set) only grows, so its last
 * reading is at most one interval old.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

export interface ProcUsage {
  /** user + system CPU seconds. */
  cpuS: number;
  /** Peak resident set (VmHWM), MiB. */
  maxRssMiB: number;
  /** How it was measured. */
  source: 'exit-hook' | 'sampled';
}

let clkTck: number | undefined;
/** Clock ticks per second for /proc/PID/stat times (almost always 100). */
export function clockTicks(): number {
  if (clkTck === undefined) {
    const r = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' });
    const v = Number(String(r.stdout ?? '').trim());
    clkTck = Number.isFinite(v) && v > 0 ? v : 100;
  }
  return clkTck;
}

/** utime + stime (fields 14 and 15) in clock ticks. The command name may hold spaces and parentheses. */
export function parseStatTicks(stat: string): number {
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // rest[0] is field 3 (state), so field k is rest[k - 3].
  const utime = Number(rest[14 - 3]);
  const stime = Number(rest[15 - 3]);
  if (!Number.isFinite(utime) || !Number.isFinite(stime)) throw new Error('malformed /proc/PID/stat');
  return utime + stime;
}

/** VmHWM from /proc/PID/status, KiB (0 when absent, as for a zombie). */
export function parseVmHwmKiB(status: string): number {
  const m = /^VmHWM:\s+(\d+)\s+kB/m.exec(status);
  return m ? Number(m[1]) : 0;
}

const mib = (kib: number): number => Math.round((kib / 1024) * 10) / 10;
const secs = (ticks: number): number => Math.round((ticks / clockTicks()) * 100) / 100;

/** The record procstat-hook.js left for pid in dir, if the process exited through its 'exit' event. */
export async function readHookRecord(dir: string, pid: number): Promise<ProcUsage | undefined> {
  let raw: string;
  try {
    raw = await readFile(join(dir, `${pid}.json`), 'utf8');
  } catch {
    return undefined;
  }
  try {
    const rec = JSON.parse(raw) as { stat: string; status: string };
    return { cpuS: secs(parseStatTicks(rec.stat)), maxRssMiB: mib(parseVmHwmKiB(rec.status)), source: 'exit-hook' };
  } catch {
    return undefined;
  }
}

/** Polls one pid's /proc entries until it disappears or stop() is called. */
export class ProcSampler {
  private ticks = 0;
  private hwmKiB = 0;
  private seen = false;
  private readonly timer: NodeJS.Timeout;

  constructor(private readonly pid: number, intervalMs = 50) {
    this.sample();
    this.timer = setInterval(() => this.sample(), intervalMs);
    this.timer.unref();
  }

  private sample(): void {
    try {
      const stat = readFileSync(`/proc/${this.pid}/stat`, 'utf8');
      const status = readFileSync(`/proc/${this.pid}/status`, 'utf8');
      this.ticks = Math.max(this.ticks, parseStatTicks(stat));
      // A zombie has no memory left to report; keep the last real value.
      this.hwmKiB = Math.max(this.hwmKiB, parseVmHwmKiB(status));
      this.seen = true;
    } catch {
      clearInterval(this.timer);
    }
  }

  /** Call when the process has exited (or is about to be dropped). */
  stop(): ProcUsage | undefined {
    clearInterval(this.timer);
    return this.seen ? { cpuS: secs(this.ticks), maxRssMiB: mib(this.hwmKiB), source: 'sampled' } : undefined;
  }
}

/** Sums processes that together make up one role (dfget plus its uploader). */
export function combineUsage(parts: Array<ProcUsage | undefined>): ProcUsage | undefined {
  const have = parts.filter((p): p is ProcUsage => p !== undefined);
  if (have.length === 0) return undefined;
  return {
    cpuS: Math.round(have.reduce((s, p) => s + p.cpuS, 0) * 100) / 100,
    maxRssMiB: Math.max(...have.map((p) => p.maxRssMiB)),
    source: have.every((p) => p.source === 'exit-hook') ? 'exit-hook' : 'sampled',
  };
}

/** The machine's CPU counters (first line of /proc/stat), to tell how busy all cores were. */
export interface CpuSnapshot { busy: number; total: number }

export function cpuSnapshot(): CpuSnapshot {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0];
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal (guest is already in user)
  const total = v.slice(0, 8).reduce((s, x) => s + (x || 0), 0);
  const idle = (v[3] || 0) + (v[4] || 0);
  return { busy: total - idle, total };
}

/** Percent of all cores busy between two snapshots. */
export function cpuBusyPct(a: CpuSnapshot, b: CpuSnapshot): number {
  const dt = b.total - a.total;
  return dt > 0 ? Math.round(((b.busy - a.busy) / dt) * 1000) / 10 : 0;
}
