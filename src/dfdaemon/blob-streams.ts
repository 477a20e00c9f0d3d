/**
 * Transforms a blob body passes through on its way to the client.
 */
import { createHash, type Hash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { DfError } from '../common/errors';
import type { RateLimiter } from '../common/ratelimit';

/**
 * Hashes the bytes as they stream and fails the stream when the digest does
 * not match. The last chunk is held back until the hash is checked, so a
 * client of a bad blob never receives all of its bytes: with Content-Length
 * set it sees a short body and a closed connection, never a complete,
 * corrupt blob.
 */
export class DigestVerifier extends Transform {
  private readonly hash: Hash;
  private readonly expectedHex: string;
  private readonly algorithm: string;
  private held: Buffer | undefined;
  /** Bytes seen so far. */
  bytes = 0;

  constructor(algorithm: 'sha256' | 'sha512', expectedHex: string) {
    super();
    this.algorithm = algorithm;
    this.hash = createHash(algorithm);
    this.expectedHex = expectedHex;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.hash.update(chunk);
    this.bytes += chunk.length;
    const prev = this.held;
    this.held = chunk;
    cb(null, prev);
  }

  override _flush(cb: TransformCallback): void {
    const actual = this.hash.digest('hex');
    if (actual !== this.expectedHex) {
      cb(new DfError('DF_ERR_DIGEST_MISMATCH',
        `blob digest mismatch: expected ${this.algorithm}:${this.expectedHex}, got ${this.algorithm}:${actual} over ${this.bytes} bytes`));
      return;
    }
    cb(null, this.held);
  }
}

/** Paces the bytes through a rate limiter shared by every direct fetch. */
export class ThrottleStream extends Transform {
  private readonly limiter: RateLimiter;

  constructor(limiter: RateLimiter) {
    super();
    this.limiter = limiter;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.limiter.take(chunk.length).then(() => cb(null, chunk), cb);
  }
}

/**
 * Passes exactly `expected` bytes and fails otherwise. The response promised
 * a Content-Length: a body that disagrees must end in an error, not in a
 * silently short or over-long answer.
 */
export class ExactLength extends Transform {
  private readonly expected: number;
  private readonly code: 'DF_ERR_SOURCE_TRUNCATED' | 'DF_ERR_P2P_FAILED';
  private seen = 0;

  /** `from`: where the body comes from, which the error's code names. */
  constructor(expected: number, from: 'upstream' | 'p2p' = 'upstream') {
    super();
    this.expected = expected;
    this.code = from === 'p2p' ? 'DF_ERR_P2P_FAILED' : 'DF_ERR_SOURCE_TRUNCATED';
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.seen += chunk.length;
    if (this.seen > this.expected) {
      cb(new DfError(this.code, `blob body longer than the ${this.expected} bytes announced`));
      return;
    }
    cb(null, chunk);
  }

  override _flush(cb: TransformCallback): void {
    if (this.seen !== this.expected) {
      cb(new DfError(this.code, `blob body ended after ${this.seen} of ${this.expected} bytes`));
      return;
    }
    cb();
  }
}

export { discard } from '../common/http';

/** Counts bytes passing through (for metrics), calling `onBytes` per chunk. */
export class ByteCounter extends Transform {
  private readonly onBytes: (n: number) => void;

  constructor(onBytes: (n: number) => void) {
    super();
    this.onBytes = onBytes;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.onBytes(chunk.length);
    cb(null, chunk);
  }
}
