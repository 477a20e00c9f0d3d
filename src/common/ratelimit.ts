/**
 * A token bucket shared by every stream that draws from one budget (a
 * download, an uploader, a supernode's source fetches).
 *
 * Tokens may go negative: a caller that takes more than is there waits for the
 * debt to be repaid, so a large chunk is paced rather than refused. The burst
 * is kept small (100 ms of rate by default) so that a short download cannot
 * beat the limit by spending a large initial bucket.
 */
export interface Clock { now(): number }
export const systemClock: Clock = { now: () => performance.now() };

export class RateLimiter {
  readonly bytesPerSec: number;
  /** Most bytes let out at once after an idle spell. */
  readonly burst: number;
  private tokens: number;
  private last: number;
  private readonly clock: Clock;

  /** bytesPerSec <= 0 or Infinity means unlimited. */
  constructor(bytesPerSec: number, opts: { burstBytes?: number; clock?: Clock } = {}) {
    this.bytesPerSec = bytesPerSec > 0 ? bytesPerSec : Infinity;
    this.clock = opts.clock ?? systemClock;
    this.burst = opts.burstBytes ?? Math.max(16 * 1024, this.bytesPerSec / 10);
    this.tokens = Number.isFinite(this.bytesPerSec) ? this.burst : Infinity;
    this.last = this.clock.now();
  }

  get unlimited(): boolean { return !Number.isFinite(this.bytesPerSec); }

  private refill(): void {
    const now = this.clock.now();
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) / 1000) * this.bytesPerSec);
    this.last = now;
  }

  /** Milliseconds the caller must wait after taking n bytes now (0 if none). */
  reserve(n: number): number {
    if (this.unlimited) return 0;
    this.refill();
    this.tokens -= n;
    return this.tokens >= 0 ? 0 : (-this.tokens / this.bytesPerSec) * 1000;
  }

  /** Takes n bytes from the bucket, resolving when they may be used. */
  async take(n: number): Promise<void> {
    const waitMs = this.reserve(n);
    if (waitMs > 0) await new Promise<void>((r) => setTimeout(r, Math.ceil(waitMs)));
  }
}

/**
 * An uplink limiter's burst: 50 ms of its rate, kept between 64 KiB and
 * 256 KiB (a piece server's read buffer), or 10 ms of its rate when that is
 * more (fast links). Each burst costs a timer and a write through the
 * network stack, and the cost per burst is large: at 50 Mbit/s a piece server
 * serving 64 MiB made the machine spend 190-370 ms more CPU in 122,500-byte
 * bursts than in 256 KiB ones, and 64 KiB cost more still (bench/README.md).
 * At 50 Mbit/s a 256 KiB burst is 43 ms of the link, well inside the queue a
 * link holds; a slow link keeps 64 KiB, so its queue stays short.
 */
function uplinkBurstBytes(bytesPerSec: number): number {
  const fiftyMs = Math.min(256 * 1024, Math.max(64 * 1024, Math.round(bytesPerSec / 20)));
  return Math.max(fiftyMs, Math.round(bytesPerSec / 100));
}

/**
 * A limiter for bytes a host sends (piece uploads), or undefined for
 * unlimited (bytesPerSec <= 0). Its bursts are short on purpose: a host whose
 * uplink is full queues the acknowledgements of what it downloads behind its
 * own data, which slows its downloads (the supernode's source fetch, a peer's
 * pieces). Capped a little below the link's rate, in short bursts, the link's
 * queue stays short.
 */
export function uplinkLimiter(bytesPerSec: number): RateLimiter | undefined {
  return bytesPerSec > 0 && Number.isFinite(bytesPerSec)
    ? new RateLimiter(bytesPerSec, { burstBytes: uplinkBurstBytes(bytesPerSec) })
    : undefined;
}

/** Takes from every limiter given (e.g. a per-download and a global one). */
export async function takeAll(limiters: Array<RateLimiter | undefined>, n: number): Promise<void> {
  let wait = 0;
  for (const l of limiters) if (l) wait = Math.max(wait, l.reserve(n));
  if (wait > 0) await new Promise<void>((r) => setTimeout(r, Math.ceil(wait)));
}
