/**
 * dfdaemon as users run it: Debian's docker-registry upstream, a supernode,
 * and skopeo / podman pulling through a registries.conf mirror entry.
 *
 * Clients name the image by a registry host nobody listens on, so a pull that
 * did not go through dfdaemon fails instead of quietly falling back to the
 * registry behind our back.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fsp from 'node:fs/promises';
import * as http from 'node:http';
import * as path from 'node:path';
import { request } from 'undici';
import {
  basicAuth, blobPathRe, buildImage, makeTempDir, pushImage, registryDigests, skopeoCopyViaMirror, skopeoPulledDigests,
  startCountingProxy, startRegistry, writeRegistriesConf, type CountingProxy, type ImageDigests, type Registry,
} from '../helpers/registry';
import { createPodmanStore, podmanPullViaMirror, podmanPulledDigest } from '../helpers/podman';
import { startDfdaemon, startSupernode, stderrLines, type SupernodeProc } from '../helpers/procs';
import { metricValue } from '../../src/common/metrics';

const MiB = 1024 * 1024;

function rawGet(port: number, p: string): Promise<{ statusCode: number; body: string }> {
  return new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path: p }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c) => { body += c; });
      res.on('end', () => resolve({ statusCode: res.statusCode ?? 0, body }));
    }).on('error', reject);
  });
}
/** The image reference's registry: a closed port, so only the mirror can serve it. */
const NOWHERE = '127.0.0.1:9';
const REPO = 'team/app';
const TAG = 'v1';

let dir: string;
let registry: Registry;
let proxy: CountingProxy;
let sn: SupernodeProc;
let image: ImageDigests;
const cleanups: Array<() => Promise<unknown>> = [];

before(async () => {
  dir = await makeTempDir('df-dfdaemon-e2e');
  cleanups.push(() => fsp.rm(dir, { recursive: true, force: true }));
  registry = await startRegistry();
  cleanups.push(() => registry.close());
  proxy = await startCountingProxy(registry.url);
  cleanups.push(() => proxy.close());
  const built = await buildImage({ dir: path.join(dir, 'img'), layers: 3, layerBytes: 14 * MiB, tag: TAG });
  await pushImage(built.ociDir, TAG, registry.host, REPO);
  image = await registryDigests(registry.url, REPO, TAG);
  assert.equal(image.layers.length, 3);
  assert.ok(image.layerSizes.reduce((a, b) => a + b, 0) >= 40 * MiB);
  sn = await startSupernode(path.join(dir, 'sn'));
  cleanups.push(() => sn.stop());
});

after(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
});

async function conf(name: string, mirror: string): Promise<string> {
  const p = path.join(dir, `${name}.registries.conf`);
  await writeRegistriesConf(p, { registryHost: NOWHERE, mirrorHost: mirror });
  return p;
}

async function skopeoPull(mirror: string, name: string, repo = REPO) {
  const out = path.join(dir, `oci-${name}`);
  const r = await skopeoCopyViaMirror({ registriesConf: await conf(name, mirror), registryHost: NOWHERE, repo, tag: TAG, outDir: out, timeoutMs: 120_000 });
  return { ...r, out };
}

test('skopeo and podman pull through dfdaemon; a second dfdaemon pulls the same image and the registry sends each layer once', async (t) => {
  const d1 = await startDfdaemon(['--registry', proxy.url, '--node', sn.addr, '--home', path.join(dir, 'd1'), '--ratelimit', '1G']);
  t.after(() => d1.stop());
  const d2 = await startDfdaemon(['--registry', proxy.url, '--node', sn.addr, '--home', path.join(dir, 'd2'), '--ratelimit', '1G']);
  t.after(() => d2.stop());

  const s1 = await skopeoPull(d1.host, 's1');
  assert.equal(s1.code, 0, s1.stderr);
  const got = await skopeoPulledDigests(s1.out, TAG);
  assert.equal(got.manifestDigest, image.manifestDigest);
  assert.deepEqual(got.layers, image.layers);
  assert.equal(got.config, image.config);

  const store = await createPodmanStore();
  t.after(() => store.close());
  const p1 = await podmanPullViaMirror({ registriesConf: await conf('p1', d1.host), registryHost: NOWHERE, repo: REPO, tag: TAG, store });
  assert.equal(p1.code, 0, p1.stderr);
  assert.equal(await podmanPulledDigest(p1.ref, store), image.manifestDigest);

  const s2 = await skopeoPull(d2.host, 's2');
  assert.equal(s2.code, 0, s2.stderr);
  assert.deepEqual((await skopeoPulledDigests(s2.out, TAG)).layers, image.layers);

  // Two dfdaemons, three pulls: every layer left the registry exactly once.
  for (let i = 0; i < image.layers.length; i++) {
    assert.equal(proxy.bytesFor(blobPathRe(image.layers[i])), image.layerSizes[i], `layer ${i} bytes from the registry`);
  }
  const m = await sn.metrics();
  assert.ok(metricValue(m, 'dragonfly_supernode_pieces_scheduled_total') > 0, 'blobs did not go through the P2P network');
});

test('--expiretime: blobs nobody used for that long leave the swarm and the disk; a later pull still works', async (t) => {
  const home = path.join(dir, 'dexp');
  const d = await startDfdaemon(['--registry', registry.url, '--node', sn.addr, '--home', home, '--ratelimit', '1G', '--expiretime', '300ms']);
  t.after(() => d.stop());
  const blobs = image.layers.length + 1; // and the config
  const expired = stderrLines(d, 'blob expired', blobs);
  const s1 = await skopeoPull(d.host, 'exp1');
  assert.equal(s1.code, 0, s1.stderr);
  const lines = (await expired).map((l) => JSON.parse(l) as { digest: string });
  assert.deepEqual(lines.map((l) => l.digest).sort(), [...image.layers, image.config].sort());
  assert.deepEqual(await fsp.readdir(path.join(home, 'data')), [], 'blob files are still on disk');

  const s2 = await skopeoPull(d.host, 'exp2');
  assert.equal(s2.code, 0, s2.stderr);
  assert.deepEqual((await skopeoPulledDigests(s2.out, TAG)).layers, image.layers);
});

test('supernode down: the pull through dfdaemon still succeeds', async (t) => {
  const d = await startDfdaemon(['--registry', registry.url, '--node', '127.0.0.1:1', '--home', path.join(dir, 'dn')]);
  t.after(() => d.stop());
  const r = await skopeoPull(d.host, 'down');
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual((await skopeoPulledDigests(r.out, TAG)).layers, image.layers);
});

test('the supernode dies while blobs stream: dfdaemon finishes them from the registry and the pull succeeds', async (t) => {
  const lone = await startSupernode(path.join(dir, 'sn-dies'));
  t.after(() => lone.stop());
  const counted = await startCountingProxy(registry.url);
  t.after(() => counted.close());
  // Slow enough that the kill lands mid-blob: 42 MiB at 8 MiB/s.
  const d = await startDfdaemon(['--registry', counted.url, '--node', lone.addr, '--home', path.join(dir, 'dies'), '--ratelimit', '8M', '--verbose']);
  t.after(() => d.stop());
  const pull = skopeoPull(d.host, 'dies');
  await stderrLines(d, '"piece done"', 4);
  lone.proc.kill('SIGKILL');

  const r = await pull;
  assert.equal(r.code, 0, r.stderr);
  const got = await skopeoPulledDigests(r.out, TAG);
  assert.deepEqual(got.layers, image.layers);
  assert.equal(got.config, image.config);
  // The responses had started over P2P (the pieces above are the blobs' own)
  // when the supernode died; each went on from the registry.
  assert.match(d.stderr(), /fetching the rest from the upstream/);
  const m = await (await request(`${d.url}/metrics`)).body.text();
  const p2p = metricValue(m, 'dragonfly_dfdaemon_blob_bytes_total', { via: 'p2p' });
  const direct = metricValue(m, 'dragonfly_dfdaemon_blob_bytes_total', { via: 'direct' });
  const total = image.layerSizes.reduce((a, b) => a + b, 0);
  assert.ok(direct > 0 && p2p + direct >= total, `p2p ${p2p} and direct ${direct} bytes for ${total} bytes of layers`);
  // A blob that broke off is fetched again whole, once, to be checked: the
  // registry sent no layer more than twice (the supernode's copy and that).
  const sent = image.layers.map((l) => counted.bytesFor(blobPathRe(l)));
  assert.ok(sent.every((n, i) => n <= 2 * image.layerSizes[i]), `registry bytes per layer: ${sent.join(', ')}`);
});

test('a blob whose bytes do not match its digest fails the pull; after the fault a pull succeeds', async (t) => {
  const other = await buildImage({ dir: path.join(dir, 'img2'), layers: 2, layerBytes: 4 * MiB, tag: TAG });
  await pushImage(other.ociDir, TAG, registry.host, 'team/other');
  const digests = await registryDigests(registry.url, 'team/other', TAG);
  const bad = await startCountingProxy(registry.url);
  t.after(() => bad.close());
  const target = blobPathRe(digests.layers[1]);
  bad.faults.corruptBlob = (p) => target.test(p);
  const d = await startDfdaemon(['--registry', bad.url, '--node', sn.addr, '--home', path.join(dir, 'dc'), '--ratelimit', '1G']);
  t.after(() => d.stop());

  const r1 = await skopeoPull(d.host, 'corrupt1', 'team/other');
  assert.notEqual(r1.code, 0, 'a corrupt blob was accepted');
  // The client either sees the digest fail or the connection cut before the last byte.
  assert.match(r1.stderr, /digest|EOF|connection reset/i);

  bad.faults.corruptBlob = undefined;
  const r2 = await skopeoPull(d.host, 'corrupt2', 'team/other');
  assert.equal(r2.code, 0, r2.stderr);
  assert.deepEqual((await skopeoPulledDigests(r2.out, TAG)).layers, digests.layers);
});

test('a private upstream: credentials in the dfdaemon config let clients pull; without them the client gets 401', async (t) => {
  const creds = { user: 'puller', password: 's3cret-pw' };
  const priv = await startRegistry({ htpasswd: creds });
  t.after(() => priv.close());
  const small = await buildImage({ dir: path.join(dir, 'img3'), layers: 2, layerBytes: 2 * MiB, tag: TAG });
  await pushImage(small.ociDir, TAG, priv.host, 'team/private', creds);
  const digests = await registryDigests(priv.url, 'team/private', TAG, creds);

  const cfg = path.join(dir, 'dfdaemon-auth.yml');
  await fsp.writeFile(cfg, [
    'registry_mirror:',
    `  remote: ${priv.url}`,
    '  insecure: true',
    '  auth:',
    `    username: ${creds.user}`,
    `    password: ${creds.password}`,
  ].join('\n') + '\n', { mode: 0o600 });
  const withCreds = await startDfdaemon(['--config', cfg, '--node', sn.addr, '--home', path.join(dir, 'da')]);
  t.after(() => withCreds.stop());
  const ok = await skopeoPull(withCreds.host, 'auth-ok', 'team/private');
  assert.equal(ok.code, 0, ok.stderr);
  assert.deepEqual((await skopeoPulledDigests(ok.out, TAG)).layers, digests.layers);
  assert.doesNotMatch(withCreds.stderr(), new RegExp(`${creds.password}|${basicAuth(creds).split(' ')[1]}`));

  const noCreds = await startDfdaemon(['--registry', priv.url, '--node', sn.addr, '--home', path.join(dir, 'dna')]);
  t.after(() => noCreds.stop());
  const res = await request(`${noCreds.url}/v2/team/private/manifests/${TAG}`);
  await res.body.dump();
  assert.equal(res.statusCode, 401);
  assert.match(String(res.headers['www-authenticate']), /^Basic/i);
  const blob = await request(`${noCreds.url}/v2/team/private/blobs/${digests.layers[0]}`);
  await blob.body.dump();
  assert.equal(blob.statusCode, 401);
  const fail = await skopeoPull(noCreds.host, 'auth-fail', 'team/private');
  assert.notEqual(fail.code, 0);
  assert.match(fail.stderr, /401|unauthorized|authentication required/i);
});

test('bad requests get 4xx in the registry error format', async (t) => {
  const d = await startDfdaemon(['--registry', registry.url, '--node', sn.addr, '--home', path.join(dir, 'dbad')]);
  t.after(() => d.stop());
  const cases: Array<[string, string]> = [
    [`/v2/${REPO}/blobs/sha256:nothex`, 'DIGEST_INVALID'],
    [`/v2/${REPO}/blobs/md5:abc`, 'DIGEST_INVALID'],
    ['/v2/team/../etc/blobs/sha256:' + 'a'.repeat(64), 'NAME_INVALID'],
    ['/v2/team/%2e%2e/app/manifests/v1', 'NAME_INVALID'],
    [`/v2/${REPO}/frobnicate/x`, 'UNSUPPORTED'],
    ['/v3/anything', 'UNSUPPORTED'],
  ];
  for (const [p, code] of cases) {
    // node:http sends the path as written (a URL object would resolve the "..").
    const { statusCode, body } = await rawGet(d.port, p);
    assert.ok(statusCode >= 400 && statusCode < 500, `${p}: HTTP ${statusCode}`);
    const parsed = JSON.parse(body) as { errors: Array<{ code: string; message: string }> };
    assert.equal(parsed.errors[0].code, code, `${p}: ${body}`);
  }
  const health = await request(`${d.url}/v2/`);
  await health.body.dump();
  assert.equal(health.statusCode, 200, 'dfdaemon did not survive the bad requests');
});
