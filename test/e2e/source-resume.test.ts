/**
 * A source that breaks off in the middle of a file: the supernode asks for
 * the rest with a range request instead of failing every peer (which would
 * then each go to the source).
 */
import { test, type TestContext } from 'node:test';
import * as http from 'node:http';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import assert from 'node:assert/strict';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { metricValue } from '../../src/common/metrics';
import { sha256File } from '../helpers/origin';
import { fixture, runCli, startSupernode } from '../helpers/procs';

const MiB = 1024 * 1024;

/** The start offsets of `n` open-ended range requests ("bytes=N-"). */
function resumeOffsets(ranges: string[], n: number): number[] {
  assert.equal(ranges.length, n, `range requests: ${ranges.join(', ')}`);
  return ranges.map((r) => {
    const m = /^bytes=(\d+)-$/.exec(r);
    assert.ok(m, `not an open-ended range: ${r}`);
    return Number(m[1]);
  });
}

test('a source that breaks off mid-file is resumed where it stopped: the peer gets verified bytes, the origin sends the file once', async (t) => {
  const { dir, file, origin, sn, home } = await fixture(t, 8 * MiB);
  origin.faults.dropAfterBytes = 3 * MiB;
  origin.faults.drops = 2;
  const r = await runCli('dfget', ['--url', origin.url('f.bin'), '-o', path.join(dir, 'out'), '--node', sn.addr, '--home', home('p'), '--ratelimit', '500M', '--notbs']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(await sha256File(path.join(dir, 'out')), file.sha256);
  // Each request resumes at or a little before where the last one broke off
  // (bytes received but not yet read when the connection failed are asked for again).
  const [o1, o2] = resumeOffsets(origin.ranges, 2);
  assert.ok(o1 > 0 && o1 <= 3 * MiB && o2 > o1 && o2 <= o1 + 3 * MiB, `resumed at ${o1}, ${o2}`);
  assert.equal(origin.bytesFor('f.bin'), 3 * MiB + 3 * MiB + (8 * MiB - o2), 'the origin sent more than the three answers');
  assert.equal(metricValue(await sn.metrics(), 'dragonfly_supernode_source_bytes_total'), 8 * MiB);
  assert.match(sn.stderr(), /source broke off; resuming where it stopped/);
});

test('a source that breaks off and cannot resume (ignores Range) fails the download with a coded error and writes no file', async (t) => {
  const { dir, origin, sn, home } = await fixture(t, 8 * MiB);
  origin.faults.dropAfterBytes = 3 * MiB;
  origin.faults.drops = 1;
  origin.faults.ignoreRange = true;
  const out = path.join(dir, 'out');
  const r = await runCli('dfget', ['--url', origin.url('f.bin'), '-o', out, '--node', sn.addr, '--home', home('p'), '--ratelimit', '500M', '--notbs']);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /DF_ERR_SOURCE_STATUS: .*cannot resume, or the file changed/);
  assert.equal(await fs.stat(out).then(() => true, () => false), false, 'a file was written');
  assert.equal(origin.ranges.length, 1);
});

test('dfget going to the source itself resumes a broken-off fetch the same way', async (t) => {
  const { dir, file, origin } = await fixture(t, 4 * MiB, { supernode: false });
  origin.faults.dropAfterBytes = 1 * MiB;
  origin.faults.drops = 1;
  const out = path.join(dir, 'out');
  const r = await runCli('dfget', ['--url', origin.url('f.bin'), '-o', out, '--ratelimit', '500M']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(await sha256File(out), file.sha256);
  const [o1] = resumeOffsets(origin.ranges, 1);
  assert.ok(o1 > 0 && o1 <= 1 * MiB, `resumed at ${o1}`);
  assert.equal(origin.bytesFor('f.bin'), 1 * MiB + (4 * MiB - o1));
});

/** An origin of its own: `handle` answers every request. */
async function rawOrigin(t: TestContext, handle: http.RequestListener): Promise<string> {
  const server = http.createServer(handle);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => { server.closeAllConnections(); server.close(); });
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

test('an error page that never ends is not read: the supernode answers the status and closes the connection', async (t) => {
  const { dir, sn, home } = await fixture(t, 1024);
  let closed!: () => void;
  const connectionClosed = new Promise<void>((r) => { closed = r; });
  let sent = 0;
  const base = await rawOrigin(t, (req, res) => {
    res.writeHead(500, { 'content-type': 'text/html' });
    const chunk = Buffer.alloc(64 * 1024, 0x61);
    // "Never ends" up to 64 MiB, so that a supernode that reads it all still lets the test end.
    const pump = () => {
      while (!res.destroyed && sent < 64 * 1024 * 1024) {
        sent += chunk.length;
        if (!res.write(chunk)) return;
      }
      if (!res.destroyed) res.end();
    };
    res.on('drain', pump);
    res.on('close', closed);
    pump();
  });
  const r = await runCli('dfget', ['--url', `${base}/f.bin`, '-o', path.join(dir, 'out'), '--node', sn.addr, '--home', home('p'), '--notbs']);
  assert.equal(r.code, 4, r.stderr);
  assert.match(r.stderr, /DF_ERR_SOURCE_STATUS: .*answered HTTP 500/);
  await connectionClosed;
  assert.ok(sent < 64 * 1024 * 1024, `the supernode read ${sent} bytes of the error page`);
});

test('a source that sends no headers within --source-timeout: dfget says so with DF_ERR_TIMEOUT, not that the supernode did not answer', async (t) => {
  const { dir, home } = await fixture(t, 1024, { supernode: false });
  const sn = await startSupernode(path.join(dir, 'sn'), ['--source-timeout', '1s']);
  t.after(() => sn.stop());
  const base = await rawOrigin(t, () => { /* never answers */ });
  const r = await runCli('dfget', ['--url', `${base}/f.bin`, '-o', path.join(dir, 'out'), '--node', sn.addr, '--home', home('p'), '--notbs']);
  assert.equal(r.code, 7, r.stderr);
  assert.match(r.stderr, /DF_ERR_TIMEOUT: .*source/);
  assert.doesNotMatch(r.stderr, /did not answer/);
});
