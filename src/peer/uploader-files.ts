/** The files a detached uploader and the dfget runs that share its home agree on. */
import * as fs from 'node:fs/promises';
import * as fsSync from 'node:fs';
import * as path from 'node:path';

export const SIDECAR_SUFFIX = '.meta.json';

/**
 * Written beside a task's data file, so the uploader that serves it can leave
 * the swarm when it exits. Each uploader acts only on its own tasks: another
 * uploader's (one that lost its lock files, say) are not its to end.
 */
export interface TaskSidecar { taskId: string; peerId: string; node: string; uploaderPid: number }

export const lockPath = (home: string) => path.join(home, 'uploader.lock');
export const infoPath = (home: string) => path.join(home, 'uploader.json');

export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Pid written in the home's lock file; 0 when there is none. */
export async function lockOwner(home: string): Promise<number> {
  return Number(await fs.readFile(lockPath(home), 'utf8').catch(() => '')) || 0;
}

/**
 * Makes pid the owner of the home's uploader lock, unless a live process
 * owns it: true when pid owns it now. The lock file appears with its pid in
 * it (written aside, then linked), so it never names nobody. Synchronous:
 * a few calls on small local files, made while other programs compete for
 * the CPU (a dfget handing over its piece server as it ends), where every
 * turn of the event loop waits for a time slice.
 */
export function claimLock(home: string, pid: number): boolean {
  const tmp = `${lockPath(home)}.${process.pid}.${pid}`;
  fsSync.writeFileSync(tmp, String(pid));
  try {
    for (let attempt = 0; attempt < 5; attempt++) {
      try {
        fsSync.linkSync(tmp, lockPath(home));
        return true;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      const owner = Number(readOr(lockPath(home), '')) || 0;
      if (owner === pid) return true;
      if (owner && pidAlive(owner)) return false;
      // A stale lock (its owner is gone): remove it and try again.
      fsSync.rmSync(lockPath(home), { force: true });
    }
    return false;
  } finally {
    fsSync.rmSync(tmp, { force: true });
  }
}

function readOr(file: string, otherwise: string): string {
  try {
    return fsSync.readFileSync(file, 'utf8');
  } catch {
    return otherwise;
  }
}

/** Records the uploader that owns the home's lock, and its port (synchronous, as claimLock). */
export function writeUploaderInfo(home: string, pid: number, port: number): void {
  const tmp = `${infoPath(home)}.${pid}`;
  fsSync.writeFileSync(tmp, JSON.stringify({ pid, port }));
  fsSync.renameSync(tmp, infoPath(home));
}

export async function readUploaderInfo(home: string): Promise<{ pid: number; port: number } | undefined> {
  try {
    const v = JSON.parse(await fs.readFile(infoPath(home), 'utf8')) as { pid?: unknown; port?: unknown };
    if (typeof v.pid === 'number' && typeof v.port === 'number') return { pid: v.pid, port: v.port };
  } catch { /* absent or half-written: no uploader */ }
  return undefined;
}
