/**
 * The detached uploader: one per host and home directory. It serves the
 * pieces every dfget run under this home holds, for --alivetime after the last
 * dfget asked it to stay, then tells the supernodes it left, removes the data
 * and exits. Started by uploader-launcher.ts; never by a user directly:
 * either on its own (it takes the lock and listens on a port of its own), or
 * with --adopt by a dfget that served its pieces itself, which makes it the
 * owner of the lock, uploader.json and the sidecars and then hands it its
 * listening socket, so the port peers were given stays.
 *
 * Files under HOME: uploader.lock (pid of the owner, created exclusively),
 * uploader.json ({pid, port}), data/ (pieces + one .meta.json per task),
 * logs/uploader.log (its stdout and stderr).
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import type * as net from 'node:net';
import { createLogger } from '../common/logger';
import { uplinkLimiter } from '../common/ratelimit';
import { PieceUploader, aliveRoute } from './uploader';
import { readUploaderInfo, pidAlive, lockPath, infoPath, type TaskSidecar, SIDECAR_SUFFIX, acquireLock, lockOwner, writeUploaderInfo, type AdoptMessage } from './uploader-files';

interface Args { home: string; uploadRate: number; aliveTimeMs: number; port: number; adopt: boolean }

function parseArgs(argv: string[]): Args {
  const get = (k: string) => { const i = argv.indexOf(k); return i >= 0 ? argv[i + 1] : undefined; };
  return {
    home: get('--home') ?? '',
    uploadRate: Number(get('--upload-rate') ?? 0),
    aliveTimeMs: Number(get('--alivetime-ms') ?? 300_000),
    port: Number(get('--port') ?? 0),
    adopt: argv.includes('--adopt'),
  };
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const log = createLogger('uploader', undefined, 1);
  const send = (m: object) => { if (process.connected) process.send!(m, () => process.disconnect?.()); };
  if (!args.home) { send({ error: 'no --home' }); process.exit(2); }
  const dataDir = path.join(args.home, 'data');
  const lease = { expiresAt: Date.now() + args.aliveTimeMs };
  let timer: NodeJS.Timeout | undefined;
  const uploader = new PieceUploader({
    dataDir,
    limiter: uplinkLimiter(args.uploadRate),
    logger: log,
    extraRoute: aliveRoute(lease, () => arm()),
  });
  // Taking over from a dfget: it made this process the owner of the home's
  // lock, uploader.json and sidecars, then sends its listening socket, whose
  // connections are ours from the moment it arrives.
  const adopted = args.adopt ? await receiveSocket((m, server) => {
    lease.expiresAt = Math.max(lease.expiresAt, m.expiresAt);
    uploader.adopt(server);
  }) : undefined;
  await fs.mkdir(args.home, { recursive: true });
  if (adopted) {
    if (await lockOwner(args.home) !== process.pid) throw new Error('handed a socket without the home\'s lock');
  } else {
    const existing = await acquireLock(args.home);
    if (existing !== undefined) { send({ port: existing }); return; }
  }

  await leaveAll(dataDir, log, 'dead');
  const port = adopted ? uploader.port : await uploader.start(args.port);
  if (!adopted) writeUploaderInfo(args.home, process.pid, port);
  log.info({ port, home: args.home, aliveTimeMs: args.aliveTimeMs, adopted: Boolean(adopted) }, 'uploader started');
  send({ port });

  let stopping = false;
  const stop = async (why: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ why }, 'uploader stopping');
    await uploader.close();
    await leaveAll(dataDir, log, process.pid);
    // Only our own: if the home was removed under us, a newer uploader may own these names now.
    if ((await readUploaderInfo(args.home))?.pid === process.pid) await fs.rm(infoPath(args.home), { force: true });
    if (await lockOwner(args.home) === process.pid) await fs.rm(lockPath(args.home), { force: true });
    process.exit(0);
  };
  function arm(): void {
    if (timer) clearTimeout(timer);
    const wait = lease.expiresAt - Date.now();
    timer = setTimeout(() => {
      if (Date.now() < lease.expiresAt) return arm();
      // Do not cut an upload short: look again once it is done.
      if (uploader.activeUploads > 0) { lease.expiresAt = Date.now() + 1000; return arm(); }
      void stop('alive time over');
    }, Math.max(0, wait));
  }
  arm();
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
}

/**
 * The first IPC message of an --adopt start: the dfget's lease and its
 * listening socket, given to serve() before anything else can run (a
 * connection accepted with nobody to take it would hang). The dfget may start
 * us a while before it is done; if it exits without handing over, the
 * channel closes and so do we.
 */
function receiveSocket(serve: (message: AdoptMessage, server: net.Server) => void): Promise<AdoptMessage> {
  return new Promise((resolve, reject) => {
    const gone = () => reject(new Error('the dfget that started us exited without handing over its socket'));
    process.once('disconnect', gone);
    process.once('message', (message: AdoptMessage, server?: net.Server) => {
      process.off('disconnect', gone);
      if (!message?.adopt || !server) return reject(new Error('the first message did not hand over a socket'));
      serve(message, server);
      resolve(message);
    });
  });
}

/**
 * Tells each task's supernode that this peer no longer serves it, and removes
 * the data: the tasks of uploader `owner` (this process at exit), or of any
 * uploader that is no longer running (at start, leftovers of a crash).
 */
async function leaveAll(dataDir: string, log: ReturnType<typeof createLogger>, owner: number | 'dead'): Promise<void> {
  const names = (await fs.readdir(dataDir).catch(() => [] as string[])).filter((n) => n.endsWith(SIDECAR_SUFFIX));
  if (names.length === 0) return;
  // gRPC is loaded only when there is someone to tell: the uploader starts light.
  const { SupernodeClients } = await import('../supernode/client');
  const clients = new SupernodeClients();
  await Promise.all(names.map(async (n) => {
    const sidePath = path.join(dataDir, n);
    const side = JSON.parse(await fs.readFile(sidePath, 'utf8').catch(() => '{}')) as Partial<TaskSidecar>;
    const pid = typeof side.uploaderPid === 'number' ? side.uploaderPid : 0;
    if (owner === 'dead' ? pid !== 0 && pidAlive(pid) : pid !== owner) return;
    if (side.node && side.peerId && side.taskId) {
      await clients.leave(side.node, side.peerId, side.taskId);
      log.debug({ taskId: side.taskId, peerId: side.peerId }, 'left the task');
    }
    await fs.rm(sidePath.slice(0, -SIDECAR_SUFFIX.length), { force: true });
    await fs.rm(sidePath, { force: true });
  }));
  clients.close();
}

main().catch((err) => {
  process.stderr.write(`uploader: ${String(err?.stack ?? err)}\n`);
  if (process.send) process.send({ error: String(err?.message ?? err) }, () => process.exit(1)); else process.exit(1);
});
