/** The files a detached uploader and the dfget runs that share its home agree on. */
import * as fs from 'node:fs/promises';
import { readdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';

export const SIDECAR_SUFFIX = '.meta.json';

/**
 * Written beside a task's data file, so the uploader that serves it can leave
 * the swarm when it exits. Each uploader acts only on its own tasks: another
 * uploader's (one that lost its lock files, say) are not its to end.
 */
export interface TaskSidecar { taskId: string; peerId: string; node: string; uploaderPid: number }

/** What a dfget that served its pieces itself sends, with its listening socket, to the uploader it starts at its exit. */
export interface AdoptMessage { adopt: true; expiresAt: number }

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

export async function readUploaderInfo(home: string): Promise<{ pid: number; port: number } | undefined> {
  try {
    const v = JSON.parse(await fs.readFile(infoPath(home), 'utf8')) as { pid?: unknown; port?: unknown };
    if (typeof v.pid === 'number' && typeof v.port === 'number') return { pid: v.pid, port: v.port };
  } catch { /* absent or half-written: no uploader */ }
  return undefined;
}

/**
 * Writes {pid, port} so that later dfget runs find the uploader (replaced
 * whole, never half-written). Synchronous, like the other writes a hand-over
 * makes: a few small files, at a moment when a thread-pool round trip per
 * call costs far more than the call.
 */
export function writeUploaderInfo(home: string, pid: number, port: number): void {
  const tmp = `${infoPath(home)}.${process.pid}`;
  writeFileSync(tmp, JSON.stringify({ pid, port }));
  renameSync(tmp, infoPath(home));
}

/** Pid written in the home's lock file; 0 when there is none. */
export async function lockOwner(home: string): Promise<number> {
  return Number(await fs.readFile(lockPath(home), 'utf8').catch(() => '')) || 0;
}

/**
 * Takes the home's uploader lock for this process. Resolves undefined when
 * it is ours, or with the port of the live uploader that holds it. A lock
 * left by a process that is gone is taken over.
 */
export async function acquireLock(home: string): Promise<number | undefined> {
  for (let attempt = 0; attempt < 100; attempt++) {
    try {
      const fh = await fs.open(lockPath(home), 'wx');
      await fh.writeFile(String(process.pid));
      await fh.close();
      return undefined;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const owner = await lockOwner(home);
    if (owner && pidAlive(owner)) {
      const info = await readUploaderInfo(home);
      if (info && info.pid === owner) return info.port;
      // The owner is still starting: its info file comes in a moment.
      await new Promise((r) => setTimeout(r, 50));
      continue;
    }
    await fs.rm(lockPath(home), { force: true });
  }
  throw new Error('could not take the uploader lock');
}

/** The sidecars in dataDir that name uploader `pid`, by path. */
export function sidecarsOf(dataDir: string, pid: number): string[] {
  let names: string[];
  try {
    names = readdirSync(dataDir).filter((n) => n.endsWith(SIDECAR_SUFFIX));
  } catch {
    return [];
  }
  return names.map((n) => path.join(dataDir, n)).filter((p) => {
    try {
      return (JSON.parse(readFileSync(p, 'utf8')) as Partial<TaskSidecar>).uploaderPid === pid;
    } catch {
      return false;
    }
  });
}

/** Makes these sidecars name uploader `to` (the one that serves their tasks from now on). */
export function moveSidecars(sidecars: string[], to: number): void {
  for (const p of sidecars) {
    const side = JSON.parse(readFileSync(p, 'utf8')) as TaskSidecar;
    const tmp = `${p}.${process.pid}.tmp`;
    writeFileSync(tmp, JSON.stringify({ ...side, uploaderPid: to }));
    renameSync(tmp, p);
  }
}
