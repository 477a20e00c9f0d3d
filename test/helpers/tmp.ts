/**
 * Temporary directories for tests, removed when the test process exits.
 *
 * A test's directory holds what its programs wrote (sources, downloads,
 * supernode caches, detached uploaders' homes): tens to hundreds of MiB. Its
 * programs are stopped by the test's own teardown, which runs before the
 * process exits; removing the directories only then means no teardown order
 * can pull a directory from under a program still using it, and a test that
 * failed halfway leaves nothing behind either.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const made = new Set<string>();

function remember(dir: string): string {
  if (made.size === 0) {
    process.once('exit', () => {
      for (const d of made) {
        try {
          rmSync(d, { recursive: true, force: true, maxRetries: 3 });
        } catch {
          // A detached program still writing into it; nothing more to do at exit.
        }
      }
    });
  }
  made.add(dir);
  return dir;
}

/** A new directory under os.tmpdir() whose name starts with prefix; removed at exit. */
export async function tempDir(prefix = 'df-test-'): Promise<string> {
  return remember(await mkdtemp(join(tmpdir(), prefix)));
}

/** tempDir for synchronous callers. */
export function tempDirSync(prefix = 'df-test-'): string {
  return remember(mkdtempSync(join(tmpdir(), prefix)));
}
