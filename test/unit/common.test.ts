import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdir, stat, writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import { VERSION } from '../../src/common/constants';
import { parseDuration, parseRate, parseSize } from '../../src/common/units';
import { DfError, grpcError, toDfError } from '../../src/common/errors';
import { parseDigest, parseMd5 } from '../../src/common/digest';
import { parseRange } from '../../src/common/range';
import { filterUrl, headerProblem, MAX_URL_CHARS, parseFilter, parseHeaders, parseHttpUrl, taskIdFor } from '../../src/common/url';
import { validateRegister } from '../../src/supernode/task-manager';
import { firstNonLoopbackAddress, parseNodeList, resolveAdvertiseIp } from '../../src/common/net';
import { RateLimiter, uplinkLimiter, type Clock } from '../../src/common/ratelimit';
import { metricValue } from '../../src/common/metrics';
import { autoPieceSize, MAX_PIECES, pieceSizeFor } from '../../src/supernode/cdn';
import { missingRuns } from '../../src/peer/backsource';
import { parseSupernodeArgs, schedulerLimits, translateJavaProps } from '../../src/cli/supernode';
import { checkOutput } from '../../src/peer/output';
import { makeDirs } from '../../src/common/dirs';
import { CLI } from '../helpers/procs';
import { tempDir } from '../helpers/origin';
import { tempDirSync } from '../helpers/tmp';

const code = (fn: () => unknown) => { try { fn(); } catch (e) { return (e as DfError).code; } return 'none'; };

test('sizes and rates use binary multiples and refuse garbage', () => {
  assert.equal(parseSize('20M'), 20 * 1024 * 1024);
  assert.equal(parseSize('1.5G'), 1.5 * 1024 ** 3);
  assert.equal(parseSize('512k'), 512 * 1024);
  assert.equal(parseSize('20MB'), 20 * 1024 * 1024);
  assert.equal(parseSize('20MiB'), 20 * 1024 * 1024);
  assert.equal(parseSize('100'), 100);
  for (const bad of ['fast', '', '-1M', '1X', 'M', '1..2M']) assert.equal(code(() => parseSize(bad)), 'DF_ERR_INVALID_ARGUMENT', bad);
  assert.equal(code(() => parseRate('0')), 'DF_ERR_INVALID_ARGUMENT');
});

test('durations', () => {
  assert.equal(parseDuration('5m'), 300_000);
  assert.equal(parseDuration('1h30m'), 5_400_000);
  assert.equal(parseDuration('250ms'), 250);
  assert.equal(parseDuration('30'), 30_000);
  for (const bad of ['5x', 'm5', '5m junk', '']) assert.equal(code(() => parseDuration(bad)), 'DF_ERR_INVALID_ARGUMENT', bad);
});

test('error codes survive a trip through gRPC, with the upstream status', () => {
  assert.ok(grpcError(new DfError('DF_ERR_INVALID_URL', 'x'.repeat(100_000))).details.length < 1100, 'a status fits in a header');
  const g = grpcError(new DfError('DF_ERR_SOURCE_STATUS', 'source answered HTTP 401', { status: 401 }));
  const back = toDfError(Object.assign(new Error('x'), { code: g.code, details: g.details }));
  assert.equal(back.code, 'DF_ERR_SOURCE_STATUS');
  assert.equal(back.status, 401);
  assert.equal(back.message, 'source answered HTTP 401');
  assert.equal(toDfError(new Error('boom')).code, 'DF_ERR_INTERNAL');
  assert.equal(new DfError('DF_ERR_OUTPUT_PATH', 'x').exitCode, 3);
});

test('digests', () => {
  assert.equal(parseDigest(`sha256:${'a'.repeat(64)}`).hex, 'a'.repeat(64));
  for (const bad of ['sha256:xyz', `sha256:${'A'.repeat(64)}`, `md5:${'a'.repeat(64)}`, 'a'.repeat(64)]) {
    assert.equal(code(() => parseDigest(bad)), 'DF_ERR_INVALID_DIGEST', bad);
  }
  assert.equal(parseMd5('D41D8CD98F00B204E9800998ECF8427E').hex, 'd41d8cd98f00b204e9800998ecf8427e');
  assert.equal(code(() => parseMd5('abc')), 'DF_ERR_INVALID_DIGEST');
});

test('byte ranges', () => {
  assert.deepEqual(parseRange('bytes=0-9', 100), { start: 0, end: 9 });
  assert.deepEqual(parseRange('bytes=90-', 100), { start: 90, end: 99 });
  assert.deepEqual(parseRange('bytes=-10', 100), { start: 90, end: 99 });
  assert.deepEqual(parseRange('bytes=50-500', 100), { start: 50, end: 99 });
  assert.equal(parseRange(undefined, 100), undefined);
  assert.equal(parseRange('bytes=100-', 100), 'unsatisfiable');
  for (const bad of ['bytes=5-1', 'bytes=0-1,3-4', 'items=0-1', 'bytes=-', 'bytes=a-b']) assert.equal(parseRange(bad, 100), 'invalid', bad);
});

test('URLs, filters, headers and task ids', () => {
  assert.equal(code(() => parseHttpUrl('ftp://x/y')), 'DF_ERR_INVALID_URL');
  assert.equal(code(() => parseHttpUrl('not a url')), 'DF_ERR_INVALID_URL');
  assert.equal(parseHttpUrl('https://h/p').host, 'h');
  assert.deepEqual(parseFilter('k1&k2'), ['k1', 'k2']);
  assert.equal(filterUrl('http://h/f?sig=1&k=2&x=3', ['sig', 'k']), 'http://h/f?x=3');
  // Signed URLs of one file share a task; an identifier replaces the URL.
  assert.equal(taskIdFor('http://h/f?sig=1', ['sig'], ''), taskIdFor('http://h/f?sig=2', ['sig'], ''));
  assert.notEqual(taskIdFor('http://h/f?sig=1', [], ''), taskIdFor('http://h/f?sig=2', [], ''));
  assert.equal(taskIdFor('http://a/x', [], 'sha256:1'), taskIdFor('http://b/y', [], 'sha256:1'));
  assert.deepEqual(parseHeaders(['A: 1', 'B:2 ']), { A: '1', B: '2' });
  assert.equal(code(() => parseHeaders(['nocolon'])), 'DF_ERR_INVALID_ARGUMENT');
  assert.equal(code(() => parseHeaders(['Bad Name: v'])), 'DF_ERR_INVALID_ARGUMENT');
});

test('node lists and the advertised address', () => {
  assert.deepEqual(parseNodeList('a:1,b', 8002), ['a:1', 'b:8002']);
  assert.deepEqual(parseNodeList(['a:1', 'c:3'], 8002), ['a:1', 'c:3']);
  assert.equal(code(() => parseNodeList('a:99999', 8002)), 'DF_ERR_INVALID_ARGUMENT');
  assert.equal(code(() => parseNodeList('a b', 8002)), 'DF_ERR_INVALID_ARGUMENT');
  const lo = { lo: [{ address: '127.0.0.1', family: 'IPv4', internal: true, netmask: '', mac: '', cidr: null }] } as never;
  assert.equal(firstNonLoopbackAddress(lo), undefined);
  assert.equal(code(() => resolveAdvertiseIp(undefined, lo)), 'DF_ERR_NO_ADVERTISE_IP');
  assert.equal(resolveAdvertiseIp('10.0.0.5', lo), '10.0.0.5');
  assert.equal(code(() => resolveAdvertiseIp('not-ip', lo)), 'DF_ERR_INVALID_ARGUMENT');
  const eth = { eth0: [{ address: '172.60.20.44', family: 'IPv4', internal: false, netmask: '', mac: '', cidr: null }] } as never;
  assert.equal(resolveAdvertiseIp(undefined, eth), '172.60.20.44');
});

test('--peer-down-limit and --peer-up-limit set the scheduler\'s per-peer limits; bad values are refused', () => {
  assert.deepEqual(schedulerLimits(parseSupernodeArgs([])), { maxInFlightPerPeer: 8, maxUploadsPerHolder: 8 });
  assert.deepEqual(schedulerLimits(parseSupernodeArgs(['--peer-down-limit', '2', '--peer-up-limit', '6'])), { maxInFlightPerPeer: 2, maxUploadsPerHolder: 6 });
  for (const argv of [['--peer-down-limit', '0'], ['--peer-up-limit', '65'], ['--peer-down-limit', '1.5'], ['--peer-up-limit', 'many']]) {
    assert.equal(code(() => schedulerLimits(parseSupernodeArgs(argv))), 'DF_ERR_INVALID_ARGUMENT', argv.join(' '));
  }
});

test('Java-era -D properties become flags; unknown ones are refused', () => {
  assert.deepEqual(translateJavaProps(['-Dsupernode.advertiseIp=172.60.20.44', '--port', '1']), ['--advertise-ip', '172.60.20.44', '--port', '1']);
  assert.deepEqual(translateJavaProps(['-Dsupernode.totalLimit=200']), ['--max-bandwidth', '200M']);
  assert.equal(code(() => translateJavaProps(['-Dsupernode.bogus=1'])), 'DF_ERR_INVALID_ARGUMENT');
});

test('rate limiter paces by a clock and keeps the burst small', () => {
  let now = 0;
  const clock: Clock = { now: () => now };
  const l = new RateLimiter(1000, { clock, burstBytes: 100 });
  assert.equal(l.reserve(100), 0);
  assert.equal(l.reserve(1000), 1000);
  now += 1000;
  assert.equal(l.reserve(0), 0);
  assert.ok(new RateLimiter(0).unlimited);
});

test('an uplink limiter lets out 50 ms of its rate at once within 64-256 KiB, or 10 ms when more; none for 0', () => {
  assert.equal(uplinkLimiter(0), undefined);
  assert.equal(uplinkLimiter(-1), undefined);
  // 10 Mbit/s: 50 ms is 62.5 KB, so the floor.
  assert.equal(uplinkLimiter(1_250_000)?.burst, 64 * 1024);
  // 20 Mbit/s: 50 ms.
  assert.equal(uplinkLimiter(2_500_000)?.burst, 125_000);
  // 50 Mbit/s less 2 %: 50 ms is 306 KB, capped at 256 KiB.
  assert.equal(uplinkLimiter(6_125_000)?.burst, 256 * 1024);
  // 100 Mbit/s: capped at 256 KiB, which is more than 10 ms.
  assert.equal(uplinkLimiter(12_500_000)?.burst, 256 * 1024);
  assert.equal(uplinkLimiter(100 * 1024 * 1024)?.burst, Math.round(100 * 1024 * 1024 / 100));
  assert.equal(uplinkLimiter(6_125_000)?.bytesPerSec, 6_125_000);
});

test('auto piece size: about 256 pieces, 256 KiB to 4 MiB', () => {
  assert.equal(autoPieceSize(1024), 256 * 1024);
  assert.equal(autoPieceSize(64 * 1024 * 1024), 256 * 1024);
  assert.equal(autoPieceSize(256 * 1024 * 1024), 1024 * 1024);
  assert.equal(autoPieceSize(1024 ** 3), 4 * 1024 * 1024);
  assert.equal(autoPieceSize(-1), 4 * 1024 * 1024);
  // Whatever length a source announces, a task has at most MAX_PIECES pieces.
  assert.equal(pieceSizeFor(1024 ** 3, 'auto'), 4 * 1024 * 1024);
  assert.equal(pieceSizeFor(1024 ** 3, 16 * 1024), 16 * 1024);
  assert.equal(pieceSizeFor(16 * 1024 ** 4, 'auto'), 256 * 1024 * 1024);
  assert.equal(pieceSizeFor(4 * 1024 ** 3, 16 * 1024), 64 * 1024);
  assert.equal(pieceSizeFor(-1, 16 * 1024), 16 * 1024);
  for (const len of [MAX_PIECES * 16 * 1024, MAX_PIECES * 16 * 1024 + 1, 17_592_181_850_112]) {
    assert.ok(Math.ceil(len / pieceSizeFor(len, 16 * 1024)) <= MAX_PIECES, String(len));
  }
});

test('metricValue sums matching series', () => {
  const text = 'a_total{holder="peer"} 3\na_total{holder="supernode"} 4\nab_total 9\n';
  assert.equal(metricValue(text, 'a_total', { holder: 'peer' }), 3);
  assert.equal(metricValue(text, 'a_total'), 7);
});

test('the gRPC status table matches grpc-js', async () => {
  const { status } = await import('@grpc/grpc-js');
  const { GrpcStatus } = await import('../../src/common/errors');
  for (const [k, v] of Object.entries(GrpcStatus)) assert.equal((status as unknown as Record<string, number>)[k], v, k);
});

test('every program reports the release of package.json with --version and documents it', () => {
  const pkg = JSON.parse(readFileSync(path.join(__dirname, '..', '..', '..', 'package.json'), 'utf8')) as { version: string };
  assert.equal(VERSION, pkg.version);
  for (const prog of ['dfget', 'supernode', 'dfdaemon']) {
    const v = spawnSync(process.execPath, [CLI(prog), '--version'], { encoding: 'utf8', timeout: 20_000 });
    assert.equal(v.status, 0, `${prog} --version: ${v.stderr}`);
    assert.equal(v.stdout.trim(), pkg.version, prog);
    const h = spawnSync(process.execPath, [CLI(prog), '--help'], { encoding: 'utf8', timeout: 20_000 });
    assert.match(h.stdout, /--version/, `${prog} --help`);
  }
});

test('missingRuns: the byte runs of the pieces not held, adjacent ones joined, the last piece short', () => {
  // 10 pieces of 100 bytes, the last one 50: 950 bytes.
  const p = (held: number[]) => ({ contentLength: 950, pieceSize: 100, held: new Set(held) });
  assert.deepEqual(missingRuns(p([0, 1, 4, 9])), [{ start: 200, end: 399 }, { start: 500, end: 899 }]);
  assert.deepEqual(missingRuns(p([0, 1, 2, 3, 4, 5, 6, 7, 8])), [{ start: 900, end: 949 }]);
  assert.deepEqual(missingRuns(p([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])), []);
  assert.deepEqual(missingRuns(p([])), [{ start: 0, end: 949 }]);
  // Past 64 runs: one request from the first missing byte to the last.
  const every2nd = { contentLength: 200 * 100, pieceSize: 100, held: new Set(Array.from({ length: 100 }, (_, i) => 2 * i)) };
  assert.deepEqual(missingRuns(every2nd), [{ start: 100, end: 19_999 }]);
});

test('dfget\'s output may not be its home, above it, or one of the home\'s own entries', async () => {
  const d = await tempDir('df-out-');
  const home = path.join(d, 'home');
  const rejected = async (out: string) => {
    await assert.rejects(checkOutput(out, home), (e: DfError) => e.code === 'DF_ERR_OUTPUT_PATH' && /--home/.test(e.message), out);
  };
  await rejected(home);
  await rejected(`${home}/`);
  await rejected(d);
  await rejected(path.join(home, 'data'));
  await rejected(path.join(home, 'data', 'x.bin'));
  await rejected(path.join(home, 'logs', 'uploader.log'));
  await rejected(path.join(home, 'uploader.json'));
  // Names that only look alike are fine.
  await checkOutput(path.join(d, 'home2'), home);
  await checkOutput(path.join(d, 'home.bin'), home);
  await mkdir(home);
  await checkOutput(path.join(home, 'database.bin'), home);
  await checkOutput(path.join(home, 'out.bin'), home);
  // Without a home only the output's own checks apply.
  await checkOutput(path.join(home, 'data.bin'));
});

test('makeDirs makes missing parents, accepts a directory that is there, and fails at once where Node\'s recursive mkdir never returns', async () => {
  const d = await tempDir('df-dirs-');
  makeDirs(path.join(d, 'a', 'b', 'c'));
  assert.ok((await stat(path.join(d, 'a', 'b', 'c'))).isDirectory());
  makeDirs(path.join(d, 'a', 'b'));
  await writeFile(path.join(d, 'f'), 'x');
  assert.throws(() => makeDirs(path.join(d, 'f')), { code: 'EEXIST' });
  assert.throws(() => makeDirs(path.join(d, 'f', 'g')), { code: 'ENOTDIR' });
  // procfs answers ENOENT although /proc exists; fs.mkdir(..., { recursive: true }) spins on that forever.
  assert.throws(() => makeDirs('/proc/df-no-such-dir/data'), { code: 'ENOENT' });
});

test('an unusable home stops each program at once with a coded error; dfget does not turn to the source', () => {
  const run = (prog: string, args: string[]) => spawnSync(process.execPath, [CLI(prog), ...args], { encoding: 'utf8', timeout: 20_000 });
  const last = (stderr: string) => stderr.trim().split('\n').pop() ?? '';
  const home = '/proc/df-no-such-home';
  const sn = run('supernode', ['--advertise-ip', '127.0.0.1', '--port', '0', '--download-port', '0', '--home-dir', home]);
  assert.equal(sn.status, 2, sn.stderr);
  assert.match(last(sn.stderr), /^supernode: DF_ERR_INVALID_ARGUMENT: home directory \/proc\/df-no-such-home is not usable: ENOENT/);
  const dd = run('dfdaemon', ['--port', '0', '--registry', 'http://127.0.0.1:9', '--node', '127.0.0.1:1', '--home', home]);
  assert.equal(dd.status, 2, dd.stderr);
  assert.match(last(dd.stderr), /^dfdaemon: DF_ERR_INVALID_ARGUMENT: home directory \/proc\/df-no-such-home is not usable: ENOENT/);
  // Without --notbs: a wrong home is not a reason to fetch from the source (nothing listens at the URL either way).
  const dg = run('dfget', ['--url', 'http://127.0.0.1:9/f.bin', '-o', path.join(tempDirSync(), 'out'), '--node', '127.0.0.1:1', '--home', `${home}/h`]);
  assert.equal(dg.status, 3, dg.stderr);
  assert.match(last(dg.stderr), /^dfget: DF_ERR_OUTPUT_PATH: --home \/proc\/df-no-such-home\/h is not usable: ENOENT/);
});

test('headers a source fetch cannot send, URLs too long to take, and the supernode\'s reserved peer id are refused as invalid arguments', () => {
  for (const name of ['Connection', 'keep-alive', 'Transfer-Encoding', 'Upgrade', 'Expect', 'TE', 'Trailer']) {
    assert.match(headerProblem(name, 'x') ?? '', /connection/, name);
    assert.equal(code(() => parseHeaders(`${name}: x`)), 'DF_ERR_INVALID_ARGUMENT', name);
  }
  for (const value of ['a\u0001b', 'Jos\u00e9\u20ac', 'a\x7fb', 'line\nbreak']) {
    assert.ok(headerProblem('X-A', value), JSON.stringify(value));
  }
  for (const value of ['', 'plain', 'tab\there', 'Jos\u00e9', 'Bearer abc.def-ghi_~+/=']) assert.equal(headerProblem('X-A', value), undefined, value);
  assert.deepEqual(parseHeaders(['Authorization: Bearer t', 'X-Name: Jos\u00e9']), { Authorization: 'Bearer t', 'X-Name': 'Jos\u00e9' });

  const long = `http://example.com/${'a'.repeat(MAX_URL_CHARS)}`;
  assert.throws(() => parseHttpUrl(long), (e: DfError) => e.code === 'DF_ERR_INVALID_URL' && e.message.length < 100);
  // What was given is quoted, but only its start.
  assert.throws(() => parseHttpUrl(`ftp://${'b'.repeat(5000)}`), (e: DfError) => e.code === 'DF_ERR_INVALID_URL' && e.message.length < 400);
  parseHttpUrl(`http://example.com/${'a'.repeat(MAX_URL_CHARS - 100)}`);

  const reg = {
    url: 'http://example.com/f', headers: {}, filter: [], identifier: '', expectedDigest: '',
    peerId: 'host-1', peerIp: '127.0.0.1', peerPort: 0, hostname: 'h',
  };
  validateRegister(reg);
  assert.equal(code(() => validateRegister({ ...reg, peerId: 'supernode' })), 'DF_ERR_INVALID_ARGUMENT');
  assert.equal(code(() => validateRegister({ ...reg, headers: { 'Keep-Alive': 'timeout=5' } })), 'DF_ERR_INVALID_ARGUMENT');
  assert.equal(code(() => validateRegister({ ...reg, url: long })), 'DF_ERR_INVALID_URL');
});
