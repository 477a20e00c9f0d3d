/**
 * A free list of equal-sized buffers. The code that moves piece bytes (a
 * download's write batches, a piece server's reads) takes from a pool and
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

/** 256 KiB buffers for the piece bytes a piece server reads, shared by every piece server of the process. */
export const pieceBuffers = new BufferPool(256 * 1024, 32);

/**
 * 64 KiB batches in which a download gathers piece bytes before writing them
 * to its data file. One dfget taking 1 GiB from a supernode on loopback spent
 * 1.7-2.2 s of system time with 256 KiB writes and 0.5-0.7 s with 64 KiB ones
 * (eight rounds of each, alternating), and took 3.2 s against 1.7 s (median).
 * Why was not found: a program writing 1 GiB on its own costs the kernel
 * about the same at either size (bench/README.md, Loopback).
 */
export const writeBatches = new BufferPool(64 * 1024, 32);
