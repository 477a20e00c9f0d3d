/**
 * Proves the registry e2e helpers work on this machine without dfdaemon: a real
 * docker-registry, an image built by umoci and pushed by skopeo, pulls by
 * skopeo and podman through the counting proxy used as a registries.conf
 * mirror, the proxy's corruption fault, and htpasswd auth.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import {
  basicAuth, blobPathRe, buildImage, makeTempDir, ociLayoutDigests, pushImage, registryDigests,
  skopeoCopyDirect, skopeoCopyViaMirror, skopeoPulledDigests, startCountingProxy, startRegistry,
  writeRegistriesConf,
} from '../helpers/registry';
import { podmanPullViaMirror, podmanPulledDigest } from '../helpers/podman';

const MiB = 1024 * 1024;

test('registry helpers: push, read digests, pull direct and through a mirror', async (t) => {
  const registry = await startRegistry();
  t.after(() => registry.close());
  const work = await makeTempDir('df-infra');
  t.after(() => rm(work, { recursive: true, force: true }));

  const image = await buildImage({ layers: 3, layerBytes: 1 * MiB, dir: work, tag: 'v1' });
  const built = await ociLayoutDigests(image.ociDir, 'v1');
  assert.equal(built.layers.length, 3);
  for (const size of built.layerSizes) assert.ok(size >= 1 * MiB, `layer of ${size} bytes is smaller than its random file`);

  await pushImage(image.ociDir, 'v1', registry.host, 'test/app');
  const pushed = await registryDigests(registry.url, 'test/app', 'v1');
  assert.deepEqual(pushed.layers, built.layers);
  assert.equal(pushed.config, built.config);
  assert.equal(pushed.manifestDigest, built.manifestDigest);

  await t.test('skopeo copy straight from the registry', async () => {
    const out = join(work, 'direct');
    const r = await skopeoCopyDirect(registry.host, 'test/app', 'v1', out);
    assert.equal(r.code, 0, r.stderr);
    const pulled = await skopeoPulledDigests(out, 'v1');
    assert.deepEqual(pulled.layers, pushed.layers);
    assert.equal(pulled.manifestDigest, pushed.manifestDigest);
  });

  const proxy = await startCountingProxy(registry.url);
  t.after(() => proxy.close());
  const conf = join(work, 'registries.conf');
  await writeRegistriesConf(conf, { registryHost: registry.host, mirrorHost: proxy.host });

  await t.test('skopeo copy through the counting proxy as a mirror', async () => {
    proxy.reset();
    const out = join(work, 'via-mirror');
    const r = await skopeoCopyViaMirror({ registriesConf: conf, registryHost: registry.host, repo: 'test/app', tag: 'v1', outDir: out });
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual((await skopeoPulledDigests(out, 'v1')).layers, pushed.layers);
    pushed.layers.forEach((digest, i) => {
      assert.equal(proxy.bytesFor(blobPathRe(digest)), pushed.layerSizes[i], `bytes sent for layer ${i}`);
    });
    assert.ok(proxy.requestsFor(/\/manifests\/v1$/).length >= 1);
  });

  await t.test('podman pull through the counting proxy as a mirror', async (tt) => {
    proxy.reset();
    const r = await podmanPullViaMirror({ registriesConf: conf, registryHost: registry.host, repo: 'test/app', tag: 'v1' });
    tt.after(() => r.store.close());
    assert.equal(r.code, 0, r.stderr);
    assert.equal(await podmanPulledDigest(r.ref, r.store), pushed.manifestDigest);
    for (const digest of pushed.layers) assert.ok(proxy.bytesFor(blobPathRe(digest)) > 0, `layer ${digest} not fetched via the mirror`);
  });

  await t.test('a corrupted blob (same length) is rejected by skopeo', async () => {
    proxy.reset();
    const victim = pushed.layers[1];
    proxy.faults.corruptBlob = (path) => blobPathRe(victim).test(path);
    try {
      const r = await skopeoCopyDirect(proxy.host, 'test/app', 'v1', join(work, 'corrupt'));
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, /digest/i);
      const hit = proxy.requestsFor(blobPathRe(victim), 'GET');
      assert.ok(hit.some((q) => q.fault === 'corrupt' && q.bytes === pushed.layerSizes[1]));
    } finally {
      proxy.faults.corruptBlob = undefined;
    }
  });
});

test('htpasswd registry: 401 without credentials, 200 with them', async (t) => {
  const creds = { user: 'alice', password: 's3cret-pw' };
  const registry = await startRegistry({ htpasswd: creds });
  t.after(() => registry.close());

  const anon = await fetch(`${registry.url}/v2/`);
  await anon.arrayBuffer();
  assert.equal(anon.status, 401);
  assert.match(anon.headers.get('www-authenticate') ?? '', /^Basic /);

  const wrong = await fetch(`${registry.url}/v2/`, { headers: { authorization: basicAuth({ user: 'alice', password: 'nope' }) } });
  await wrong.arrayBuffer();
  assert.equal(wrong.status, 401);

  const ok = await fetch(`${registry.url}/v2/`, { headers: { authorization: basicAuth(creds) } });
  await ok.arrayBuffer();
  assert.equal(ok.status, 200);

  const work = await makeTempDir('df-infra-auth');
  t.after(() => rm(work, { recursive: true, force: true }));
  const image = await buildImage({ layers: 1, layerBytes: 64 * 1024, dir: work, tag: 'v1' });
  await pushImage(image.ociDir, 'v1', registry.host, 'private/app', creds);
  const d = await registryDigests(registry.url, 'private/app', 'v1', creds);
  assert.deepEqual(d.layers, (await ociLayoutDigests(image.ociDir, 'v1')).layers);
  await assert.rejects(registryDigests(registry.url, 'private/app', 'v1'), /401/);
});
