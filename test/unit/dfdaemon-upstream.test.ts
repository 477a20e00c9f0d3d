import { test } from 'node:test';
import assert from 'node:assert/strict';
import { silentLogger } from '../../src/common/logger';
import { retryAfterMs, Upstream } from '../../src/dfdaemon/upstream';
import { parseChallenge, pullScope } from '../../src/dfdaemon/upstream-auth';

const SHA = 'sha256:' + 'c'.repeat(64);

function upstream(remote: string): Upstream {
  return new Upstream({ mirror: { remote, insecure: false, certs: [] }, logger: silentLogger() });
}

test('Docker Hub: index.docker.io maps to registry-1.docker.io and one-word names get library/', async (t) => {
  for (const remote of ['https://index.docker.io', 'https://registry-1.docker.io', 'https://docker.io']) {
    const u = upstream(remote);
    t.after(() => u.close());
    assert.equal(u.isDockerHub, true);
    assert.equal(u.apiBase, 'https://registry-1.docker.io');
    assert.equal(u.repoName('alpine'), 'library/alpine');
    assert.equal(u.repoName('library/alpine'), 'library/alpine');
    assert.equal(u.repoName('bitnami/redis'), 'bitnami/redis');
    assert.equal(u.blobUrl('alpine', SHA), `https://registry-1.docker.io/v2/library/alpine/blobs/${SHA}`);
  }
});

test('other registries keep names as they are, path prefixes are kept', async (t) => {
  const u = upstream('http://127.0.0.1:5000');
  t.after(() => u.close());
  assert.equal(u.isDockerHub, false);
  assert.equal(u.repoName('alpine'), 'alpine');
  assert.equal(u.blobUrl('alpine', SHA), `http://127.0.0.1:5000/v2/alpine/blobs/${SHA}`);
  const p = upstream('https://mirror.example.com/prefix');
  t.after(() => p.close());
  assert.equal(p.url('/v2/'), 'https://mirror.example.com/prefix/v2/');
});

test('parses WWW-Authenticate challenges', () => {
  assert.deepEqual(parseChallenge('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull"'), {
    scheme: 'bearer',
    params: { realm: 'https://auth.docker.io/token', service: 'registry.docker.io', scope: 'repository:library/alpine:pull' },
  });
  assert.deepEqual(parseChallenge('Basic realm="Registry Realm"'), { scheme: 'basic', params: { realm: 'Registry Realm' } });
  assert.deepEqual(parseChallenge('Bearer realm=https://a/token, service=x'), { scheme: 'bearer', params: { realm: 'https://a/token', service: 'x' } });
  assert.deepEqual(parseChallenge('Bearer realm="a\\"b"'), { scheme: 'bearer', params: { realm: 'a"b' } });
  assert.equal(parseChallenge(undefined), undefined);
  assert.equal(parseChallenge(''), undefined);
  assert.equal(pullScope('library/alpine'), 'repository:library/alpine:pull');
});

test('Retry-After: delta-seconds or an HTTP date; anything else is ignored', () => {
  assert.equal(retryAfterMs('5'), 5000);
  assert.equal(retryAfterMs(' 0 '), 0);
  const inTen = retryAfterMs(new Date(Date.now() + 10_000).toUTCString())!;
  assert.ok(inTen > 8_000 && inTen <= 10_000, String(inTen));
  assert.equal(retryAfterMs(new Date(Date.now() - 60_000).toUTCString()), 0);
  assert.equal(retryAfterMs('soon'), undefined);
  assert.equal(retryAfterMs(undefined), undefined);
});
