/** Builds the P2P BlobSource dfdaemon uses in production; tests inject their own BlobSource instead. */
import type { Logger } from '../common/logger';
import type { BlobSource } from '../peer/blob-source';
import { P2PBlobSource } from '../peer/p2p-blob-source';

export interface P2PBlobSourceOptions {
  /** Supernodes, "host:port". */
  nodes: string[];
  /** Working directory of the peer (piece files served to other peers). */
  homeDir: string;
  rateLimitBytesPerSec: number;
  /** A finished blob unused this long is deleted, ms; 0 = kept until close. */
  expireTimeMs?: number;
  /** Cap on bytes/s of pieces served to other peers; default DEFAULTS.dfgetUploadRateBytesPerSec. */
  uploadRateBytesPerSec?: number;
  logger: Logger;
}

export interface StartableBlobSource extends BlobSource {
  start(): Promise<unknown>;
}

export function createP2PBlobSource(opts: P2PBlobSourceOptions): StartableBlobSource {
  return new P2PBlobSource(opts);
}
