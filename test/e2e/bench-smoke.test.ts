/**
 * The multi-host benchmark in miniature, so it cannot rot: 3 peer hosts, a
 * 4 MiB file, 200 Mbit/s links, every scenario, each but direct run twice
 * (--repeat 2), on its own testbed (NETBED_ID 42). It must exit 0, every
 * result must verify, and it must leave no host behind.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { BenchResults } from '../../bench/lib/types';

const DIST = resolve(__dirname, '..', '..');
const REPO = resolve(DIST, '..');
const NETBED = resolve(process.env.NETBED ?? join(REPO, '..', 'shared', 'netbed.sh'));
const NETBED_ID = '42';

function whyNot(): string | undefined {
  if (typeof process.getuid === 'function' && process.getuid() !== 0) return 'needs root for network namespaces';
  if (!existsSync(NETBED)) return `no netbed script at ${NETBED}`;
  for (const c of ['ip', 'tc', 'curl', 'docker-registry', 'skopeo', 'umoci']) {
    if (spawnSync('sh', ['-c', `command -v ${c}`], { stdio: 'ignore' }).status !== 0) return `${c} is not installed (scripts/setup.sh)`;
  }
  return undefined;
}

test('netbed bench: --supernode-args may not set what the benchmark sets', () => {
  const r = spawnSync(process.execPath, [join(DIST, 'bench', 'netbed-bench.js'), '--supernode-args=--home-dir /tmp/x'], { encoding: 'utf8' });
  assert.equal(r.status, 2, r.stderr);
  assert.match(r.stderr, /--supernode-args may not set --home-dir/);
});

test('netbed bench, short: direct, p2p, image and relay on 3 hosts all verify', { timeout: 180_000 }, async (t) => {
  // scripts/setup.sh provides all of it: a missing piece is a broken set-up, not a reason to skip.
  const missing = whyNot();
  assert.equal(missing, undefined, missing);
  const out = await mkdtemp(join(tmpdir(), 'bench-smoke-'));
  t.after(() => rm(out, { recursive: true, force: true }));

  const child = spawn(process.execPath, [
    join(DIST, 'bench', 'netbed-bench.js'),
    '--peers', '3', '--size', '4M', '--rate', '200mbit', '--scenarios', 'direct,p2p,image,relay',
    '--repeat', '2', '--supernode-args=--piece-size 64K', '--netbed-id', NETBED_ID, '--out', out,
  ], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NETBED } });
  let output = '';
  child.stdout.on('data', (b: Buffer) => { output += b.toString(); });
  child.stderr.on('data', (b: Buffer) => { output += b.toString(); });
  // The bench cleans up on SIGTERM; a hung run must not outlive the test.
  const killer = setTimeout(() => child.kill('SIGTERM'), 150_000);
  t.after(() => { clearTimeout(killer); child.kill('SIGKILL'); });
  const code = await new Promise<number | null>((r) => child.once('close', (c) => r(c)));
  clearTimeout(killer);
  assert.equal(code, 0, output);

  const res = JSON.parse(await readFile(join(out, 'results.json'), 'utf8')) as BenchResults;
  assert.deepEqual(res.results.map((r) => r.scenario), ['direct', 'p2p', 'image', 'relay']);
  // Every run is kept; each result but direct's is the median of its two.
  assert.deepEqual(res.runs?.map((r) => r.scenario), ['direct', 'p2p', 'p2p', 'image', 'image', 'relay', 'relay']);
  assert.equal(res.results[0].repeats, undefined);
  for (const r of res.results.slice(1)) {
    assert.equal(r.repeats?.lastS.length, 2, `${r.scenario}: ${JSON.stringify(r.repeats)}`);
    assert.ok(r.repeats.lastS.includes(r.lastS), `${r.scenario}: ${r.lastS} is none of its runs`);
  }
  for (const r of res.results) {
    assert.equal(r.verified, true, `${r.scenario}: ${JSON.stringify(r.hosts)} ${r.notes.join('; ')}`);
    assert.equal(r.peers, 3);
    assert.equal(r.hosts.length, 3);
    assert.ok(r.lastS !== null && r.lastS > 0, `${r.scenario}: no time`);
    assert.ok(r.boundS > 0 && r.ratio !== null && r.ratio > 0.5, `${r.scenario}: ratio ${r.ratio}`);
    if (r.scenario !== 'relay') assert.ok(r.originTxBytes > 0, `${r.scenario}: the origin sent nothing`);
  }
  assert.equal(res.allVerified, true);
  const direct = res.results[0];
  const p2p = res.results[1];
  const image = res.results[2];
  const relay = res.results[3];
  // Direct sends the file once per host; P2P sends it once through the supernode.
  assert.ok(direct.originTxRatio >= 2.9, `direct: origin sent ${direct.originTxRatio} x F`);
  assert.ok(p2p.originTxRatio < 1.5, `p2p: origin sent ${p2p.originTxRatio} x F`);
  assert.ok(p2p.supernode && p2p.supernode.cpuS > 0 && p2p.supernode.maxRssMiB > 0, 'no supernode CPU/RSS');
  assert.ok(p2p.peer && p2p.peer.cpuS > 0 && p2p.peer.maxRssMiB > 0, 'no peer CPU/RSS');
  assert.ok(p2p.p2p && p2p.p2p.piecesFromPeers + p2p.p2p.piecesFromSupernode > 0, 'no piece was scheduled');
  // --supernode-args reached the supernode: its pieces are 64 KiB, not the 256 KiB it picks for 4 MiB.
  assert.deepEqual(res.config.supernodeArgs, ['--piece-size', '64K']);
  assert.equal(p2p.p2p.pieceSizeBytes, 64 * 1024);
  assert.equal(image.image?.layers, 4);
  assert.ok((image.image?.blobBytesViaP2P ?? 0) > 0, 'no blob byte went through P2P');
  // The relay hosts take the file from each other: the origin sends none of it.
  assert.ok(relay.originTxRatio < 0.1, `relay: origin sent ${relay.originTxRatio} x F`);
  assert.ok(relay.peer && relay.peer.cpuS > 0, 'no relay CPU');

  const svg = await readFile(join(out, 'chart.svg'), 'utf8');
  assert.match(svg, /^<svg [^>]*xmlns="http:\/\/www.w3.org\/2000\/svg"/);
  assert.match(svg, /lower bound/);

  // Nothing of testbed 42 is left: no namespace, no host list entry.
  const ns = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout;
  assert.ok(!/^nb42-/m.test(ns), `namespaces left: ${ns}`);
});
