/**
 * Which cached tasks the supernode deletes from its disk: pure policy, no I/O.
 *
 * A task is idle when its source fetch is over and no peer is downloading it
 * (peers that hold every piece may still be serving each other; they do not
 * need the supernode's copy). Only idle tasks are ever chosen:
 *  - expired: idle and unused (no registration) for taskExpireMs;
 *  - then, while the cache holds more than maxCacheBytes, or the disk has less
 *    than minFreeBytes free, the least recently used idle tasks.
 */

export interface CachePolicy {
  /** Unused this long, a task is deleted; 0 = never. */
  taskExpireMs: number;
  /** Upper bound on the bytes all cached tasks take; 0 = none. */
  maxCacheBytes: number;
  /** Free bytes the cache's file system keeps; 0 = none. */
  minFreeBytes: number;
}

export interface CacheEntry {
  taskId: string;
  /** Bytes the task's file takes. */
  bytes: number;
  /** Last registration for the task (ms since the epoch). */
  lastUsedAt: number;
  /** Fetching, or some peer is still downloading it. */
  busy: boolean;
}

export type EvictReason = 'expired' | 'space';

export interface Eviction { taskId: string; reason: EvictReason; bytes: number }

/**
 * The tasks to delete, oldest use first. freeBytes is the file system's free
 * space now (ignored when minFreeBytes is 0).
 */
export function chooseEvictions(entries: readonly CacheEntry[], policy: CachePolicy, now: number, freeBytes: number): Eviction[] {
  const idle = entries.filter((e) => !e.busy).sort((a, b) => a.lastUsedAt - b.lastUsedAt || (a.taskId < b.taskId ? -1 : 1));
  const out: Eviction[] = [];
  let total = entries.reduce((s, e) => s + e.bytes, 0);
  let free = freeBytes;
  const taken = new Set<string>();
  const take = (e: CacheEntry, reason: EvictReason) => {
    out.push({ taskId: e.taskId, reason, bytes: e.bytes });
    taken.add(e.taskId);
    total -= e.bytes;
    free += e.bytes;
  };
  if (policy.taskExpireMs > 0) {
    for (const e of idle) if (now - e.lastUsedAt >= policy.taskExpireMs) take(e, 'expired');
  }
  const short = () => (policy.maxCacheBytes > 0 && total > policy.maxCacheBytes)
    || (policy.minFreeBytes > 0 && free < policy.minFreeBytes);
  for (const e of idle) {
    if (!short()) break;
    if (!taken.has(e.taskId)) take(e, 'space');
  }
  return out;
}
