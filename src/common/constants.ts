/** The release every program reports (--version, dfdaemon's User-Agent); kept equal to package.json's by a test. */
export const VERSION = '0.1.0';

/** Defaults, in one place, with their units in the names. */
export const DEFAULTS = {
  supernodePort: 8002,
  supernodeDownloadPort: 8001,
  supernodeHomeDir: '/home/admin/supernode',
  /** What the supernode may pull from sources in total, bytes/s. */
  supernodeMaxBandwidthBytesPerSec: 200 * 1024 * 1024,
  /** Piece size bounds for --piece-size auto, bytes. */
  minPieceSizeBytes: 256 * 1024,
  maxPieceSizeBytes: 4 * 1024 * 1024,
  /** auto aims at about this many pieces per file. */
  autoPieceTarget: 256,
  /** Piece size when the source does not tell its length, bytes. */
  unknownLengthPieceSizeBytes: 4 * 1024 * 1024,
  /** Supernode cache GC: a task unused this long is deleted, ms. */
  supernodeTaskExpireMs: 24 * 3600_000,
  /** ...the cache may take at most this many bytes (0 = no cap)... */
  supernodeCacheMaxBytes: 0,
  /** ...and the disk keeps at least this much free. */
  supernodeMinFreeBytes: 1024 * 1024 * 1024,
  supernodeGcIntervalMs: 60_000,

  dfgetRateLimitBytesPerSec: 20 * 1024 * 1024,
  dfgetUploadRateBytesPerSec: 100 * 1024 * 1024,
  dfgetTimeoutMs: 5 * 60_000,
  dfgetAliveTimeMs: 5 * 60_000,
  /** Pieces a peer fetches at once. */
  peerParallelPieces: 4,
  /** How long dfget waits to reach a supernode before going back to source, ms. */
  supernodeConnectTimeoutMs: 3_000,

  dfdaemonPort: 65001,
  dfdaemonHost: '127.0.0.1',
  dfdaemonRegistry: 'https://index.docker.io',
  dfdaemonRateLimitBytesPerSec: 20 * 1024 * 1024,
  /** A finished blob nobody has read or fetched pieces of for this long leaves dfdaemon's disk, ms. */
  dfdaemonExpireTimeMs: 3 * 60_000,
} as const;

/** Holder id the supernode uses for itself in assignments. */
export const SUPERNODE_HOLDER_ID = 'supernode';
