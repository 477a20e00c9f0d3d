/**
 * The detached uploader: one per host and home directory. It serves the
 * pieces every dfget run under this home holds, for --alivetime after the last
 * dfget asked it to stay, then tells the supernodes it left, removes the data
 * and exits. Started by uploader-launcher.ts; never by a user directly.
 *
 * With --inherit it takes over the listening socket of the dfget that starts
 * it (sent over the IPC channel with the role it has: `primary`, the home's
 * uploader, whose lock and info that dfget already wrote for it, or
 * `secondary`, when another uploader owns the home: it then serves only until
 * its alive time is over, and leaves the home's files alone).
 *
 * Files under HOME: uploader.lock (pid of the owner, created exclusively),
 * uploader.json ({pid, port}), data/ (pieces + one .meta.json per task),
 * logs/uploader.log (its stdout and stderr).
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { createLogger } from '../common/logger';
import { uplinkLimiter } from '../common/ratelimit';
import { sendText } from '../common/file-server';
import { PieceUploader } from './uploader';
import { makeDirs } from '../common/dirs';
import type * as net from 'node:net';
import {
  readUploaderInfo, pidAlive, lockPath, infoPath, lockOwner, claimLock, writeUploaderInfo, type TaskSidecar, SIDECAR_SUFFIX,
} from './uploader-files';

interface Args { home: string; uploadRate: number; aliveTimeMs: number; port: number; inherit: boolean }

function parseArgs(argv: string[]): Args {
  const get = (k: string) => { const i = argv.indexOf(k); return i >= 0 ? argv[i + 1] : undefined; };
  return {
    home: get('--home') ?? '',
    uploadRate: Number(get('--upload-rate') ?? 0),
    aliveTimeMs: Number(get('--alivetime-ms') ?? 300_000),
    port: Number(get('--port') ?? 0),
    inherit: argv.includes('--inherit'),
  };
}

async function acquireLock(home: string): Promise<number | undefined> {
  // Returns undefined when we own the lock, or the port of the uploader that does.
  for (let attempt = 0; attempt < 100; attempt++) {
    if (claimLock(home, process.pid)) return undefined;
    const owner = await lockOwner(home);
    const info = await readUploaderInfo(home);
    if (owner && info && info.pid === owner) return info.port;
    // The owner is still starting: its info file comes in a moment.
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('could not take the uploader lock');
}

/**
 * Serves on the listening socket the starting dfget sends (see --inherit),
 * with the role it sends. Called before anything else, and the socket is
 * served the moment it arrives: a message that comes while nobody listens
 * for it is dropped with its socket, and so is a connection the socket takes
 * before it is served.
 */
function inherited(uploader: PieceUploader): Promise<{ port: number; primary: boolean }> {
  return new Promise((resolve, reject) => {
    const gone = () => reject(new Error('the dfget that started this uploader went away before it handed over its socket'));
    process.once('disconnect', gone);
    process.once('message', (m: { role?: string }, handle: unknown) => {
      process.off('disconnect', gone);
      if (!handle || (m.role !== 'primary' && m.role !== 'secondary')) {
        reject(new Error('no listening socket handed over'));
        return;
      }
      uploader.start(handle as net.Server).then((port) => resolve({ port, primary: m.role === 'primary' }), reject);
    });
  });
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const log = createLogger('uploader', undefined, 1);
  const dataDir = path.join(args.home, 'data');
  let expiresAt = Date.now() + args.aliveTimeMs;
  let timer: NodeJS.Timeout | undefined;
  const uploader = new PieceUploader({
    dataDir,
    limiter: uplinkLimiter(args.uploadRate),
    logger: log,
    extraRoute: (req, res, url) => {
      if (url.pathname !== '/alive' || req.method !== 'POST') return false;
      const ms = Number(url.searchParams.get('ms'));
      if (Number.isFinite(ms) && ms >= 0) expiresAt = Math.max(expiresAt, Date.now() + ms);
      arm();
      sendText(res, 200, JSON.stringify({ pid: process.pid, expiresAt }), 'application/json');
      return true;
    },
  });
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
  // From the start: stopped while it starts, it still leaves the swarm (a
  // dfget that handed over its socket has named us beside its task).
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
  const handing = args.inherit && args.home ? inherited(uploader) : undefined;
  const send = (m: object) => { if (process.send && process.connected) process.send(m, () => process.disconnect?.()); };
  if (!args.home) { send({ error: 'no --home' }); process.exit(2); }
  let port: number;
  let primary = true;
  if (handing) {
    const handed = await handing;
    port = handed.port;
    // A primary's lock was taken for it; it checks that it still is its own.
    primary = handed.primary && await lockOwner(args.home) === process.pid;
    if (primary) await leaveAll(dataDir, log, 'dead');
  } else {
    makeDirs(args.home);
    const existing = await acquireLock(args.home);
    if (existing !== undefined) { send({ port: existing }); return; }
    await leaveAll(dataDir, log, 'dead');
    port = await uploader.start(args.port);
  }
  if (primary) writeUploaderInfo(args.home, process.pid, port);
  log.info({ port, home: args.home, aliveTimeMs: args.aliveTimeMs, inherited: Boolean(handing), primary }, 'uploader started');
  send({ port });

  function arm(): void {
    if (timer) clearTimeout(timer);
    const wait = expiresAt - Date.now();
    timer = setTimeout(() => {
      if (Date.now() < expiresAt) return arm();
      // Do not cut an upload short: look again once it is done.
      if (uploader.activeUploads > 0) { expiresAt = Date.now() + 1000; return arm(); }
      void stop('alive time over');
    }, Math.max(0, wait));
  }
  arm();
}

/**
 * Tells each task's supernode that this peer no longer serves it, and removes
 * the data: the tasks of uploader `owner` (this process at exit), or of any
 * uploader that is no longer running (at start, leftovers of a crash).
 */
async function leaveAll(dataDir: string, log: ReturnType<typeof createLogger>, owner: number | 'dead'): Promise<void> {
  const names = (await fs.readdir(dataDir).catch(() => [] as string[])).filter((n) => n.endsWith(SIDECAR_SUFFIX));
  const ours = (await Promise.all(names.map(async (n) => {
    const sidePath = path.join(dataDir, n);
    const side = JSON.parse(await fs.readFile(sidePath, 'utf8').catch(() => '{}')) as Partial<TaskSidecar>;
    const pid = typeof side.uploaderPid === 'number' ? side.uploaderPid : 0;
    return (owner === 'dead' ? pid !== 0 && pidAlive(pid) : pid !== owner) ? undefined : { sidePath, side };
  }))).filter((t) => t !== undefined);
  if (ours.length === 0) return;
  // gRPC is loaded only when there is someone to tell: an uploader a dfget
  // hands its tasks to starts light (their sidecars already name it).
  const { SupernodeClients } = await import('../supernode/client');
  const clients = new SupernodeClients();
  await Promise.all(ours.map(async ({ sidePath, side }) => {
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
