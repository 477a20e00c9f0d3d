/**
 * Builds the P2P BlobSource dfdaemon uses in production. Loaded at run time
 * so that dfdaemon builds and runs (direct only) in a tree without the peer
 * implementation; tests inject their own BlobSource instead.
 */
import { DfError } from '../common/errors';
import type { Logger } from '../common/logger';
import type { BlobSource } from '../peer/blob-source';

export interface P2PBlobSourceOptions {
  /** Supernodes, "host:port". */
  nodes: string[];
  /** Working directory of the peer (piece files, upload server state). */
  homeDir: string;
  rateLimitBytesPerSec: number;
  logger: Logger;
}

export interface StartableBlobSource extends BlobSource {
  start(): Promise<void>;
}

type P2PModule = { P2PBlobSource: new (opts: P2PBlobSourceOptions) => StartableBlobSource };

const MODULE_PATH = '../peer/p2p-blob-source';

export function createP2PBlobSource(opts: P2PBlobSourceOptions): StartableBlobSource {
  let mod: P2PModule;
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    mod = require(MODULE_PATH) as P2PModule;
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code === 'MODULE_NOT_FOUND' && String(err.message).includes('p2p-blob-source')) {
      throw new DfError('DF_ERR_INTERNAL', 'the P2P blob source (src/peer/p2p-blob-source) is not part of this build');
    }
    throw e;
  }
  if (typeof mod.P2PBlobSource !== 'function') {
    throw new DfError('DF_ERR_INTERNAL', 'src/peer/p2p-blob-source does not export P2PBlobSource');
  }
  return new mod.P2PBlobSource(opts);
}
