/**
 * The supernode with many registered peers: N peers register for one task
 * and keep their scheduling streams open; the supernode's RSS is read from
 * /proc afterwards.
 *
 *   node dist/bench/supernode-peers-bench.js [--peers 1000] [--size 64M]
 */
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { parseSize } from '../src/common/units';
import { SupernodeClient, type PiecesCall } from '../src/supernode/client';
import { makeRandomFile, startOrigin, tempDir } from '../test/helpers/origin';
import { startSupernode } from '../test/helpers/procs';
import { arg, runMain } from './lib/cli';


async function rssMB(pid: number): Promise<{ rss: number; hwm: number }> {
  const s = await fsp.readFile(`/proc/${pid}/status`, 'utf8');
  const kb = (k: string) => Number(new RegExp(`${k}:\\s+(\\d+) kB`).exec(s)?.[1] ?? 0) / 1024;
  return { rss: kb('VmRSS'), hwm: kb('VmHWM') };
}

async function main(): Promise<void> {
  const peers = Number(arg('peers', '1000'));
  const size = parseSize(arg('size', '64M'));
  const dir = await tempDir('df-sn-peers-');
  const origin = await startOrigin(dir);
  await makeRandomFile(dir, 'f.bin', size);
  const sn = await startSupernode(path.join(dir, 'sn'), ['--max-bandwidth', '0']);
  // A few channels, as many hosts would open; each carries many streams.
  const clients = Array.from({ length: 8 }, () => new SupernodeClient(sn.addr));
  const calls: PiecesCall[] = [];
  try {
    const before = await rssMB(sn.proc.pid!);
    const t0 = performance.now();
    let assignments = 0;
    for (let i = 0; i < peers; i += 50) {
      await Promise.all(Array.from({ length: Math.min(50, peers - i) }, async (_, k) => {
        const n = i + k;
        const client = clients[n % clients.length];
        const peerId = `bench-peer-${n}`;
        const reg = await client.register({
          url: origin.url('f.bin'), headers: {}, filter: [], identifier: '', expectedDigest: '', peerId,
          peerIp: '127.0.0.1', peerPort: 10000 + (n % 50000), hostname: `h${n}`,
        }, 30_000);
        const call = client.pieces();
        call.on('error', () => undefined);
        // Assignments are counted, never fetched: the peers hold their slots.
        call.on('data', (m: { assignment?: unknown }) => { if (m.assignment) assignments++; });
        call.write({ hello: { taskId: reg.taskId, peerId, have: [] } });
        calls.push(call);
      }));
    }
    const registerMs = performance.now() - t0;
    // Let the supernode settle: one metrics round trip after the last hello.
    await sn.metrics();
    const after = await rssMB(sn.proc.pid!);
    const result = { peers, registerMs: Math.round(registerMs), assignments, rssBeforeMB: Math.round(before.rss), rssAfterMB: Math.round(after.rss), peakRssMB: Math.round(after.hwm) };
    console.log(`supernode with ${peers} registered peers (streams open): RSS ${result.rssAfterMB} MB (peak ${result.peakRssMB} MB, idle ${result.rssBeforeMB} MB); registration of all took ${(registerMs / 1000).toFixed(1)} s`);
    console.log(JSON.stringify(result));
  } finally {
    for (const c of calls) c.cancel();
    for (const c of clients) c.close();
    await sn.stop();
    await origin.close();
    await fsp.rm(dir, { recursive: true, force: true });
  }
}

runMain(main);
