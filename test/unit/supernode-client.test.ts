/** Connections to the supernode opened ahead of the first download. */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs/promises';
import * as net from 'node:net';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { silentLogger } from '../../src/common/logger';
import { P2PBlobSource } from '../../src/peer/p2p-blob-source';
import { SupernodeClients } from '../../src/supernode/client';
import { tempDir } from '../helpers/origin';
import { freePorts, startSupernode } from '../helpers/procs';

/** A new directory, removed after the test. */
async function dir(t: TestContext): Promise<string> {
  const d = await tempDir();
  t.after(() => fs.rm(d, { recursive: true, force: true }));
  return d;
}

test('warm() connects to a running supernode and learns the local address toward it', async (t) => {
  const sn = await startSupernode(await dir(t));
  t.after(() => sn.stop());
  const clients = new SupernodeClients();
  t.after(() => clients.close());
  assert.equal(await clients.warm(sn.addr, 5_000), true);
  assert.equal(await clients.localAddress(sn.addr, 1), '127.0.0.1');
});

test('warm() answers false, without throwing, when no supernode listens', async (t) => {
  const clients = new SupernodeClients();
  t.after(() => clients.close());
  assert.equal(await clients.warm(`127.0.0.1:${(await freePorts(1))[0]}`, 1_000), false);
});

test('dfdaemon\'s blob source connects to its first supernode when it starts, before any blob is asked for', { timeout: 10_000 }, async (t) => {
  // A bare TCP listener in the supernode's place: it sees the connection (and
  // the local-address probe) that start() opens; no blob is requested.
  const seen: net.Socket[] = [];
  const fake = net.createServer((s) => { seen.push(s); s.on('error', () => undefined); });
  fake.listen(0, '127.0.0.1');
  await once(fake, 'listening');
  t.after(() => { for (const s of seen) s.destroy(); fake.close(); });
  const node = `127.0.0.1:${(fake.address() as AddressInfo).port}`;
  const source = new P2PBlobSource({ nodes: [node], homeDir: await dir(t), rateLimitBytesPerSec: 0, logger: silentLogger() });
  t.after(() => source.close());
  const connected = once(fake, 'connection');
  assert.ok(await source.start() > 0);
  // Times out (the test fails) if start() opened no connection.
  await connected;
  assert.ok(seen.length >= 1);
});

test('dfdaemon\'s blob source starts even when its supernode is not reachable', async (t) => {
  const source = new P2PBlobSource({
    nodes: [`127.0.0.1:${(await freePorts(1))[0]}`], homeDir: await dir(t), rateLimitBytesPerSec: 0, logger: silentLogger(),
  });
  t.after(() => source.close());
  assert.ok(await source.start() > 0);
});
