import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RegistryError } from '../../src/dfdaemon/registry-errors';
import { parseRoute, splitTarget, validateDigest, validateName } from '../../src/dfdaemon/routes';
import { ProxyRules } from '../../src/dfdaemon/proxy-rules';

const SHA = 'sha256:' + 'a'.repeat(64);

function rejects(path: string, status: number, code: string): void {
  assert.throws(() => parseRoute(path), (e: unknown) => {
    assert.ok(e instanceof RegistryError, `${path}: ${String(e)}`);
    assert.equal(e.status, status, path);
    assert.equal(e.code, code, path);
    return true;
  });
}

test('base, metrics and health paths', () => {
  assert.deepEqual(parseRoute('/v2/'), { kind: 'base' });
  assert.deepEqual(parseRoute('/v2'), { kind: 'base' });
  assert.deepEqual(parseRoute('/metrics'), { kind: 'metrics' });
  assert.deepEqual(parseRoute('/healthz'), { kind: 'healthz' });
  assert.deepEqual(parseRoute('/v2/_catalog'), { kind: 'catalog' });
});

test('manifests by tag and by digest', () => {
  assert.deepEqual(parseRoute('/v2/library/alpine/manifests/3.19'),
    { kind: 'manifest', name: 'library/alpine', reference: '3.19', isDigest: false, rest: '/manifests/3.19' });
  assert.deepEqual(parseRoute(`/v2/alpine/manifests/${SHA}`),
    { kind: 'manifest', name: 'alpine', reference: SHA, isDigest: true, rest: `/manifests/${SHA}` });
  assert.equal((parseRoute('/v2/a/manifests/latest') as { name: string }).name, 'a');
});

test('blobs, and names that contain API words', () => {
  assert.deepEqual(parseRoute(`/v2/team/app/blobs/${SHA}`), { kind: 'blob', name: 'team/app', digest: SHA, rest: `/blobs/${SHA}` });
  // A repository may be called "blobs" or "manifests": the last one is the API word.
  assert.deepEqual(parseRoute(`/v2/x/blobs/blobs/${SHA}`), { kind: 'blob', name: 'x/blobs', digest: SHA, rest: `/blobs/${SHA}` });
  assert.equal((parseRoute('/v2/manifests/manifests/v1') as { name: string }).name, 'manifests');
  const sha512 = 'sha512:' + 'b'.repeat(128);
  assert.equal((parseRoute(`/v2/a/blobs/${sha512}`) as { digest: string }).digest, sha512);
});

test('other API paths pass through', () => {
  assert.deepEqual(parseRoute('/v2/a/b/tags/list'), { kind: 'passthrough', name: 'a/b', rest: '/tags/list' });
  assert.deepEqual(parseRoute('/v2/a/blobs/uploads/'), { kind: 'passthrough', name: 'a', rest: '/blobs/uploads/' });
  assert.deepEqual(parseRoute('/v2/a/blobs/uploads/0f3c-11'), { kind: 'passthrough', name: 'a', rest: '/blobs/uploads/0f3c-11' });
  assert.deepEqual(parseRoute(`/v2/a/referrers/${SHA}`), { kind: 'passthrough', name: 'a', rest: `/referrers/${SHA}` });
});

test('names with traversal or bad characters are NAME_INVALID', () => {
  rejects('/v2/../etc/manifests/latest', 400, 'NAME_INVALID');
  rejects('/v2/a/../b/manifests/latest', 400, 'NAME_INVALID');
  rejects(`/v2/a/%2e%2e/b/blobs/${SHA}`, 400, 'NAME_INVALID');
  rejects('/v2/Alpine/manifests/latest', 400, 'NAME_INVALID');
  rejects('/v2/a//b/manifests/latest', 400, 'NAME_INVALID');
  rejects('/v2/-a/manifests/latest', 400, 'NAME_INVALID');
  rejects('/v2/a./manifests/latest', 400, 'NAME_INVALID');
  rejects('/v2/a___b/manifests/latest', 400, 'NAME_INVALID');
  rejects(`/v2/${'a'.repeat(256)}/manifests/latest`, 400, 'NAME_INVALID');
  rejects('/v2/a/b/tags/list/../x/tags/list', 400, 'NAME_INVALID');
});

test('name grammar accepts the separators distribution allows', () => {
  for (const n of ['a', 'a0/b1', 'my-app', 'my--app', 'my_app', 'my__app', 'my.app', 'a/b/c/d']) assert.equal(validateName(n), n);
  // Long hostile input is rejected quickly (no catastrophic backtracking).
  const started = performance.now();
  assert.throws(() => validateName('a-'.repeat(120) + '!'));
  assert.ok(performance.now() - started < 100);
});

test('bad digests are DIGEST_INVALID, bad tags TAG_INVALID', () => {
  rejects('/v2/a/blobs/sha256:xyz', 400, 'DIGEST_INVALID');
  rejects(`/v2/a/blobs/sha256:${'A'.repeat(64)}`, 400, 'DIGEST_INVALID');
  rejects(`/v2/a/blobs/sha256:${'a'.repeat(63)}`, 400, 'DIGEST_INVALID');
  rejects(`/v2/a/blobs/md5:${'a'.repeat(32)}`, 400, 'DIGEST_INVALID');
  rejects('/v2/a/blobs/latest', 400, 'DIGEST_INVALID');
  rejects('/v2/a/manifests/sha256:00', 400, 'DIGEST_INVALID');
  rejects(`/v2/a/referrers/nope`, 400, 'DIGEST_INVALID');
  rejects('/v2/a/manifests/.hidden', 400, 'TAG_INVALID');
  rejects(`/v2/a/manifests/${'t'.repeat(129)}`, 400, 'TAG_INVALID');
  assert.equal(validateDigest(SHA).algorithm, 'sha256');
});

test('unknown paths are 404 UNSUPPORTED', () => {
  rejects('/', 404, 'UNSUPPORTED');
  rejects('/v1/search', 404, 'UNSUPPORTED');
  rejects('/v2/a/bogus', 404, 'UNSUPPORTED');
  rejects('/v2/a/manifests/', 404, 'UNSUPPORTED');
  rejects(`/v2/a/blobs/${SHA}/extra`, 404, 'UNSUPPORTED');
  rejects('/v20/', 404, 'UNSUPPORTED');
});

test('splitTarget keeps the query raw', () => {
  assert.deepEqual(splitTarget('/v2/a/manifests/x?ns=docker.io'), { path: '/v2/a/manifests/x', query: '?ns=docker.io' });
  assert.deepEqual(splitTarget('/v2/'), { path: '/v2/', query: '' });
});

test('proxy rules: first match wins, default is P2P', () => {
  const rules = new ProxyRules([
    { regx: /^\/v2\/team\/public\//, direct: false },
    { regx: /^\/v2\/team\//, direct: true },
  ]);
  assert.equal(rules.viaForBlob(`/v2/team/public/x/blobs/${SHA}`), 'p2p');
  assert.equal(rules.viaForBlob(`/v2/team/x/blobs/${SHA}`), 'direct');
  assert.equal(rules.viaForBlob(`/v2/other/blobs/${SHA}`), 'p2p');
  assert.equal(new ProxyRules([]).viaForBlob('/v2/x/blobs/y'), 'p2p');
  const sticky = new ProxyRules([{ regx: /blobs/g, direct: true }]);
  assert.equal(sticky.viaForBlob('/v2/x/blobs/y'), 'direct');
  assert.equal(sticky.viaForBlob('/v2/x/blobs/y'), 'direct', 'a /g regex does not alternate');
});
