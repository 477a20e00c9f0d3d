/**
 * Loopback benchmark, no shaping: real processes on 127.0.0.1.
 *
 *   node dist/bench/loopback-bench.js [--peers 6] [--size 64M] [--big 1G] [--repeat 4] [--out-dir DIR] [--json FILE]
 *
 * 1. swarm: an origin that counts its bytes, a supernode, N dfget started
 *    together, against N parallel curls of the same file from the origin.
 * 2. single: one dfget of a --big file from a supernode that already holds it,
 *    against curl fetching the same bytes from the supernode's download port,
 *    taking turns --repeat times (medians compared); and the dfget's peak RSS
 *    (VmHWM). Both write into a new directory under --out-dir (default: the
 *    run's temporary directory; /dev/shm takes the disk out of the comparison).
 */
import { spawn } from 'node:child_process';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { parseSize } from '../src/common/units';
import { taskIdFor } from '../src/common/url';
import { metricValue } from '../src/common/metrics';
import { makeRandomFile, sha256File, startOrigin, tempDir } from '../test/helpers/origin';
import { CLI, startSupernode, stopUploader } from '../test/helpers/procs';
import { arg, runMain } from './lib/cli';
import { median } from './lib/stats';


interface Timed { ms: number; code: number | null; peakRssBytes: number; cpuSec: number }

/** Runs a command, sampling its peak RSS (VmHWM) and CPU time from /proc until it exits. */
function timed(cmd: string, args: string[]): Promise<Timed> {
  const started = performance.now();
  const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'inherit'] });
  let peak = 0;
  let cpu = 0;
  const tick = process.platform === 'linux' ? (clk: number) => async () => {
    try {
      const status = await fsp.readFile(`/proc/${child.pid}/status`, 'utf8');
      const m = /VmHWM:\s+(\d+) kB/.exec(status);
      if (m) peak = Math.max(peak, Number(m[1]) * 1024);
      const stat = (await fsp.readFile(`/proc/${child.pid}/stat`, 'utf8')).split(') ')[1].split(' ');
      cpu = (Number(stat[11]) + Number(stat[12])) / clk;
    } catch { /* exited */ }
  } : () => async () => undefined;
  const sample = tick(100);
  const iv = setInterval(() => void sample(), 20);
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('exit', (code) => {
      clearInterval(iv);
      resolve({ ms: performance.now() - started, code, peakRssBytes: peak, cpuSec: cpu });
    });
  });
}

const MiB = 1024 * 1024;
const fmt = (ms: number) => `${(ms / 1000).toFixed(2)} s`;

async function main(): Promise<void> {
  const peers = Number(arg('peers', '6'));
  const size = parseSize(arg('size', '64M'));
  const big = parseSize(arg('big', '1G'));
  const repeat = Number(arg('repeat', '4'));
  if (!Number.isInteger(repeat) || repeat < 1) throw new Error('--repeat must be a whole number of at least 1');
  const dir = await tempDir('df-loopback-');
  const homes: string[] = [];
  const cleanup: string[] = [];
  const origin = await startOrigin(dir);
  const sn = await startSupernode(path.join(dir, 'sn'), ['--max-bandwidth', '0']);
  const results: Record<string, unknown> = { peers, sizeBytes: size, bigBytes: big };
  try {
    // --- swarm ---------------------------------------------------------------
    const file = await makeRandomFile(dir, 'swarm.bin', size);
    const before = origin.bytesSent();
    const t0 = performance.now();
    const runs = await Promise.all(Array.from({ length: peers }, (_, i) => {
      const home = path.join(dir, `peer${i}`);
      homes.push(home);
      return timed(process.execPath, [CLI('dfget'), '--url', origin.url('swarm.bin'), '-o', path.join(dir, `out${i}`),
        '--node', sn.addr, '--home', home, '--ratelimit', '10G', '--notbs']);
    }));
    const p2pMs = performance.now() - t0;
    const originBytes = origin.bytesSent() - before;
    let verified = runs.every((r) => r.code === 0);
    for (let i = 0; i < peers && verified; i++) verified = (await sha256File(path.join(dir, `out${i}`))) === file.sha256;
    const m = await sn.metrics();
    const c0 = performance.now();
    const curls = await Promise.all(Array.from({ length: peers }, (_, i) => timed('curl', ['-sf', '-o', path.join(dir, `curl${i}`), origin.url('swarm.bin')])));
    const curlMs = performance.now() - c0;
    results.swarm = {
      p2pMs: Math.round(p2pMs), curlMs: Math.round(curlMs), verified, curlOk: curls.every((c) => c.code === 0),
      originBytes, originRatio: originBytes / size,
      piecesFromPeers: metricValue(m, 'dragonfly_supernode_pieces_scheduled_total', { holder: 'peer' }),
      piecesFromSupernode: metricValue(m, 'dragonfly_supernode_pieces_scheduled_total', { holder: 'supernode' }),
      dfgetPeakRssMB: Math.max(...runs.map((r) => r.peakRssBytes)) / MiB,
    };
    for (let i = 0; i < peers; i++) await fsp.rm(path.join(dir, `curl${i}`), { force: true });

    // --- single dfget of a big file from a warm supernode ------------------------
    const bigFile = await makeRandomFile(dir, 'big.bin', big);
    const warmHome = path.join(dir, 'warm');
    homes.push(warmHome);
    const warm = await timed(process.execPath, [CLI('dfget'), '--url', origin.url('big.bin'), '-o', path.join(dir, 'warm.out'),
      '--node', sn.addr, '--home', warmHome, '--ratelimit', '10G', '--notbs']);
    if (warm.code !== 0) throw new Error('warm-up download failed');
    await stopUploader(warmHome);
    await fsp.rm(path.join(dir, 'warm.out'), { force: true });
    await fsp.rm(warmHome, { recursive: true, force: true });
    const taskId = taskIdFor(origin.url('big.bin'), [], '');
    // Each measured command starts with no dirty pages: on a VM, dirtying a GiB
    // of page cache while other GiB wait for the disk costs the kernel several
    // times more CPU, which would favour whichever command ran first. The two
    // take turns, `repeat` times, curl first in odd rounds and dfget first in
    // even ones, and the medians are compared.
    // Under --out-dir, a directory of our own, removed at the end with the rest.
    const outDir = arg('out-dir', '') ? await fsp.mkdtemp(path.join(arg('out-dir', ''), 'df-loopback-')) : dir;
    if (outDir !== dir) cleanup.push(outDir);
    const samples: { curlMs: number; dfgetMs: number; verified: boolean; dfgetPeakRssMB: number; dfgetCpuSec: number }[] = [];
    const runCurl = async () => {
      await timed('sync', []);
      const curlOut = path.join(outDir, 'big.curl');
      const run = await timed('curl', ['-sf', '-o', curlOut, '-r', `0-${big - 1}`, `http://127.0.0.1:${sn.downloadPort}/pieces/${taskId}`]);
      const ok = run.code === 0 && (await sha256File(curlOut)) === bigFile.sha256;
      await fsp.rm(curlOut, { force: true });
      return { run, ok };
    };
    const runDfget = async (i: number) => {
      await timed('sync', []);
      const oneHome = path.join(outDir, `one${i}`);
      homes.push(oneHome);
      const oneOut = path.join(outDir, 'big.out');
      const run = await timed(process.execPath, [CLI('dfget'), '--url', origin.url('big.bin'), '-o', oneOut,
        '--node', sn.addr, '--home', oneHome, '--ratelimit', '10G', '--notbs']);
      const ok = run.code === 0 && (await sha256File(oneOut)) === bigFile.sha256;
      // The next command starts from the same page cache: this one's files go.
      await stopUploader(oneHome);
      await fsp.rm(oneOut, { force: true });
      await fsp.rm(oneHome, { recursive: true, force: true });
      return { run, ok };
    };
    for (let i = 0; i < repeat; i++) {
      // The command that runs second in a round runs after the other's files
      // were written, read back and removed; the order alternates from round
      // to round so that neither command always comes second.
      let c: Awaited<ReturnType<typeof runCurl>>;
      let d: Awaited<ReturnType<typeof runDfget>>;
      if (i % 2 === 0) {
        c = await runCurl();
        d = await runDfget(i);
      } else {
        d = await runDfget(i);
        c = await runCurl();
      }
      samples.push({
        curlMs: Math.round(c.run.ms), dfgetMs: Math.round(d.run.ms), verified: c.ok && d.ok,
        dfgetPeakRssMB: d.run.peakRssBytes / MiB, dfgetCpuSec: d.run.cpuSec,
      });
    }
    const bigCurlMs = median(samples.map((x) => x.curlMs));
    const dfgetMs = median(samples.map((x) => x.dfgetMs));
    results.single = {
      repeat, dfgetMs, curlMs: bigCurlMs, verified: samples.every((x) => x.verified),
      dfgetMBps: big / MiB / (dfgetMs / 1000), curlMBps: big / MiB / (bigCurlMs / 1000),
      ratio: bigCurlMs / dfgetMs, dfgetPeakRssMB: Math.max(...samples.map((x) => x.dfgetPeakRssMB)),
      dfgetCpuSec: median(samples.map((x) => x.dfgetCpuSec)), samples,
    };

    const s = results.swarm as Record<string, number | boolean>;
    const g = results.single as Record<string, number | boolean>;
    console.log(`swarm: ${peers} x ${(size / MiB).toFixed(0)} MiB  dfget ${fmt(Number(s.p2pMs))}  curl ${fmt(Number(s.curlMs))}  verified ${s.verified}`);
    console.log(`       origin sent ${(Number(s.originBytes) / MiB).toFixed(1)} MiB (${Number(s.originRatio).toFixed(3)} x file)  pieces peer/supernode ${s.piecesFromPeers}/${s.piecesFromSupernode}  dfget peak RSS ${Number(s.dfgetPeakRssMB).toFixed(0)} MB`);
    console.log(`single: ${(big / MiB).toFixed(0)} MiB from a warm supernode, median of ${repeat}  dfget ${fmt(Number(g.dfgetMs))} (${Number(g.dfgetMBps).toFixed(0)} MiB/s)  curl ${fmt(Number(g.curlMs))} (${Number(g.curlMBps).toFixed(0)} MiB/s)  dfget/curl throughput ${(Number(g.ratio) * 100).toFixed(0)} %  peak RSS ${Number(g.dfgetPeakRssMB).toFixed(0)} MB  verified ${g.verified}`);
    for (const x of samples) console.log(`        curl ${fmt(x.curlMs)}  dfget ${fmt(x.dfgetMs)} (${x.dfgetCpuSec.toFixed(2)} CPU s)  ${((x.curlMs / x.dfgetMs) * 100).toFixed(0)} %`);
    const out = arg('json', '');
    if (out) await fsp.writeFile(out, JSON.stringify(results, null, 2) + '\n');
    console.log(JSON.stringify(results));
  } finally {
    await Promise.all(homes.map((h) => stopUploader(h)));
    await sn.stop();
    await origin.close();
    for (const d of [dir, ...cleanup]) await fsp.rm(d, { recursive: true, force: true });
  }
}

runMain(main);
