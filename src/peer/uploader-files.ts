/** The files a detached uploader and the dfget runs that share its home agree on. */
import * as fs from 'node:fs/promises';
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

export async function readUploaderInfo(home: string): Promise<{ pid: number; port: number } | undefined> {
  try {
    const v = JSON.parse(await fs.readFile(infoPath(home), 'utf8')) as { pid?: unknown; port?: unknown };
    if (typeof v.pid === 'number' && typeof v.port === 'number') return { pid: v.pid, port: v.port };
  } catch { /* absent or half-written: no uploader */ }
  return undefined;
}
