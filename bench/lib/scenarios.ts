/**
 * The scenarios. Each one prepares what must already run (supernode,
 * dfdaemons), then starts the download on all N hosts at once, waits for the
 * last one, and measures: per-host times, bytes the origin host sent, CPU and
 * peak RSS of the supernode and of one peer (h1), and whether every host got
 * exactly the source bytes.
 */
import { createReadStream } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { cpus as osCpus } from 'node:os';
import { dirname, join } from 'node:path';
import { metricValue } from '../../src/common/metrics';
import { writeRegistriesConf } from '../../test/helpers/registry';
import { verifyPulledImage } from './image';
import { stopPid, type Spawned } from './netbed';
import { pidAlive } from '../../src/peer/uploader-files';
import { combineUsage, cpuBusyPct, cpuSnapshot, ProcSampler, readHookRecord, type ProcUsage } from './procstat';
import {
  dfdaemonAvailable, dfdaemonMetrics, measuredEnv, ORIGIN_HOST, originBodyBytes, SN_HOST, startDfdaemon,
  startSupernode, uploadRateArgs, type DfdaemonHandle, type SupernodeHandle,
} from './services';
import { lowerBoundS, median, round } from './stats';
import type { BenchContext, HostResult, RoleUsage, ScenarioName, ScenarioResult } from './types';

/** The host whose CPU and memory are reported as "one peer". */
const SAMPLE_HOST_INDEX = 0;

interface TimedRun {
  host: string;
  pid: number;
  code: number | null;
  seconds: number | null;
}

interface Timed {
  /** Epoch ms just before the first host was started. */
  launchedAtMs: number;
  runs: TimedRun[];
  cpuBusyPct: number;
}

/**
 * Starts launch(host) on every host back to back (the whole loop takes a few
 * milliseconds), then waits for all of them or the deadline. A host still
 * running at the deadline is killed and has seconds = null.
 */
async function startAllAndWait(hosts: string[], launch: (host: string, index: number) => Spawned, timeoutS: number,
  onExit?: (host: string, index: number) => void): Promise<Timed> {
  const cpu0 = cpuSnapshot();
  const launchedAtMs = Date.now();
  const t0 = performance.now();
  const started = hosts.map((host, i) => ({ host, s: launch(host, i) }));
  const runs: TimedRun[] = started.map(({ host, s }) => ({ host, pid: s.pid, code: null, seconds: null }));
  const done = started.map(({ s }, i) => s.exited.then(({ code, atMs }) => {
    runs[i].code = code;
    runs[i].seconds = round((atMs - t0) / 1000, 3);
    onExit?.(hosts[i], i);
  }));
  let timer: NodeJS.Timeout | undefined;
  const timedOut = await Promise.race([
    Promise.all(done).then(() => false),
    new Promise<boolean>((r) => { timer = setTimeout(() => r(true), timeoutS * 1000); }),
  ]);
  clearTimeout(timer);
  const cpu1 = cpuSnapshot();
  if (timedOut) {
    const late = runs.map((r, i) => (r.code === null ? i : -1)).filter((i) => i >= 0);
    for (const i of late) started[i].s.child.kill('SIGKILL');
    await Promise.all(late.map((i) => done[i]));
    for (const i of late) runs[i].seconds = null;
  }
  return { launchedAtMs, runs, cpuBusyPct: cpuBusyPct(cpu0, cpu1) };
}

async function sha256Hex(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const c of createReadStream(path, { highWaterMark: 1024 * 1024 })) h.update(c as Buffer);
  return h.digest('hex');
}

/** Runs fn over items, at most `limit` at a time (hashing 32 x 64 MiB at once would only thrash). */
async function mapLimit<T, R>(items: T[], limit: number, fn: (x: T, i: number) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i], i);
    }
  }));
  return out;
}

async function logTail(file: string, lines = 3): Promise<string> {
  const text = await readFile(file, 'utf8').catch(() => '');
  return text.trim().split('\n').slice(-lines).join(' | ').slice(0, 500);
}

function deadlineS(ctx: BenchContext, n: number, bytes: number): number {
  if (ctx.timeoutS) return ctx.timeoutS;
  // A hang guard, not a target: three times what N plain downloads over the
  // origin's uplink need, plus start-up slack.
  return Math.ceil(Math.max(60, 3 * (n * bytes * 8) / ctx.rateBitsPerSec + 30));
}

const cpus = (): number => Math.max(1, osCpus().length);

function roleUsage(host: string, parts: Array<[string, ProcUsage | undefined]>): RoleUsage | null {
  const have = parts.filter((p): p is [string, ProcUsage] => p[1] !== undefined);
  const sum = combineUsage(have.map((p) => p[1]));
  if (!sum) return null;
  return { host, ...sum, processes: have.map(([name, u]) => ({ name, ...u })) };
}

interface Common {
  scenario: ScenarioName;
  n: number;
  fileBytes: number;
  timed: Timed;
  hostResults: HostResult[];
  txBefore: number;
  txAfter: number;
  bodyBytes: number | null;
  supernode: RoleUsage | null;
  peer: RoleUsage | null;
  /** CPU of every host's peer-side processes; undefined entries = not measured. */
  allPeers: Array<ProcUsage | undefined>;
  notes: string[];
}

function assemble(ctx: BenchContext, c: Common): ScenarioResult {
  const r = ctx.rateBitsPerSec;
  const boundS = lowerBoundS(c.fileBytes, c.n, r, r, r);
  const secs = c.hostResults.map((h) => h.seconds);
  const allFinished = secs.every((s): s is number => s !== null);
  const lastS = allFinished ? Math.max(...(secs as number[])) : null;
  const medianS = allFinished ? median(secs as number[]) : null;
  const originTx = c.txAfter - c.txBefore;
  const hostsVerified = c.hostResults.filter((h) => h.verified).length;
  const allPeersCpuS = c.allPeers.length === c.n && c.allPeers.every((u) => u !== undefined)
    ? round(c.allPeers.reduce((sum, u) => sum + (u as ProcUsage).cpuS, 0), 2) : null;
  const cpuFloorS = allPeersCpuS === null ? null : round((allPeersCpuS + (c.supernode?.cpuS ?? 0)) / cpus(), 2);
  return {
    scenario: c.scenario,
    peers: c.n,
    fileBytes: c.fileBytes,
    rateBitsPerSec: r,
    lastS: lastS === null ? null : round(lastS, 2),
    medianS: medianS === null ? null : round(medianS, 2),
    boundS: round(boundS, 2),
    ratio: lastS === null ? null : round(lastS / boundS, 2),
    medianRatio: medianS === null ? null : round(medianS / boundS, 2),
    originTxBytes: originTx,
    originTxRatio: round(originTx / c.fileBytes, 3),
    originBodyBytes: c.bodyBytes,
    supernode: c.supernode,
    peer: c.peer,
    machineCpuBusyPct: c.timed.cpuBusyPct,
    allPeersCpuS,
    cpuFloorS,
    verified: hostsVerified === c.hostResults.length && c.hostResults.length === c.n,
    hostsVerified,
    hosts: c.hostResults,
    notes: c.notes,
  };
}

/** Checks each host's output file against the source's sha256. */
async function verifyFiles(ctx: BenchContext, runs: TimedRun[], outOf: (host: string) => string, logOf: (host: string) => string): Promise<HostResult[]> {
  return mapLimit(runs, 2, async (run) => {
    const base = { host: run.host, seconds: run.seconds, exitCode: run.code };
    if (run.seconds === null) return { ...base, verified: false, error: 'did not finish before the deadline' };
    if (run.code !== 0) return { ...base, verified: false, error: `exit ${run.code}: ${await logTail(logOf(run.host))}` };
    const got = await sha256Hex(outOf(run.host)).catch((e: Error) => `unreadable: ${e.message}`);
    if (got !== ctx.file.sha256) return { ...base, verified: false, error: `sha256 ${got} differs from the source` };
    return { ...base, verified: true };
  });
}

async function hostDirs(dir: string, hosts: string[]): Promise<Map<string, string>> {
  const m = new Map<string, string>();
  for (const h of hosts) {
    const d = join(dir, h);
    await mkdir(join(d, 'out'), { recursive: true });
    m.set(h, d);
  }
  return m;
}

// ---------------------------------------------------------------------------

async function runDirect(ctx: BenchContext, n: number, dir: string): Promise<ScenarioResult> {
  const hosts = ctx.peerHosts.slice(0, n);
  const dirs = await hostDirs(dir, hosts);
  const out = (h: string): string => join(dirs.get(h)!, 'out', ctx.file.name);
  const log = (h: string): string => join(dirs.get(h)!, 'curl.log');
  const txBefore = await ctx.nb.tx(ORIGIN_HOST);
  const body0 = await originBodyBytes(ctx.originStatsUrl);
  const samplers: ProcSampler[] = [];
  const usage: Array<ProcUsage | undefined> = [];
  const timed = await startAllAndWait(hosts, (h, i) => {
    const s = ctx.nb.exec(h, 'curl', ['-sS', '--fail', '-o', out(h), ctx.file.url], { logFile: log(h) });
    samplers[i] = new ProcSampler(s.pid);
    return s;
  }, deadlineS(ctx, n, ctx.file.bytes), (_h, i) => {
    usage[i] = samplers[i].stop();
  });
  hosts.forEach((_h, i) => { usage[i] ??= samplers[i].stop(); });
  const peerUsage = usage[SAMPLE_HOST_INDEX];
  const txAfter = await ctx.nb.tx(ORIGIN_HOST);
  const body1 = await originBodyBytes(ctx.originStatsUrl);
  const hostResults = await verifyFiles(ctx, timed.runs, out, log);
  return assemble(ctx, {
    scenario: 'direct', n, fileBytes: ctx.file.bytes, timed, hostResults, txBefore, txAfter, bodyBytes: body1 - body0,
    supernode: null,
    peer: roleUsage(hosts[SAMPLE_HOST_INDEX], [['curl', peerUsage]]),
    allPeers: usage,
    notes: peerUsage ? ['peer = curl, sampled from /proc every 50 ms'] : [],
  });
}

/** Port every relay listens on (each host has its own address). */
const RELAY_PORT = 9100;

/**
 * Every host runs bench/lib/relay.ts: it serves the source file to the host
 * before it in a ring and takes the file from the host after it. Each host
 * receives F and sends F, as a p2p peer does, with nothing else: the CPU and
 * time that moving the bytes costs on its own on this machine, with Node
 * started at the clock as dfget is. The origin sends nothing.
 */
async function runRelay(ctx: BenchContext, n: number, dir: string): Promise<ScenarioResult> {
  const hosts = ctx.peerHosts.slice(0, n);
  if (n < 2) throw new Error('relay needs at least 2 hosts');
  const dirs = await hostDirs(dir, hosts);
  const out = (h: string): string => join(dirs.get(h)!, 'out', ctx.file.name);
  const log = (h: string): string => join(dirs.get(h)!, 'relay.log');
  const relay = join(__dirname, 'relay.js');
  const env = measuredEnv(ctx);
  const txBefore = await ctx.nb.tx(ORIGIN_HOST);
  const timed = await startAllAndWait(hosts, (h, i) => ctx.nb.exec(h, process.execPath, [
    relay, ctx.nb.ip(h), String(RELAY_PORT), ctx.file.path, ctx.nb.ip(hosts[(i + 1) % n]), out(h),
  ], { logFile: log(h), env }), deadlineS(ctx, n, ctx.file.bytes));
  const txAfter = await ctx.nb.tx(ORIGIN_HOST);
  const usage = await Promise.all(timed.runs.map((r) => readHookRecord(ctx.procstatDir, r.pid)));
  const hostResults = await verifyFiles(ctx, timed.runs, out, log);
  return assemble(ctx, {
    scenario: 'relay', n, fileBytes: ctx.file.bytes, timed, hostResults, txBefore, txAfter, bodyBytes: null,
    supernode: null,
    peer: roleUsage(hosts[SAMPLE_HOST_INDEX], [['relay', usage[SAMPLE_HOST_INDEX]]]),
    allPeers: usage,
    notes: [],
  });
}

/** Reads a dfget home's uploader pid (the detached process that serves this host's pieces). */
async function uploaderPid(home: string): Promise<number | undefined> {
  try {
    const v = JSON.parse(await readFile(join(home, 'uploader.json'), 'utf8')) as { pid?: number };
    return typeof v.pid === 'number' ? v.pid : undefined;
  } catch {
    return undefined;
  }
}

/** Waits (at most timeoutMs) until uploader pid of a dfget home logged that it started. */
async function uploaderUp(home: string, pid: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const log = join(home, 'logs', 'uploader.log');
  while (Date.now() < deadline && pidAlive(pid)) {
    const text = await readFile(log, 'utf8').catch(() => '');
    if (text.split('\n').some((l) => l.includes(`"pid":${pid},`) && l.includes('uploader started'))) return;
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function supernodeDetails(sn: SupernodeHandle, ctx: BenchContext, snTxBefore: number, launchedAtMs: number) {
  const m = await sn.metrics().catch(() => '');
  const fetch = await sn.sourceFetchTimes();
  return {
    sourceFetchStartS: fetch.startedMs === null ? null : round((fetch.startedMs - launchedAtMs) / 1000, 2),
    sourceFetchS: fetch.startedMs === null || fetch.completeMs === null ? null : round((fetch.completeMs - fetch.startedMs) / 1000, 2),
    pieceSizeBytes: await sn.pieceSize(),
    piecesFromPeers: metricValue(m, 'dragonfly_supernode_pieces_scheduled_total', { holder: 'peer' }),
    piecesFromSupernode: metricValue(m, 'dragonfly_supernode_pieces_scheduled_total', { holder: 'supernode' }),
    pieceFailures: metricValue(m, 'dragonfly_supernode_piece_results_total', { result: 'failure' }),
    sourceBytes: metricValue(m, 'dragonfly_supernode_source_bytes_total'),
    supernodeUploadBytes: metricValue(m, 'dragonfly_supernode_upload_bytes_total'),
    supernodeTxBytes: (await ctx.nb.tx(SN_HOST)) - snTxBefore,
  };
}

async function stopSupernode(ctx: BenchContext, sn: SupernodeHandle): Promise<ProcUsage | undefined> {
  await ctx.nb.procs.stop(sn.spawned.child, 10_000);
  return readHookRecord(ctx.procstatDir, sn.spawned.pid);
}

async function runP2P(ctx: BenchContext, n: number, dir: string): Promise<ScenarioResult> {
  const hosts = ctx.peerHosts.slice(0, n);
  const dirs = await hostDirs(dir, hosts);
  const out = (h: string): string => join(dirs.get(h)!, 'out', ctx.file.name);
  const log = (h: string): string => join(dirs.get(h)!, 'dfget.log');
  const home = (h: string): string => join(dirs.get(h)!, 'home');
  const sn = await startSupernode(ctx, dir);
  const notes: string[] = [];
  const uploaders = new Map<string, number>();
  const txBefore = await ctx.nb.tx(ORIGIN_HOST);
  const snTxBefore = await ctx.nb.tx(SN_HOST);
  const body0 = await originBodyBytes(ctx.originStatsUrl);
  // As users start it: bin/dfget.js runs the bundle (dist/bundle/) with its code cache.
  const dfget = join(ctx.distDir, '..', 'bin', 'dfget.js');
  const env = measuredEnv(ctx);
  const timed = await startAllAndWait(hosts, (h) => ctx.nb.exec(h, process.execPath, [
    dfget, '--url', ctx.file.url, '-o', out(h), '--node', sn.node, '--home', home(h),
    '--ratelimit', '1G', '--notbs', '--alivetime', '2m', ...uploadRateArgs(ctx),
  ], { logFile: log(h), env }), deadlineS(ctx, n, ctx.file.bytes), (h) => {
    void uploaderPid(home(h)).then((pid) => {
      if (pid) { uploaders.set(h, pid); ctx.nb.procs.addPid(pid); }
    });
  });
  const p2p = await supernodeDetails(sn, ctx, snTxBefore, timed.launchedAtMs);

  // Stop the uploaders (each tells the supernode it leaves), then the supernode.
  for (const h of hosts) {
    if (!uploaders.has(h)) {
      const pid = await uploaderPid(home(h));
      if (pid) uploaders.set(h, pid);
    }
  }
  // An uploader a dfget started as it exited may still be starting: stopped
  // before it is up, it would leave no usage record (and not leave the swarm).
  await Promise.all(hosts.map(async (h) => {
    const pid = uploaders.get(h);
    if (pid) await uploaderUp(home(h), pid, 10_000);
  }));
  await Promise.all([...uploaders.values()].map((pid) => stopPid(pid, 10_000)));
  const snUsage = await stopSupernode(ctx, sn);
  const txAfter = await ctx.nb.tx(ORIGIN_HOST);
  const body1 = await originBodyBytes(ctx.originStatsUrl);

  const sample = hosts[SAMPLE_HOST_INDEX];
  const perHost = await Promise.all(hosts.map(async (h, i) => {
    const upPid = uploaders.get(h);
    return {
      dfget: await readHookRecord(ctx.procstatDir, timed.runs[i].pid),
      uploader: upPid ? await readHookRecord(ctx.procstatDir, upPid) : undefined,
    };
  }));
  const dfgetUsage = perHost[SAMPLE_HOST_INDEX].dfget;
  const upUsage = perHost[SAMPLE_HOST_INDEX].uploader;
  if (!uploaders.get(sample)) notes.push(`no uploader found for ${sample}`);
  const hostResults = await verifyFiles(ctx, timed.runs, out, log);
  const result = assemble(ctx, {
    scenario: 'p2p', n, fileBytes: ctx.file.bytes, timed, hostResults, txBefore, txAfter, bodyBytes: body1 - body0,
    supernode: roleUsage(SN_HOST, [['supernode', snUsage]]),
    peer: roleUsage(sample, [['dfget', dfgetUsage], ['uploader', upUsage]]),
    allPeers: perHost.map((p) => (p.dfget && p.uploader ? combineUsage([p.dfget, p.uploader]) : undefined)),
    notes,
  });
  result.p2p = { ...p2p, supernodeTxRatio: round(p2p.supernodeTxBytes / ctx.file.bytes, 3) };
  return result;
}

async function runImage(ctx: BenchContext, n: number, dir: string): Promise<ScenarioResult> {
  const img = ctx.image;
  if (!img) throw new Error('image scenario without a prepared image');
  const hosts = ctx.peerHosts.slice(0, n);
  const dirs = await hostDirs(dir, hosts);
  const outDir = (h: string): string => join(dirs.get(h)!, 'out', 'image');
  const log = (h: string): string => join(dirs.get(h)!, 'skopeo.log');
  const conf = (h: string): string => join(dirs.get(h)!, 'registries.conf');
  const notes: string[] = [];

  const sn = await startSupernode(ctx, dir);
  // Each host's own dfdaemon on its own 127.0.0.1:65001, and a registries.conf
  // that names it as the registry's mirror.
  const daemons = new Map<string, DfdaemonHandle>();
  await mapLimit(hosts, 4, async (h) => {
    await writeRegistriesConf(conf(h), { registryHost: img.registryHost, mirrorHost: '127.0.0.1:65001' });
    daemons.set(h, await startDfdaemon(ctx, h, dirs.get(h)!, `http://${img.registryHost}`, sn.node));
  });

  const txBefore = await ctx.nb.tx(ORIGIN_HOST);
  const snTxBefore = await ctx.nb.tx(SN_HOST);
  const ref = `docker://${img.registryHost}/${img.repo}:${img.tag}`;
  const timed = await startAllAndWait(hosts, (h) => ctx.nb.exec(h, 'skopeo', [
    '--insecure-policy', '--registries-conf', conf(h), 'copy', '--src-tls-verify=false', ref, `oci:${outDir(h)}:${img.tag}`,
  ], {
    logFile: log(h),
    // Separate temp dirs: skopeo stages blobs there, and hosts must not share.
    env: { CONTAINERS_REGISTRIES_CONF: conf(h), TMPDIR: dirs.get(h)! },
  }), deadlineS(ctx, n, img.totalBytes));

  const p2p = await supernodeDetails(sn, ctx, snTxBefore, timed.launchedAtMs);
  // How each dfdaemon served the blobs: a pull that bypassed its mirror (skopeo
  // falls back to the registry when the mirror fails) is not this scenario.
  const perHost = new Map<string, { p2p: number; direct: number }>();
  await mapLimit(hosts, 4, async (h) => {
    const m = await dfdaemonMetrics(ctx.nb, h).catch(() => '');
    perHost.set(h, {
      p2p: metricValue(m, 'dragonfly_dfdaemon_blob_bytes_total', { via: 'p2p' }),
      direct: metricValue(m, 'dragonfly_dfdaemon_blob_bytes_total', { via: 'direct' }),
    });
  });
  const sample = hosts[SAMPLE_HOST_INDEX];
  const sampleDaemon = daemons.get(sample)!;
  await Promise.all([...daemons.values()].map((d) => ctx.nb.procs.stop(d.spawned.child, 10_000)));
  const snUsage = await stopSupernode(ctx, sn);
  const txAfter = await ctx.nb.tx(ORIGIN_HOST);
  const daemonUsage = await readHookRecord(ctx.procstatDir, sampleDaemon.spawned.pid);
  const allDaemons = await Promise.all(hosts.map((h) => readHookRecord(ctx.procstatDir, daemons.get(h)!.spawned.pid)));

  const layerTotal = img.layerSizes.reduce((s, x) => s + x, 0);
  const hostResults = await mapLimit(timed.runs, 2, async (run): Promise<HostResult> => {
    const base = { host: run.host, seconds: run.seconds, exitCode: run.code };
    if (run.seconds === null) return { ...base, verified: false, error: 'did not finish before the deadline' };
    if (run.code !== 0) return { ...base, verified: false, error: `skopeo exit ${run.code}: ${await logTail(log(run.host))}` };
    const bad = await verifyPulledImage(outDir(run.host), img);
    if (bad) return { ...base, verified: false, error: bad };
    const via = perHost.get(run.host);
    // Layers may be fetched in ranges or retried, so more than the total is fine; less means bytes bypassed dfdaemon.
    if (!via || via.p2p + via.direct < layerTotal) {
      return { ...base, verified: false, error: `dfdaemon served ${via ? via.p2p + via.direct : 0} of ${layerTotal} layer bytes: the pull bypassed the mirror` };
    }
    return { ...base, verified: true };
  });
  const viaP2P = [...perHost.values()].reduce((s, v) => s + v.p2p, 0);
  const viaDirect = [...perHost.values()].reduce((s, v) => s + v.direct, 0);
  if (viaDirect > 0) notes.push(`dfdaemons fetched ${viaDirect} blob bytes directly from the registry instead of through P2P`);
  const result = assemble(ctx, {
    scenario: 'image', n, fileBytes: img.totalBytes, timed, hostResults, txBefore, txAfter, bodyBytes: null,
    supernode: roleUsage(SN_HOST, [['supernode', snUsage]]),
    peer: roleUsage(sample, [['dfdaemon', daemonUsage]]),
    allPeers: allDaemons,
    notes,
  });
  result.p2p = { ...p2p, supernodeTxRatio: round(p2p.supernodeTxBytes / img.totalBytes, 3) };
  result.image = {
    repo: img.repo,
    layers: img.layers.length,
    layerBytes: img.layerSizes,
    configBytes: img.configBytes,
    blobBytesViaP2P: viaP2P,
    blobBytesViaDirect: viaDirect,
  };
  return result;
}

/** A result for a scenario that could not run at all (setup failed): unverified, with the reason. */
export function failedResult(ctx: BenchContext, scenario: ScenarioName, n: number, fileBytes: number, why: string): ScenarioResult {
  const r = ctx.rateBitsPerSec;
  return {
    scenario, peers: n, fileBytes, rateBitsPerSec: r, lastS: null, medianS: null,
    boundS: round(lowerBoundS(fileBytes, n, r, r, r), 2), ratio: null, medianRatio: null,
    originTxBytes: 0, originTxRatio: 0, originBodyBytes: null, supernode: null, peer: null, machineCpuBusyPct: 0,
    allPeersCpuS: null, cpuFloorS: null,
    verified: false, hostsVerified: 0, hosts: [], notes: [why],
  };
}

export async function runScenario(ctx: BenchContext, scenario: ScenarioName, n: number): Promise<ScenarioResult> {
  if (n > ctx.peerHosts.length) throw new Error(`${n} peers requested, ${ctx.peerHosts.length} hosts up`);
  const fileBytes = scenario === 'image' ? ctx.image?.totalBytes ?? ctx.file.bytes : ctx.file.bytes;
  if (scenario === 'image' && !dfdaemonAvailable(ctx.distDir)) {
    return failedResult(ctx, scenario, n, fileBytes, 'dfdaemon is not built (dist/src/cli/dfdaemon.js missing)');
  }
  if (scenario === 'image' && !ctx.image) return failedResult(ctx, scenario, n, fileBytes, 'the image could not be prepared');
  const dir = await mkdtemp(join(ctx.workDir, `${scenario}-n${n}-`));
  let result: ScenarioResult | undefined;
  try {
    switch (scenario) {
      case 'direct': result = await runDirect(ctx, n, dir); break;
      case 'p2p': result = await runP2P(ctx, n, dir); break;
      case 'image': result = await runImage(ctx, n, dir); break;
      case 'relay': result = await runRelay(ctx, n, dir); break;
      default: throw new Error(`unknown scenario ${String(scenario)}`);
    }
    return result;
  } catch (e) {
    ctx.log(`${scenario} N=${n} failed: ${(e as Error).message}`);
    return failedResult(ctx, scenario, n, fileBytes, `setup or measurement failed: ${(e as Error).message}`);
  } finally {
    // Whatever this scenario left running (a hung host, a daemon after an error).
    await ctx.nb.procs.stopAll();
    if (!result?.verified && ctx.failLogDir) {
      const to = join(ctx.failLogDir, `${scenario}-n${n}`);
      await keepLogs(dir, to).then((k) => { if (k > 0) ctx.log(`kept ${k} logs of the failed run in ${to}`); }, () => undefined);
    }
    if (!process.env.BENCH_KEEP) await rm(dir, { recursive: true, force: true });
  }
}

/** Copies every *.log under dir (not the downloaded data) to `to`, keeping the relative paths. */
async function keepLogs(dir: string, to: string): Promise<number> {
  let kept = 0;
  const walk = async (rel: string): Promise<void> => {
    for (const e of await readdir(join(dir, rel), { withFileTypes: true })) {
      const r = join(rel, e.name);
      if (e.isDirectory()) await walk(r);
      else if (e.isFile() && e.name.endsWith('.log')) {
        await mkdir(dirname(join(to, r)), { recursive: true });
        await copyFile(join(dir, r), join(to, r));
        kept++;
      }
    }
  };
  await walk('');
  return kept;
}
