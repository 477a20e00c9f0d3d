/** supernode: schedules piece transfers and caches sources (the CDN role). */
import yargs from 'yargs';
import { DEFAULTS } from '../common/constants';
import { invalidArgument } from '../common/errors';
import { createLogger } from '../common/logger';
import { resolveAdvertiseIp } from '../common/net';
import { parseDuration, parseSize } from '../common/units';
import { Supernode } from '../supernode/supernode';
import { DEFAULT_SCHEDULER_OPTIONS, type SchedulerOptions } from '../supernode/scheduler';
import { die, finishParser, onSignals } from './common';

const PROG = 'supernode';

/**
 * Run scripts of the Java-era supernode pass -Dkey=value properties. The ones
 * with a meaning here become flags; any other -D is refused, not ignored.
 */
const JAVA_PROPS: Record<string, (v: string) => string[]> = {
  'supernode.advertiseIp': (v) => ['--advertise-ip', v],
  'supernode.baseHome': (v) => ['--home-dir', v],
  'supernode.homeDir': (v) => ['--home-dir', v],
  'supernode.totalLimit': (v) => ['--max-bandwidth', /^\d+$/.test(v) ? `${v}M` : v],
  'supernode.downloadPort': (v) => ['--download-port', v],
  'server.port': (v) => ['--port', v],
};

export function translateJavaProps(argv: string[]): string[] {
  const out: string[] = [];
  for (const arg of argv) {
    const m = /^-D([A-Za-z0-9_.]+)=(.*)$/.exec(arg);
    if (!m) { out.push(arg); continue; }
    const t = JAVA_PROPS[m[1]];
    if (!t) throw invalidArgument(`unsupported property -D${m[1]}; known: ${Object.keys(JAVA_PROPS).map((k) => `-D${k}`).join(', ')}`);
    out.push(...t(m[2]));
  }
  return out;
}

/** Most transfers of one task a peer may have at once in either direction. */
const MAX_PEER_LIMIT = 64;

function peerLimit(v: number, name: string): number {
  if (!Number.isInteger(v) || v < 1 || v > MAX_PEER_LIMIT) throw invalidArgument(`invalid ${name} ${v}: expected a whole number from 1 to ${MAX_PEER_LIMIT}`);
  return v;
}

/** The scheduler's per-peer limits from --peer-down-limit and --peer-up-limit. */
export function schedulerLimits(a: { 'peer-down-limit': number; 'peer-up-limit': number }): Partial<SchedulerOptions> {
  return {
    maxInFlightPerPeer: peerLimit(a['peer-down-limit'], '--peer-down-limit'),
    maxUploadsPerHolder: peerLimit(a['peer-up-limit'], '--peer-up-limit'),
  };
}

function portOf(v: number, name: string): number {
  if (!Number.isInteger(v) || v < 0 || v > 65535) throw invalidArgument(`invalid ${name} ${v}: expected 0-65535`);
  return v;
}

export function parseSupernodeArgs(argv: string[]) {
  return finishParser(yargs(translateJavaProps(argv)), PROG)
    .usage('$0 [options]\n\nRegisters download tasks, fetches each source once, cuts it into pieces on disk and schedules piece transfers between peers over gRPC.\nThe Java-era -Dsupernode.advertiseIp=IP (and -Dsupernode.baseHome, -Dsupernode.totalLimit, -Dserver.port) are accepted too.')
    .option('advertise-ip', { type: 'string', describe: 'Address peers dial to reach this supernode (default: the first non-loopback address)' })
    .option('port', { type: 'number', default: DEFAULTS.supernodePort, describe: 'gRPC port for peers (register, scheduling)' })
    .option('download-port', { type: 'number', default: DEFAULTS.supernodeDownloadPort, describe: 'HTTP port serving pieces to peers, plus /metrics and /healthz' })
    .option('listen', { type: 'string', default: '0.0.0.0', describe: 'Address both ports listen on' })
    .option('home-dir', { type: 'string', default: DEFAULTS.supernodeHomeDir, describe: 'Cache directory: pieces (repo/) and task metadata (meta/); made if missing (exit 2 when it cannot be)' })
    .option('max-bandwidth', { type: 'string', default: '200M', describe: 'Cap on bytes/s pulled from sources, all tasks together (K, M, G = KiB, MiB, GiB; 0 = unlimited)' })
    .option('upload-rate', { type: 'string', default: '0', describe: 'Cap on bytes/s of pieces sent to peers, all together (K, M, G = KiB, MiB, GiB; 0 = unlimited). A little below the uplink (e.g. 95 %) keeps the source fetch fast: a full uplink delays the source\'s acknowledgements' })
    .option('peer-down-limit', { type: 'number', default: DEFAULT_SCHEDULER_OPTIONS.maxInFlightPerPeer, describe: 'Pieces of one task a peer downloads at once (1-64)' })
    .option('peer-up-limit', { type: 'number', default: DEFAULT_SCHEDULER_OPTIONS.maxUploadsPerHolder, describe: 'Pieces of one task a peer serves to others at once (1-64)' })
    .option('piece-size', { type: 'string', default: 'auto', describe: 'Piece size: auto (256 KiB to 4 MiB, about 256 pieces a file) or a size such as 4M; doubled for a file that would need more than 65,536 pieces' })
    .option('source-timeout', { type: 'string', default: '30s', describe: 'A source silent for this long is asked for the rest with a range request (3 tries in a row), then fails its task' })
    .option('task-expire-time', { type: 'string', default: '24h', describe: 'Cache GC: a cached task no peer registered for in this long is deleted (e.g. 30m, 168h; 0 = never)' })
    .option('cache-max-size', { type: 'string', default: '0', describe: 'Cache GC: beyond this many bytes of cached tasks, the least recently used idle ones are deleted (e.g. 50G; 0 = no cap)' })
    .option('min-free-space', { type: 'string', default: '1G', describe: 'Cache GC: while the cache\'s disk has less free space than this, the least recently used idle tasks are deleted (0 = no floor)' })
    .option('gc-interval', { type: 'string', default: '1m', describe: 'How often the cache GC runs (it also runs after each completed fetch when a size limit is set; 0 = only then)' })
    .option('verbose', { type: 'boolean', default: false, describe: 'Debug logs' })
    .parseSync();
}

async function main(): Promise<void> {
  let a: ReturnType<typeof parseSupernodeArgs>;
  let sn: Supernode;
  try {
    a = parseSupernodeArgs(process.argv.slice(2));
    const pieceSize = a['piece-size'] === 'auto' ? 'auto' as const : parseSize(a['piece-size'], '--piece-size');
    if (pieceSize !== 'auto' && (pieceSize < 16 * 1024 || pieceSize > 64 * 1024 * 1024)) throw invalidArgument('--piece-size must be between 16K and 64M');
    const logger = createLogger(PROG, a.verbose ? 'debug' : 'info');
    sn = new Supernode({
      homeDir: a['home-dir'],
      advertiseIp: resolveAdvertiseIp(a['advertise-ip']),
      port: portOf(a.port, '--port'),
      downloadPort: portOf(a['download-port'], '--download-port'),
      listenHost: a.listen,
      maxBandwidthBytesPerSec: parseSize(a['max-bandwidth'], '--max-bandwidth'),
      uploadRateBytesPerSec: parseSize(a['upload-rate'], '--upload-rate'),
      pieceSize,
      sourceTimeoutMs: parseDuration(a['source-timeout'], '--source-timeout'),
      cachePolicy: {
        taskExpireMs: parseDuration(a['task-expire-time'], '--task-expire-time'),
        maxCacheBytes: parseSize(a['cache-max-size'], '--cache-max-size'),
        minFreeBytes: parseSize(a['min-free-space'], '--min-free-space'),
      },
      gcIntervalMs: parseDuration(a['gc-interval'], '--gc-interval'),
      schedulerOptions: schedulerLimits(a),
      logger,
    });
  } catch (err) {
    die(PROG, err);
  }
  try {
    await sn.start();
  } catch (err) {
    await sn.close().catch(() => undefined);
    die(PROG, err);
  }
  // Tests and scripts wait for this line to know the ports.
  process.stdout.write(`${JSON.stringify({ ready: true, port: sn.port, downloadPort: sn.downloadPort })}\n`);
  onSignals(() => sn.close());
}

export function run(): void {
  main().catch((err) => die(PROG, err));
}

if (require.main === module) run();
