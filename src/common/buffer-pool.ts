/**
 * A free list of equal-sized buffers. The code that moves piece bytes (a
 * download's write batches, a piece server's reads) takes from one pool and
 * gives back, so fetching and serving many pieces touches the same few
 * buffers instead of fresh memory each time (on a VM every newly touched page
 * costs a fault in the guest and in the host).
 */
export class BufferPool {
  private readonly free: Buffer[] = [];

  constructor(readonly size: number, private readonly maxFree: number) {}

  take(): Buffer {
    return this.free.pop() ?? Buffer.allocUnsafeSlow(this.size);
  }

  /** Only once nothing refers to b any more (a write that failed may still hold it: drop it then). */
  give(b: Buffer): void {
    if (b.length === this.size && this.free.length < this.maxFree) this.free.push(b);
  }
}

/** 256 KiB buffers for piece bytes, shared by every download and piece server of the process. */
export const pieceBuffers = new BufferPool(256 * 1024, 32);
