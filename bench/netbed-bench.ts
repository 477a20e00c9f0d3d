/**
 * The multi-host benchmark: N peer hosts, an origin/registry host and a
 * supernode host made by ../shared/netbed.sh, every link shaped to one rate,
 * and three ways for all N hosts to get the same bytes at the same time:
 *
 *   direct  every host fetches the file from the origin with curl
 *   p2p     every host runs dfget against the supernode
 *   image   every host pulls a 4-layer image with skopeo through its own dfdaemon
 *   relay   (only when asked for) every host runs bench/lib/relay.ts: it takes
 *           the file from the next host of a ring and serves it to the one
 *           before, with nothing else: what moving the bytes costs on its own
 *
 *   npm run bench -- [--peers 16] [--rate 50mbit] [--size 64M]
 *                    [--scenarios direct,p2p,image] [--sweep] [--out DIR] [--netbed-id 7]
 *                    [--repeat K] [--supernode-args="FLAGS"]
 *
 * Prints a table, writes DIR/results.json and DIR/chart.svg. Needs root,
 * iproute2 (ip, tc) and curl; the image scenario also docker-registry, skopeo
 * and umoci. See bench/README.md.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { mkdir, mkdtemp } from 'node:fs/promises';
import * as os from 'node:os';
import { join, resolve } from 'node:path';
import yargs from 'yargs';
import { parseSize } from '../src/common/units';
import { makeRandomFile } from '../test/helpers/origin';
import { renderChart } from './lib/chart';
import { medianRun, runsFor } from './lib/repeat';
import { prepareImage } from './lib/image';
import { Netbed } from './lib/netbed';
import { failedResult, runScenario } from './lib/scenarios';
import { ORIGIN_HOST, SN_HOST, startOriginServer, startRegistryOnOrigin } from './lib/services';
import { fmtBytes, fmtRate, formatTable, parseTcRate } from './lib/stats';
import { DEFAULT_SCENARIOS, SCENARIOS, type BenchContext, type BenchResults, type ScenarioName, type ScenarioResult } from './lib/types';

const REPO_ROOT = resolve(__dirname, '..', '..');
const DIST = resolve(__dirname, '..');
const SWEEP_PEERS = [4, 8, 16, 32];

function parseArgs(argv: string[]) {
  return yargs(argv)
    .scriptName('netbed-bench')
    .usage('$0 [options]\n\nTimes N hosts fetching the same bytes at once on a netbed testbed: straight from the origin, through dfget and the supernode, and as an image through dfdaemon.')
    .option('peers', { type: 'number', default: 16, describe: 'Peer hosts N' })
    .option('rate', { type: 'string', default: '50mbit', describe: 'Rate of every link, up and down, as tc takes it (50mbit, 1gbit)' })
    .option('size', { type: 'string', default: '64M', describe: 'File size F (K, M, G = KiB, MiB, GiB); the image has 4 layers of F/4' })
    .option('scenarios', { type: 'string', describe: 'Comma-separated: direct, p2p, image, relay (default: direct,p2p,image; with --sweep: direct,p2p). relay: every host runs a bare Node program that takes the file from its neighbour and serves it to another, a reference for what moving the bytes costs (bench/README.md)' })
    .option('sweep', { type: 'boolean', default: false, describe: `Run every scenario for N = ${SWEEP_PEERS.join(', ')} (ignores --peers)` })
    .option('sweep-peers', { type: 'string', describe: 'The N values of --sweep, comma-separated' })
    .option('out', { type: 'string', default: '.bench-results', describe: 'Directory for results.json and chart.svg' })
    .option('netbed-id', { type: 'number', default: 7, describe: 'NETBED_ID of the testbed (0..99); only its own hosts are touched' })
    .option('static-neighbours', { type: 'boolean', default: true, describe: 'Permanent ARP entries on every host, so no connect() fails at address resolution over a saturated link (--no-static-neighbours: resolve as usual)' })
    .option('upload-headroom', { type: 'number', default: 2, describe: 'Percent below the link rate at which the supernode, every dfget and every dfdaemon cap their piece uploads (--upload-rate), so that a full uplink does not hold up the acknowledgements of what the host downloads; 0 = no cap' })
    .option('service-nice', { type: 'number', default: -10, describe: 'Nice value of the origin server, the registry and the supernode (-20..19). They stand for machines of their own, and should not wait behind the N hosts\' programs for the shared cores; 0 = the same as every other program' })
    .option('repeat', { type: 'number', default: 1, describe: 'Runs of each scenario at each N (direct runs once: its time is set by the origin\'s uplink); the table reports the median run and lists every run\'s time' })
    .option('supernode-args', { type: 'string', default: '', describe: 'More flags for every supernode a scenario starts, space-separated, given with = since they start with dashes (--supernode-args="--peer-down-limit 4 --peer-up-limit 4"), to compare its settings on the testbed' })
    .option('timeout', { type: 'number', describe: 'Seconds before a scenario\'s hosts are killed (default: 3 x N x F / Us + 30)' })
    .strict()
    .version(false)
    .help()
    .wrap(Math.min(110, process.stdout.columns || 100))
    .parseSync();
}

const started = Date.now();
function log(msg: string): void {
  process.stderr.write(`[bench ${((Date.now() - started) / 1000).toFixed(1).padStart(6)} s] ${msg}\n`);
}

function fail(msg: string, code = 2): never {
  process.stderr.write(`netbed-bench: ${msg}\n`);
  process.exit(code);
}

function need(cmds: string[]): string[] {
  return cmds.filter((c) => spawnSync('sh', ['-c', `command -v ${c}`], { stdio: 'ignore' }).status !== 0);
}

function gitDescribe(): string | null {
  const r = spawnSync('git', ['describe', '--always', '--dirty'], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : null;
}

const cell = (v: number | null | undefined, digits = 1): string => (v === null || v === undefined ? '-' : v.toFixed(digits));

function printTables(results: ScenarioResult[]): void {
  const repeated = results.some((r) => r.repeats);
  const rows = results.map((r) => [
    r.scenario,
    String(r.peers),
    cell(r.lastS),
    cell(r.medianS),
    cell(r.boundS),
    cell(r.ratio, 2),
    r.originTxBytes > 0 ? `${r.originTxRatio.toFixed(2)}x` : '-',
    cell(r.supernode?.cpuS),
    cell(r.supernode?.maxRssMiB, 0),
    cell(r.peer?.cpuS),
    cell(r.peer?.maxRssMiB, 0),
    cell(r.cpuFloorS),
    `${Math.round(r.machineCpuBusyPct)}%`,
    r.verified ? 'yes' : `NO (${r.hostsVerified}/${r.peers})`,
    ...(repeated ? [r.repeats ? r.repeats.lastS.map((x) => cell(x)).join(' ') : '-'] : []),
  ]);
  process.stdout.write(`\n${formatTable(
    ['scenario', 'N', 'last s', 'median s', 'bound s', 'last/bound', 'origin sent', 'SN cpu s', 'SN MiB', 'peer cpu s', 'peer MiB', 'cpu floor s', 'cpu busy', 'verified',
      ...(repeated ? ['last s of each run'] : [])],
    rows,
  )}\n`);
  const withP2P = results.filter((r) => r.p2p);
  if (withP2P.length > 0) {
    process.stdout.write(`\n${formatTable(
      ['scenario', 'N', 'piece size', 'pieces from peers', 'from supernode', 'failed', 'SN served', 'SN link sent', 'fetch start s', 'fetch s'],
      withP2P.map((r) => {
        const p = r.p2p!;
        const total = p.piecesFromPeers + p.piecesFromSupernode;
        const pct = (x: number): string => (total > 0 ? ` (${Math.round((100 * x) / total)}%)` : '');
        return [
          r.scenario, String(r.peers), p.pieceSizeBytes ? fmtBytes(p.pieceSizeBytes) : '-',
          `${p.piecesFromPeers}${pct(p.piecesFromPeers)}`, `${p.piecesFromSupernode}${pct(p.piecesFromSupernode)}`,
          String(p.pieceFailures), fmtBytes(p.supernodeUploadBytes), `${fmtBytes(p.supernodeTxBytes)} (${p.supernodeTxRatio.toFixed(2)}x F)`,
          cell(p.sourceFetchStartS), cell(p.sourceFetchS),
        ];
      }),
    )}\n`);
  }
  for (const r of results) {
    for (const h of r.hosts) if (!h.verified) process.stdout.write(`  ${r.scenario} N=${r.peers} ${h.host}: ${h.error ?? 'not verified'}\n`);
    for (const n of r.notes) process.stdout.write(`  ${r.scenario} N=${r.peers}: ${n}\n`);
  }
}

async function main(): Promise<void> {
  const a = parseArgs(process.argv.slice(2));
  const id = a['netbed-id'];
  if (!Number.isInteger(id) || id < 0 || id > 99) fail('--netbed-id must be 0..99');
  const peersList = a.sweep
    ? (a['sweep-peers'] ? a['sweep-peers'].split(',').map((s) => Number(s.trim())) : SWEEP_PEERS)
    : [a.peers];
  if (peersList.some((n) => !Number.isInteger(n) || n < 1 || n > 200)) fail('peer counts must be integers 1..200');
  let rateBits: number;
  let sizeBytes: number;
  try {
    rateBits = parseTcRate(a.rate);
    sizeBytes = parseSize(a.size, '--size');
  } catch (e) {
    fail((e as Error).message);
  }
  if (sizeBytes < 4096) fail('--size must be at least 4K');
  const headroom = a['upload-headroom'];
  if (!Number.isFinite(headroom) || headroom < 0 || headroom >= 100) fail('--upload-headroom must be a percentage, 0 to below 100');
  const serviceNice = a['service-nice'];
  if (!Number.isInteger(serviceNice) || serviceNice < -20 || serviceNice > 19) fail('--service-nice must be an integer, -20 to 19');
  const uploadRateBytesPerSec = headroom > 0 ? Math.floor((rateBits / 8) * (1 - headroom / 100)) : 0;
  const repeat = a.repeat;
  if (!Number.isInteger(repeat) || repeat < 1 || repeat > 20) fail('--repeat must be an integer, 1 to 20');
  const supernodeArgs = a['supernode-args'].split(/\s+/).filter(Boolean);
  for (const f of supernodeArgs) {
    if (['--advertise-ip', '--home-dir', '--port', '--download-port', '--listen'].includes(f.split('=')[0])) fail(`--supernode-args may not set ${f.split('=')[0]}: the benchmark sets it`);
  }
  const scenarios = (a.scenarios ?? (a.sweep ? 'direct,p2p' : DEFAULT_SCENARIOS.join(',')))
    .split(',').map((s) => s.trim()).filter(Boolean) as ScenarioName[];
  for (const s of scenarios) if (!SCENARIOS.includes(s)) fail(`unknown scenario "${s}"; known: ${SCENARIOS.join(', ')}`);
  if (scenarios.length === 0) fail('no scenario to run');
  if (typeof process.getuid === 'function' && process.getuid() !== 0) fail('needs root (netbed makes network namespaces)');
  const missing = need(['ip', 'tc', 'curl', ...(scenarios.includes('image') ? ['docker-registry', 'skopeo', 'umoci'] : [])]);
  if (missing.length > 0) fail(`missing programs: ${missing.join(', ')} (scripts/setup.sh installs them)`);

  const script = resolve(process.env.NETBED ?? join(REPO_ROOT, '..', 'shared', 'netbed.sh'));
  const nb = new Netbed(script, id);
  const outDir = resolve(a.out);
  const maxN = Math.max(...peersList);
  const peerHosts = Array.from({ length: maxN }, (_, i) => `h${i + 1}`);
  const tmpPrefix = `netbed-bench-${id}-`;

  // A previous run that crashed (or was killed with SIGKILL) may have left its
  // hosts and temp dirs: they are ours (same NETBED_ID), so remove them first.
  try {
    await nb.down();
  } catch (e) {
    fail(`${script} down failed: ${(e as Error).message}`);
  }
  for (const d of readdirSync(os.tmpdir())) if (d.startsWith(tmpPrefix)) rmSync(join(os.tmpdir(), d), { recursive: true, force: true });
  const workDir = await mkdtemp(join(os.tmpdir(), tmpPrefix));

  let cleaned = false;
  const cleanupSync = (): void => {
    if (cleaned) return;
    cleaned = true;
    nb.procs.killAllSync();
    nb.downSync();
    if (!process.env.BENCH_KEEP) rmSync(workDir, { recursive: true, force: true });
  };
  process.on('exit', cleanupSync);
  for (const [sig, num] of [['SIGINT', 2], ['SIGTERM', 15], ['SIGHUP', 1]] as const) {
    process.on(sig, () => {
      log(`${sig}: stopping every process and removing the testbed`);
      cleanupSync();
      process.exit(128 + num);
    });
  }

  const results: BenchResults = {
    kind: 'netbed-bench',
    version: 1,
    startedAt: new Date().toISOString(),
    machine: {
      cpus: os.cpus().length,
      cpuModel: os.cpus()[0]?.model ?? 'unknown',
      memGiB: Math.round(os.totalmem() / 1024 ** 3),
      kernel: os.release(),
      node: process.version,
    },
    commit: gitDescribe(),
    config: {
      peers: peersList, rate: a.rate, rateBitsPerSec: rateBits, sizeBytes, scenarios, netbedId: id, sweep: a.sweep,
      staticNeighbours: a['static-neighbours'],
      uploadHeadroomPct: headroom,
      serviceNice,
      repeat,
      supernodeArgs,
    },
    results: [],
    ...(repeat > 1 ? { runs: [] } : {}),
    allVerified: false,
  };
  await mkdir(outDir, { recursive: true });
  const save = (): void => {
    results.allVerified = results.results.length > 0 && results.results.every((r) => r.verified);
    mkdirSync(outDir, { recursive: true });
    writeFileSync(join(outDir, 'results.json'), `${JSON.stringify(results, null, 2)}\n`);
    writeFileSync(join(outDir, 'chart.svg'), renderChart(results.results, { subtitle: `${results.machine.cpus}-core machine` }));
  };

  log(`testbed ${id}: origin, sn and ${maxN} peers at ${a.rate} (${fmtRate(rateBits)}); file ${fmtBytes(sizeBytes)}; scenarios ${scenarios.join(',')}; N = ${peersList.join(', ')}`);
  await nb.up([ORIGIN_HOST, SN_HOST], a.rate);
  await nb.up(peerHosts, a.rate);
  if (a['static-neighbours']) await nb.staticNeighbours();

  const originDir = join(workDir, 'origin');
  await mkdir(originDir, { recursive: true });
  const file = await makeRandomFile(originDir, 'file.bin', sizeBytes);
  const origin = await startOriginServer({ nb, distDir: DIST, workDir, serviceNice }, file.path, 'file.bin');
  const procstatDir = join(workDir, 'procstat');
  await mkdir(procstatDir, { recursive: true });
  const ctx: BenchContext = {
    nb,
    distDir: DIST,
    workDir,
    procstatDir,
    hookPath: join(DIST, 'bench', 'lib', 'procstat-hook.js'),
    rate: a.rate,
    rateBitsPerSec: rateBits,
    uploadRateBytesPerSec,
    serviceNice,
    supernodeArgs,
    peerHosts,
    file: { path: file.path, name: 'file.bin', bytes: sizeBytes, sha256: file.sha256, url: origin.url },
    originStatsUrl: origin.statsUrl,
    timeoutS: a.timeout,
    failLogDir: join(outDir, 'failed-logs'),
    log,
  };
  let imageError: string | undefined;
  if (scenarios.includes('image')) {
    try {
      log('starting the registry on the origin host, building and pushing the image');
      await startRegistryOnOrigin(ctx);
      ctx.image = await prepareImage(nb, join(workDir, 'image-build'), sizeBytes);
      log(`image ${ctx.image.repo}:${ctx.image.tag}: ${ctx.image.layers.length} layers, ${fmtBytes(ctx.image.totalBytes)}`);
    } catch (e) {
      imageError = (e as Error).message;
      log(`image preparation failed: ${imageError}`);
    }
  }

  for (const n of peersList) {
    for (const sc of scenarios) {
      // An image that could not be prepared fails the same way every time: once is enough.
      const k = sc === 'image' && imageError ? 1 : runsFor(sc, repeat);
      const runs: ScenarioResult[] = [];
      for (let i = 1; i <= k; i++) {
        const which = k > 1 ? ` run ${i}/${k}` : '';
        log(`${sc}: N=${n}${which} ...`);
        const r = sc === 'image' && imageError
          ? failedResult(ctx, sc, n, sizeBytes, `image preparation failed: ${imageError}`)
          : await runScenario(ctx, sc, n);
        runs.push(r);
        results.runs?.push(r);
        log(`${sc}: N=${n}${which} last ${r.lastS ?? '-'} s, median ${r.medianS ?? '-'} s, bound ${r.boundS} s, ratio ${r.ratio ?? '-'}, origin sent ${r.originTxRatio}x F, verified ${r.verified ? 'yes' : `no (${r.hostsVerified}/${n})`}`);
      }
      results.results.push(medianRun(runs));
      save();
    }
  }
  results.finishedAt = new Date().toISOString();
  save();
  printTables(results.results);
  process.stdout.write(`\nresults: ${join(outDir, 'results.json')}\nchart:   ${join(outDir, 'chart.svg')}\n`);

  log('stopping the origin services and removing the testbed');
  await nb.procs.stopAll(5_000, true);
  await nb.down();
  cleanupSync();
  process.exitCode = results.allVerified ? 0 : 1;
}

main().catch((e: unknown) => {
  process.stderr.write(`netbed-bench: ${(e as Error)?.stack ?? String(e)}\n`);
  process.exit(1);
});
