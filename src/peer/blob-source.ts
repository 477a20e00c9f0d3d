/**
 * What dfdaemon needs from the P2P network: a blob by digest, streamed in
 * order. The P2P implementation lives in src/peer/p2p-blob-source.ts; dfdaemon
 * falls back to fetching the upstream directly when open() rejects.
 */
import type { Readable } from 'node:stream';
import { DfError } from '../common/errors';

export interface BlobRequest {
  /** Upstream blob URL, e.g. https://registry/v2/library/alpine/blobs/sha256:... */
  url: string;
  /** Headers for the upstream fetch (Authorization, User-Agent...). Never logged. */
  headers: Record<string, string>;
  /** "sha256:<hex>": the blob's digest; it is also the task identity. */
  digest: string;
}

/** open() of a range that starts past the blob's end: `total` is the blob's length, for the 416's Content-Range. */
export class RangeNotSatisfiable extends DfError {
  constructor(readonly total: number, message: string) {
    super('DF_ERR_RANGE_NOT_SATISFIABLE', message);
  }
}

export interface BlobRange {
  /** First byte, inclusive. */
  start: number;
  /** Last byte, inclusive; undefined means to the end. */
  end?: number;
}

export interface OpenedBlob {
  /** Total blob length in bytes. */
  length: number;
  /**
   * The requested bytes, in order, as pieces land. It is destroyed with a
   * DfError (DF_ERR_DIGEST_MISMATCH, DF_ERR_P2P_FAILED...) if the download
   * fails after open() resolved.
   */
  body: Readable;
  /**
   * The piece size and the sha256 of every piece the download has verified so
   * far (the body hands out verified pieces only). With them a caller whose
   * stream broke off can check, against another copy of the blob, the bytes
   * it already passed on. Absent when the source has no pieces.
   */
  pieces?: () => { pieceSize: number; sha256: ReadonlyMap<number, string> };
  /**
   * Gives a chunk taken from `body` back to the source once nothing refers to
   * it any more (its write to the client completed): later chunks are read
   * into the same memory instead of fresh pages. A chunk not given back is
   * simply collected. Absent when the source does not reuse its buffers.
   */
  recycle?: (chunk: Buffer) => void;
}

export interface BlobSource {
  /**
   * Starts (or joins) the P2P download of the blob. Resolves once the length
   * is known. Rejects with a DfError when the P2P network cannot serve it now
   * (supernode unreachable, task failed before any byte): the caller then
   * goes to the upstream directly. Upstream HTTP errors reject with
   * DF_ERR_SOURCE_STATUS and `status` set to the upstream status.
   */
  open(req: BlobRequest, range?: BlobRange): Promise<OpenedBlob>;
  /** Stops serving and releases resources. Idempotent. */
  close(): Promise<void>;
}
