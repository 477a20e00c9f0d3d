/**
 * The detached uploader: one per host and home directory. It serves the
 * pieces every dfget run under this home holds, for --alivetime after the last
 * dfget asked it to stay, then tells the supernodes it left, removes the data
 * and exits. Started by uploader-launcher.ts; never by a user directly.
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
import { readUploaderInfo, pidAlive, lockPath, infoPath, type TaskSidecar, SIDECAR_SUFFIX } from './uploader-files';

interface Args { home: string; uploadRate: number; aliveTimeMs: number; port: number }

function parseArgs(argv: string[]): Args {
  const get = (k: string) => { const i = argv.indexOf(k); return i >= 0 ? argv[i + 1] : undefined; };
  return {
    home: get('--home') ?? '',
    uploadRate: Number(get('--upload-rate') ?? 0),
    aliveTimeMs: Number(get('--alivetime-ms') ?? 300_000),
    port: Number(get('--port') ?? 0),
  };
}

/** Pid written in the home's lock file; 0 when there is none. */
async function lockOwner(home: string): Promise<number> {
  return Number(await fs.readFile(lockPath(home), 'utf8').catch(() => '')) || 0;
}

async function acquireLock(home: string): Promise<number | undefined> {
  // Returns undefined when we own the lock, or the port of the uploader that does.
  for (let attempt = 0; attempt < 100; attempt++) {
    try {
      const fh = await fs.open(lockPath(home), 'wx');
      await fh.writeFile(String(process.pid));
      await fh.close();
      return undefined;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const owner = await lockOwner(home);
    if (owner && pidAlive(owner)) {
      const info = await readUploaderInfo(home);
      if (info && info.pid === owner) return info.port;
      // The owner is still starting: its info file comes in a moment.
      await new Promise((r) => setTimeout(r, 50));
      continue;
    }
    await fs.rm(lockPath(home), { force: true });
  }
  throw new Error('could not take the uploader lock');
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const log = createLogger('uploader', undefined, 1);
  const send = (m: object) => { if (process.send) process.send(m, () => process.disconnect?.()); };
  if (!args.home) { send({ error: 'no --home' }); process.exit(2); }
  await fs.mkdir(args.home, { recursive: true });
  const existing = await acquireLock(args.home);
  if (existing !== undefined) { send({ port: existing }); return; }

  const dataDir = path.join(args.home, 'data');
  await leaveAll(dataDir, log, 'dead');
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
  const port = await uploader.start(args.port);
  const tmp = `${infoPath(args.home)}.${process.pid}`;
  await fs.writeFile(tmp, JSON.stringify({ pid: process.pid, port }));
  await fs.rename(tmp, infoPath(args.home));
  log.info({ port, home: args.home, aliveTimeMs: args.aliveTimeMs }, 'uploader started');
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
    const wait = expiresAt - Date.now();
    timer = setTimeout(() => {
      if (Date.now() < expiresAt) return arm();
      // Do not cut an upload short: look again once it is done.
      if (uploader.activeUploads > 0) { expiresAt = Date.now() + 1000; return arm(); }
      void stop('alive time over');
    }, Math.max(0, wait));
  }
  arm();
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
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
