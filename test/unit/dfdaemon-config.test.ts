import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { DfError } from '../../src/common/errors';
import { defaultConfig, loadConfig, parseConfigFile, redactConfig } from '../../src/dfdaemon/config';
import { tempDirSync } from '../helpers/tmp';

const ROOT = path.join(__dirname, '..', '..', '..');

/** loadConfig with an in-memory config file. */
function load(flags: Parameters<typeof loadConfig>[0], yaml?: string) {
  return loadConfig(yaml === undefined ? flags : { ...flags, config: 'dfdaemon.yml' }, { readFile: () => yaml ?? '' });
}

function assertDfError(fn: () => unknown, code: string, re?: RegExp): DfError {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof DfError, `expected a DfError, got ${String(caught)}`);
  assert.equal(caught.code, code);
  assert.ok(!caught.message.includes('\n'), 'message is one line');
  if (re) assert.match(caught.message, re);
  return caught;
}

test('defaults when nothing is given', () => {
  const c = loadConfig({});
  const d = defaultConfig();
  assert.equal(c.port, 65001);
  assert.equal(c.hostIp, '127.0.0.1');
  assert.equal(c.rateLimitBytesPerSec, 20 * 1024 * 1024);
  assert.equal(c.expireTimeMs, 3 * 60_000);
  assert.equal(c.registryMirror.remote, 'https://index.docker.io');
  assert.equal(c.registryMirror.insecure, false);
  assert.deepEqual(c.registryMirror.certs, []);
  assert.equal(c.registryMirror.auth, undefined);
  assert.deepEqual(c.supernodes, []);
  assert.deepEqual(c.proxies, []);
  assert.equal(c.homeDir, d.homeDir);
  assert.equal(c.verbose, false);
});

test('the file overrides defaults and flags override the file', () => {
  const yaml = [
    'port: 7000',
    'host_ip: 0.0.0.0',
    'ratelimit: 5M',
    'expiretime: 10m',
    'upload_rate: 6M',
    'supernodes: [a:8002, b]',
    'home: /srv/df',
    'verbose: true',
    'registry_mirror:',
    '  remote: https://reg.example.com/',
    '  insecure: true',
    'proxies:',
    '  - regx: "^/v2/x/"',
    '    direct: true',
    '  - regx: blobs',
  ].join('\n');
  const fromFile = load({}, yaml);
  assert.equal(fromFile.port, 7000);
  assert.equal(fromFile.hostIp, '0.0.0.0');
  assert.equal(fromFile.rateLimitBytesPerSec, 5 * 1024 * 1024);
  assert.equal(fromFile.expireTimeMs, 10 * 60_000);
  assert.equal(fromFile.uploadRateBytesPerSec, 6 * 1024 * 1024);
  assert.deepEqual(fromFile.supernodes, ['a:8002', 'b:8002']);
  assert.equal(fromFile.homeDir, '/srv/df');
  assert.equal(fromFile.verbose, true);
  assert.equal(fromFile.registryMirror.remote, 'https://reg.example.com');
  assert.equal(fromFile.registryMirror.insecure, true);
  assert.equal(fromFile.proxies.length, 2);
  assert.equal(fromFile.proxies[0].direct, true);
  assert.ok(fromFile.proxies[0].regx.test('/v2/x/blobs/sha256:00'));
  assert.equal(fromFile.proxies[1].direct, false, 'direct defaults to false');

  const both = load({ port: 65002, hostIp: '127.0.0.2', ratelimit: '1M', expiretime: '0', uploadRate: '5000000', node: 'c:9000', home: '/tmp/h', registry: 'http://127.0.0.1:5000' }, yaml);
  assert.equal(both.port, 65002);
  assert.equal(both.hostIp, '127.0.0.2');
  assert.equal(both.rateLimitBytesPerSec, 1024 * 1024);
  assert.equal(both.expireTimeMs, 0);
  assert.equal(both.uploadRateBytesPerSec, 5_000_000);
  assert.deepEqual(both.supernodes, ['c:9000']);
  assert.equal(both.homeDir, '/tmp/h');
  assert.equal(both.registryMirror.remote, 'http://127.0.0.1:5000');
  // Keys with no flag still come from the file.
  assert.equal(both.registryMirror.insecure, true);
  assert.equal(both.proxies.length, 2);
});

test('--node accepts repeated flags and comma lists', () => {
  assert.deepEqual(loadConfig({ node: ['a:1,b:2', 'c'] }).supernodes, ['a:1', 'b:2', 'c:8002']);
  assert.deepEqual(load({}, 'supernodes: "x:1,y:2"').supernodes, ['x:1', 'y:2']);
});

test('an empty file or empty keys mean defaults', () => {
  assert.equal(load({}, '').port, 65001);
  assert.equal(load({}, 'registry_mirror:\nproxies:\n').registryMirror.remote, 'https://index.docker.io');
});

test('unknown keys are DF_ERR_INVALID_CONFIG at any level', () => {
  assertDfError(() => load({}, 'prot: 1'), 'DF_ERR_INVALID_CONFIG', /dfdaemon\.yml: prot: unknown key/);
  assertDfError(() => load({}, 'registry_mirror:\n  remote: https://x\n  insecur: true'), 'DF_ERR_INVALID_CONFIG', /registry_mirror\.insecur: unknown key/);
  assertDfError(() => load({}, 'registry_mirror:\n  auth:\n    user: a\n    password: b'), 'DF_ERR_INVALID_CONFIG', /registry_mirror\.auth\.user: unknown key/);
  assertDfError(() => load({}, 'proxies:\n  - regx: a\n    use_https: true'), 'DF_ERR_INVALID_CONFIG', /proxies\[0\]\.use_https: unknown key/);
});

test('bad values in the file are DF_ERR_INVALID_CONFIG naming the key', () => {
  const cases: Array<[string, RegExp]> = [
    ['port: 70000', /port: expected a port number/],
    ['port: "80"', /port: expected a port number/],
    ['port: 1.5', /port: expected a port number/],
    ['host_ip: localhost', /host_ip: expected an IP address/],
    ['ratelimit: fast', /ratelimit: invalid rate/],
    ['ratelimit: 0', /ratelimit: .*greater than 0/],
    ['expiretime: soon', /expiretime: invalid duration/],
    ['upload_rate: 0', /upload_rate: .*greater than 0/],
    ['upload_rate: [1]', /upload_rate: expected a rate/],
    ['expiretime: [1]', /expiretime: expected a duration/],
    ['verbose: yes', /verbose: expected true or false/],
    ['supernodes: [1]', /supernodes: expected HOST:PORT/],
    ['supernodes: ["a:99999"]', /supernodes: .*port out of range/],
    ['registry_mirror:\n  remote: ftp://x', /registry_mirror\.remote: unsupported URL scheme "ftp"/],
    ['registry_mirror:\n  remote: not a url', /registry_mirror\.remote: invalid URL/],
    ['registry_mirror:\n  insecure: "true"', /registry_mirror\.insecure: expected true or false/],
    ['registry_mirror:\n  certs: /etc/ca.pem', /registry_mirror\.certs: expected a list/],
    ['registry_mirror:\n  certs: [/nonexistent/ca.pem]', /registry_mirror\.certs\[0\]: cannot read file/],
    ['registry_mirror: []', /registry_mirror: expected a mapping/],
    ['registry_mirror:\n  auth:\n    username: ""\n    password: x', /auth\.username: expected a non-empty string/],
    ['registry_mirror:\n  auth:\n    username: a\n    password: 5', /auth\.password: expected a string/],
    ['proxies: {regx: a}', /proxies: expected a list/],
    ['proxies:\n  - regx: "("', /proxies\[0\]\.regx: invalid regular expression/],
    ['proxies:\n  - direct: true', /proxies\[0\]\.regx: missing/],
    ['proxies:\n  - regx: a\n    direct: 1', /proxies\[0\]\.direct: expected true or false/],
    ['- 1\n- 2', /expected a mapping/],
    ['port: [', /invalid YAML at line/],
  ];
  for (const [yaml, re] of cases) assertDfError(() => load({}, yaml), 'DF_ERR_INVALID_CONFIG', re);
});

test('bad flags are DF_ERR_INVALID_ARGUMENT naming the flag', () => {
  assertDfError(() => loadConfig({ port: -1 }), 'DF_ERR_INVALID_ARGUMENT', /--port/);
  assertDfError(() => loadConfig({ port: Number.NaN }), 'DF_ERR_INVALID_ARGUMENT', /--port/);
  assertDfError(() => loadConfig({ hostIp: 'nope' }), 'DF_ERR_INVALID_ARGUMENT', /--host-ip/);
  assertDfError(() => loadConfig({ ratelimit: '20X' }), 'DF_ERR_INVALID_ARGUMENT', /--ratelimit/);
  assertDfError(() => loadConfig({ expiretime: '3 minutes' }), 'DF_ERR_INVALID_ARGUMENT', /--expiretime/);
  assertDfError(() => loadConfig({ uploadRate: 'fast' }), 'DF_ERR_INVALID_ARGUMENT', /--upload-rate/);
  assertDfError(() => loadConfig({ registry: 'file:///etc/passwd' }), 'DF_ERR_INVALID_ARGUMENT', /--registry/);
  assertDfError(() => loadConfig({ node: 'a b' }), 'DF_ERR_INVALID_ARGUMENT', /--node/);
});

test('credentials are refused in URLs and never echoed', () => {
  const e = assertDfError(() => loadConfig({ registry: 'https://user:s3cret@reg.example.com' }), 'DF_ERR_INVALID_ARGUMENT', /registry_mirror\.auth/);
  assert.ok(!e.message.includes('s3cret'));
  const f = assertDfError(() => load({}, 'registry_mirror:\n  remote: https://u:s3cret@x.example.com'), 'DF_ERR_INVALID_CONFIG');
  assert.ok(!f.message.includes('s3cret'));
  const g = assertDfError(() => load({}, 'registry_mirror:\n  auth:\n    username: a\n    password: 5'), 'DF_ERR_INVALID_CONFIG');
  assert.ok(!g.message.includes('5 '));
});

test('credentials over plain http need insecure: true', () => {
  const yaml = 'registry_mirror:\n  remote: http://reg.local:5000\n  auth:\n    username: u\n    password: p';
  assertDfError(() => load({}, yaml), 'DF_ERR_INVALID_CONFIG', /plain http/);
  const ok = load({}, `${yaml}\n  insecure: true`);
  assert.deepEqual(ok.registryMirror.auth, { username: 'u', password: 'p' });
  // A flag pointing an https file config at http trips the same check.
  assertDfError(() => load({ registry: 'http://other:5000' }, 'registry_mirror:\n  remote: https://r\n  auth:\n    username: u\n    password: p'),
    'DF_ERR_INVALID_CONFIG', /plain http/);
});

test('redactConfig hides credentials', () => {
  const c = load({}, 'registry_mirror:\n  auth:\n    username: alice\n    password: hunter2');
  const text = JSON.stringify(redactConfig(c));
  assert.ok(!text.includes('hunter2'));
  assert.ok(!text.includes('alice'));
  assert.match(text, /"credentials":"configured"/);
});

test('relative paths in the file resolve against its directory; missing file is a config error', () => {
  const dir = tempDirSync('dfdaemon-config-');
  writeFileSync(path.join(dir, 'ca.pem'), '-----BEGIN CERTIFICATE-----\n');
  const file = path.join(dir, 'dfdaemon.yml');
  writeFileSync(file, 'home: work\nregistry_mirror:\n  certs: [ca.pem]\n');
  const c = loadConfig({ config: file });
  assert.equal(c.homeDir, path.join(dir, 'work'));
  assert.deepEqual(c.registryMirror.certs, [path.join(dir, 'ca.pem')]);
  assertDfError(() => loadConfig({ config: path.join(dir, 'missing.yml') }), 'DF_ERR_INVALID_CONFIG', /cannot read config file .*ENOENT/);
});

test('examples/dfdaemon.yml is a valid config using every key', () => {
  const text = readFileSync(path.join(ROOT, 'examples', 'dfdaemon.yml'), 'utf8');
  const f = parseConfigFile(text, 'examples/dfdaemon.yml');
  for (const k of ['port', 'hostIp', 'homeDir', 'rateLimitBytesPerSec', 'expireTimeMs', 'supernodes', 'verbose', 'remote', 'insecure', 'certs', 'auth', 'proxies'] as const) {
    assert.notEqual(f[k], undefined, `example sets ${k}`);
  }
});
