/** dfget on its own: rate limit, back to source, --notbs, and bad input. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { once } from 'node:events';
import { metricValue } from '../../src/common/metrics';
import { sha256File } from '../helpers/origin';
import { spawn } from 'node:child_process';
import { CLI, fixture, runCli, stderrLines } from '../helpers/procs';

const MiB = 1024 * 1024;

/** The one line a failing dfget prints, after checking there is only one and no stack trace. */
function oneErrorLine(stderr: string): string {
  const lines = stderr.trim().split('\n');
  assert.equal(lines.length, 1, `expected one line, got:\n${stderr}`);
  assert.doesNotMatch(stderr, /\n\s+at /, 'stack trace printed');
  return lines[0];
}

async function leftovers(dir: string, name: string): Promise<string[]> {
  return (await fsp.readdir(dir)).filter((f) => f.includes(name));
}

test('--ratelimit 8M on a 32 MiB download takes at least 3.6 s, through P2P and from the source', async (t) => {
  const { dir, file, origin, sn, home: peerHome } = await fixture(t, 32 * MiB);
  const home = peerHome('home');

  const p2p = await runCli('dfget', ['--url', origin.url('f.bin'), '-o', path.join(dir, 'a'), '--node', sn.addr, '--home', home, '--ratelimit', '8M', '--notbs']);
  assert.equal(p2p.code, 0, p2p.stderr);
  assert.ok(p2p.ms >= 3600, `P2P download took ${p2p.ms} ms`);
  assert.equal(await sha256File(path.join(dir, 'a')), file.sha256);

  const direct = await runCli('dfget', ['--url', origin.url('f.bin'), '-o', path.join(dir, 'b'), '--node', '127.0.0.1:1', '--home', home, '--ratelimit', '8M']);
  assert.equal(direct.code, 0, direct.stderr);
  assert.ok(direct.ms >= 3600, `source download took ${direct.ms} ms`);
});

test('supernode stopped: dfget completes from the source; with --notbs it fails with one line', async (t) => {
  const { dir, file, origin, sn, home: peerHome } = await fixture(t, 4 * MiB);
  const addr = sn.addr;
  await sn.stop();
  const home = peerHome('home');

  const ok = await runCli('dfget', ['--url', origin.url('f.bin'), '-o', path.join(dir, 'out'), '--node', addr, '--home', home]);
  assert.equal(ok.code, 0, ok.stderr);
  assert.equal(await sha256File(path.join(dir, 'out')), file.sha256);

  const no = await runCli('dfget', ['--url', origin.url('f.bin'), '-o', path.join(dir, 'out2'), '--node', addr, '--home', home, '--notbs']);
  assert.equal(no.code, 6);
  assert.match(oneErrorLine(no.stderr), /^dfget: DF_ERR_SUPERNODE_UNAVAILABLE: /);
  assert.deepEqual(await leftovers(dir, 'out2'), []);
});

test('a source that fails or stalls mid-way leaves no file behind', async (t) => {
  const { dir, origin, home: peerHome } = await fixture(t, 4 * MiB, { supernode: false });
  const home = peerHome('home');

  origin.faults.status = 503;
  const r5 = await runCli('dfget', ['--url', origin.url('f.bin'), '-o', path.join(dir, 'o5'), '--node', '127.0.0.1:1', '--home', home]);
  assert.equal(r5.code, 4);
  assert.match(oneErrorLine(r5.stderr), /DF_ERR_SOURCE_STATUS: .*503/);
  assert.deepEqual(await leftovers(dir, 'o5'), []);

  origin.faults.status = undefined;
  origin.faults.stallAfterBytes = MiB;
  const rs = await runCli('dfget', ['--url', origin.url('f.bin'), '-o', path.join(dir, 'os'), '--node', '127.0.0.1:1', '--home', home, '--timeout', '3s']);
  assert.equal(rs.code, 7);
  assert.match(oneErrorLine(rs.stderr), /DF_ERR_TIMEOUT/);
  assert.deepEqual(await leftovers(dir, 'os'), []);
});

test('bad input: one line, a documented exit code, no stack trace, no file', async (t) => {
  const { dir, origin, home: peerHome } = await fixture(t, 1024, { supernode: false });
  const home = peerHome('home');
  const base = ['--node', '127.0.0.1:1', '--home', home];
  const cases: Array<{ name: string; args: string[]; code: number; re: RegExp; out: string }> = [
    // First: the later cases make the home.
    { name: '-o is the home', args: ['--url', origin.url('f.bin'), '-o', home], code: 3, re: /DF_ERR_OUTPUT_PATH: output .* is the --home directory/, out: 'home' },
    { name: '-o in the home\'s data', args: ['--url', origin.url('f.bin'), '-o', path.join(home, 'data', 'r9')], code: 3, re: /DF_ERR_OUTPUT_PATH: output .* is inside the --home directory's own files/, out: 'home' },
    { name: 'invalid --ratelimit', args: ['--url', origin.url('f.bin'), '-o', path.join(dir, 'r1'), '--ratelimit', 'fast'], code: 2, re: /DF_ERR_INVALID_ARGUMENT: invalid --ratelimit/, out: 'r1' },
    { name: 'zero --ratelimit', args: ['--url', origin.url('f.bin'), '-o', path.join(dir, 'r0'), '--ratelimit', '0'], code: 2, re: /DF_ERR_INVALID_ARGUMENT/, out: 'r0' },
    { name: 'zero --timeout', args: ['--url', origin.url('f.bin'), '-o', path.join(dir, 'r10'), '--timeout', '0s'], code: 2, re: /DF_ERR_INVALID_ARGUMENT: invalid --timeout "0s": must be greater than 0/, out: 'r10' },
    { name: 'not http(s)', args: ['--url', 'ftp://127.0.0.1/f.bin', '-o', path.join(dir, 'r2')], code: 2, re: /DF_ERR_INVALID_URL: unsupported URL scheme "ftp"/, out: 'r2' },
    { name: 'unreachable URL', args: ['--url', 'http://127.0.0.1:1/f.bin', '-o', path.join(dir, 'r3')], code: 4, re: /DF_ERR_SOURCE_UNREACHABLE/, out: 'r3' },
    { name: 'missing directory', args: ['--url', origin.url('f.bin'), '-o', path.join(dir, 'nope', 'r4')], code: 3, re: /DF_ERR_OUTPUT_PATH: output directory .* does not exist/, out: 'r4' },
    { name: 'bad digest', args: ['--url', origin.url('f.bin'), '-o', path.join(dir, 'r5'), '--digest', 'sha256:xyz'], code: 2, re: /DF_ERR_INVALID_DIGEST/, out: 'r5' },
    { name: 'wrong digest', args: ['--url', origin.url('f.bin'), '-o', path.join(dir, 'r6'), '--digest', `sha256:${'0'.repeat(64)}`], code: 5, re: /DF_ERR_DIGEST_MISMATCH/, out: 'r6' },
    { name: 'unknown flag', args: ['--url', origin.url('f.bin'), '-o', path.join(dir, 'r7'), '--bogus'], code: 2, re: /DF_ERR_INVALID_ARGUMENT: Unknown argument/, out: 'r7' },
    { name: 'malformed header', args: ['--url', origin.url('f.bin'), '-o', path.join(dir, 'r8'), '--header', 'no colon'], code: 2, re: /invalid --header/, out: 'r8' },
  ];
  for (const c of cases) {
    const r = await runCli('dfget', [...c.args, ...base]);
    assert.equal(r.code, c.code, `${c.name}: exit ${r.code}, stderr ${r.stderr}`);
    assert.match(oneErrorLine(r.stderr), c.re, c.name);
    assert.deepEqual(await leftovers(dir, c.out), [], `${c.name} left a file`);
    await fsp.access(path.join(dir, 'nope')).then(() => assert.fail('created the missing directory'), () => undefined);
  }
});

test('SIGTERM or Ctrl-C: dfget stops, removes what it wrote, leaves the swarm, and exits 143 or 130', async (t) => {
  const { dir, origin, sn, home: peerHome } = await fixture(t, 8 * MiB);
  for (const [signal, exitCode] of [['SIGTERM', 143], ['SIGINT', 130]] as const) {
    const home = peerHome(`home-${signal}`);
    const out = path.join(dir, `out-${signal}`);
    const proc = spawn(process.execPath, [CLI('dfget'), '--url', origin.url('f.bin'), '-o', out, '--node', sn.addr, '--home', home,
      '--ratelimit', '1M', '--notbs', '--verbose'], { stdio: ['ignore', 'ignore', 'pipe'] });
    t.after(() => { if (proc.exitCode === null) proc.kill('SIGKILL'); });
    let stderr = '';
    proc.stderr!.on('data', (d: Buffer) => { stderr += d.toString(); });
    const exited = once(proc, 'exit');
    // Some pieces are held (and served) when the signal comes.
    await stderrLines({ proc, stderr: () => stderr }, '"msg":"piece done"', 2, 30_000);
    proc.kill(signal);
    const [code] = await exited;
    assert.equal(code, exitCode, stderr);
    assert.match(stderr.trim().split('\n').pop() ?? '', new RegExp(`^dfget: DF_ERR_CLOSED: interrupted by ${signal}$`));
    assert.deepEqual(await fsp.readdir(path.join(home, 'data')), [], `${signal}: pieces left in the home`);
    assert.deepEqual((await fsp.readdir(dir)).filter((f) => f.includes(`out-${signal}`)), [], `${signal}: output left`);
    assert.equal(metricValue(await sn.metrics(), 'dragonfly_supernode_peers'), 0, `${signal}: still in the swarm`);
  }
});

test('a supernode lost part way: with --digest dfget takes only the pieces it lacks from the source', async (t) => {
  const { dir, file, origin, sn, home: peerHome } = await fixture(t, 16 * MiB);
  const out = path.join(dir, 'out');
  const run = runCli('dfget', ['--url', origin.url('f.bin'), '-o', out, '--node', sn.addr, '--home', peerHome('home'),
    '--ratelimit', '4M', '--digest', `sha256:${file.sha256}`]);
  // The supernode has answered for 16 verified pieces (4 MiB) of the download, then it is gone.
  let held = 0;
  let snSource = 0;
  while (held < 16) {
    const m = await sn.metrics();
    held = metricValue(m, 'dragonfly_supernode_piece_results_total', { holder: 'supernode', result: 'success' });
    snSource = metricValue(m, 'dragonfly_supernode_source_bytes_total');
    if (held < 16) await new Promise((r) => setTimeout(r, 20));
  }
  const exited = once(sn.proc, 'exit');
  sn.proc.kill('SIGKILL');
  await exited;

  const r = await run;
  assert.equal(r.code, 0, r.stderr);
  assert.equal(await sha256File(out), file.sha256);
  // What the source sent after the supernode's own fetch: at most the 12 MiB not held, in bounded ranges.
  const fromSource = origin.bytesFor('f.bin') - snSource;
  assert.ok(fromSource > 0 && fromSource <= 12 * MiB, `the source sent ${fromSource} bytes to dfget`);
  assert.ok(origin.ranges.length > 0 && origin.ranges.every((h) => /^bytes=\d+-\d+$/.test(h)), origin.ranges.join(', '));
  assert.deepEqual(await leftovers(dir, 'out.'), []);
});
