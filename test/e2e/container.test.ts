/**
 * The container images (docker/*.Dockerfile), built and run with podman.
 *
 * No image registry is reachable here and the Node.js base image the tests
 * make from host files has no npm, so the images are built from the
 * `runtime-prebuilt` target over a context docker/build-context.sh assembles
 * from this checkout's compiled dist/. The default target (npm inside the
 * build) is built too, with the npm registry reached through
 * `podman build --network host`.
 *
 * Containers use the host network, so the host's dfget, the origin and the
 * fake registry on 127.0.0.1 are reachable from inside and vice versa.
 */
import { after, before, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chown, copyFile, cp, mkdir, readdir, realpath, rm, stat, writeFile } from 'node:fs/promises';
import * as http from 'node:http';
import * as net from 'node:net';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { metricValue } from '../../src/common/metrics';
import { makeRandomFile, sha256File, startOrigin, tempDir, type Origin } from '../helpers/origin';
import {
  createPodmanStore, hostHasPodman, makeNodeBaseImage, podmanCmd, podmanEnv, podmanGlobalArgs, podmanOk,
  type PodmanStore,
} from '../helpers/podman';
import { freePorts, runCli, stopUploader } from '../helpers/procs';
import { runOk } from '../helpers/registry';

const MiB = 1024 * 1024;
/** The repository root (this file runs from dist/test/e2e/). */
const REPO = path.resolve(__dirname, '..', '..', '..');
const SUPERNODE_DOCKERFILE = path.join(REPO, 'docker', 'supernode.Dockerfile');
const DFDAEMON_DOCKERFILE = path.join(REPO, 'docker', 'dfdaemon.Dockerfile');
const APP_UID = 1000;

const BASE = 'localhost/df-node-base:container-test';
const SUPERNODE_IMAGE = 'localhost/dragonfly-supernode:test';
const DFDAEMON_IMAGE = 'localhost/dragonfly-dfdaemon:test';


let store: PodmanStore;
let work: string;
let origin: Origin;

/**
 * Downloads a new random file of `size` bytes (origin name NAME.bin) with
 * dfget --notbs through the supernode on `port`, and checks its sha256.
 */
async function dfgetNewFile(t: TestContext, port: number, name: string, size: number): Promise<void> {
  const file = await makeRandomFile(path.join(work, 'origin'), `${name}.bin`, size);
  const out = path.join(work, `${name}.out`);
  const peerHome = path.join(work, `peer-${name}`);
  t.after(() => stopUploader(peerHome));
  const r = await runCli('dfget', ['--url', origin.url(`${name}.bin`), '-o', out, '--node', `127.0.0.1:${port}`,
    '--home', peerHome, '--notbs'], { timeoutMs: 60_000 });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(await sha256File(out), file.sha256);
}

before(async () => {
  // scripts/setup.sh installs podman: without it this is a broken set-up, not a reason to skip.
  assert.ok(hostHasPodman(), 'podman is not installed: run scripts/setup.sh');
  work = await tempDir('df-container-');
  store = await createPodmanStore();
  await mkdir(path.join(work, 'origin'));
  origin = await startOrigin(path.join(work, 'origin'));

  const ctx = path.join(work, 'context');
  await Promise.all([
    makeNodeBaseImage(BASE, { store, uid: APP_UID }),
    runOk('bash', [path.join(REPO, 'docker', 'build-context.sh'), '--no-build', ctx], { timeoutMs: 120_000 }),
  ]);
  // BUILD_IMAGE points at the local base as well, so that no builder ever
  // tries to pull node:20 even if it did not skip the unused npm stage.
  // --layers=false: with vfs every cached layer is a full copy of the rootfs.
  const build = (dockerfile: string, tag: string) => podmanOk([
    'build', '--layers=false', '--quiet', '--file', dockerfile, '--target', 'runtime-prebuilt',
    '--build-arg', `BASE_IMAGE=${BASE}`, '--build-arg', `BUILD_IMAGE=${BASE}`, '--tag', tag, ctx,
  ], { store, timeoutMs: 180_000 });
  await Promise.all([build(SUPERNODE_DOCKERFILE, SUPERNODE_IMAGE), build(DFDAEMON_DOCKERFILE, DFDAEMON_IMAGE)]);
});

after(async () => {
  await origin?.close();
  await store?.close();
  if (work) await rm(work, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------

test('supernode image: runs as uid 1000, keeps its cache on the mounted volume, serves a dfget on the host', async (t) => {
  const config = await imageConfig(SUPERNODE_IMAGE);
  assert.equal(config.User, `${APP_UID}:${APP_UID}`);
  assert.deepEqual(config.Entrypoint, ['node', '/app/dist/src/cli/supernode.js']);
  assert.ok(!config.Cmd || config.Cmd.length === 0, `the base image's CMD leaked: ${JSON.stringify(config.Cmd)}`);
  assert.deepEqual(Object.keys(config.ExposedPorts ?? {}).sort(), ['8001/tcp', '8002/tcp']);
  assert.deepEqual(Object.keys(config.Volumes ?? {}), ['/home/admin/supernode']);

  const home = await volumeDir('sn-home');
  const [port, downloadPort] = await freePorts(2);
  const name = await runContainer(t, 'df-sn-flags', SUPERNODE_IMAGE,
    ['--port', String(port), '--download-port', String(downloadPort), '--advertise-ip', '127.0.0.1'],
    ['--volume', `${home}:/home/admin/supernode`]);
  const ready = await waitReady(name);
  assert.equal(ready.port, port);
  assert.equal(ready.downloadPort, downloadPort);
  assert.equal(await httpText(`http://127.0.0.1:${downloadPort}/healthz`), 'ok');

  assert.equal(await execNode(name, 'process.stdout.write(String(process.getuid()))'), String(APP_UID));
  // The application files belong to root: the process cannot change them.
  assert.equal(await execNode(name, "try { require('fs').writeFileSync('/app/probe', ''); process.stdout.write('writable') } catch (e) { process.stdout.write(e.code) }"), 'EACCES');
  assert.equal(await execNode(name, "process.stdout.write(String(require('fs').existsSync('/app/node_modules/typescript')))"), 'false');

  const size = 6 * MiB + 12345;
  await dfgetNewFile(t, port, 'flags', size);
  assert.equal(origin.bytesFor('flags.bin'), size, 'the supernode fetched the source once');

  // The supernode (uid 1000) wrote its cache into the host directory.
  const written = await walk(home);
  const pieces = written.filter((f) => f.rel.startsWith(`repo${path.sep}`) && f.isFile);
  assert.ok(pieces.reduce((n, f) => n + f.size, 0) >= size, `cache on the volume: ${JSON.stringify(written.map((f) => f.rel))}`);
  assert.ok(written.some((f) => f.rel.startsWith(`meta${path.sep}`)), 'task metadata on the volume');
  for (const f of written) assert.equal(f.uid, APP_UID, `${f.rel} is owned by uid ${f.uid}`);

  // node is PID 1 and handles SIGTERM itself: podman stop is quick and clean.
  const started = Date.now();
  await podmanOk(['stop', '--time', '20', name], { store });
  assert.ok(Date.now() - started < 15_000, `stop took ${Date.now() - started} ms`);
  assert.equal((await podmanOk(['inspect', '--format', '{{.State.ExitCode}}', name], { store })).stdout.trim(), '0');
});

test('supernode image: Java-style -D properties after the image name, default home on an anonymous volume', async (t) => {
  const [port, downloadPort] = await freePorts(2);
  const name = await runContainer(t, 'df-sn-props', SUPERNODE_IMAGE, [
    '-Dsupernode.advertiseIp=127.0.0.1', `-Dserver.port=${port}`, `-Dsupernode.downloadPort=${downloadPort}`,
  ]);
  const ready = await waitReady(name);
  assert.equal(ready.port, port);
  assert.equal(ready.downloadPort, downloadPort);

  // With --notbs the file can only come from the supernode's piece server,
  // which peers reach at the advertised address.
  await dfgetNewFile(t, port, 'props', 3 * MiB);
  const listed = await execNode(name, "process.stdout.write(require('fs').readdirSync('/home/admin/supernode/repo').length > 0 ? 'cached' : 'empty')");
  assert.equal(listed, 'cached');
});

test('dfdaemon image: runs as uid 1000, answers /v2/ and serves a blob through the supernode container', async (t) => {
  const config = await imageConfig(DFDAEMON_IMAGE);
  assert.equal(config.User, `${APP_UID}:${APP_UID}`);
  assert.deepEqual(config.Entrypoint, ['dfdaemon']);
  assert.deepEqual(Object.keys(config.ExposedPorts ?? {}), ['65001/tcp']);
  assert.deepEqual(Object.keys(config.Volumes ?? {}), ['/home/admin/dfdaemon']);

  const help = await podmanCmd(['run', '--rm', '--network', 'host', DFDAEMON_IMAGE, '--help'], { store, timeoutMs: 60_000 });
  assert.equal(help.code, 0, help.stderr);
  assert.match(help.stdout, /--registry/);

  const registry = await startFakeRegistry();
  t.after(() => registry.close());
  const blob = randomBytes(5 * MiB + 7);
  const digest = registry.addBlob(blob);

  const sn = await runContainer(t, 'df-sn-for-dfdaemon', SUPERNODE_IMAGE,
    ['--port', '0', '--download-port', '0', '--advertise-ip', '127.0.0.1']);
  const snReady = await waitReady(sn);

  const home = await volumeDir('dfdaemon-home');
  const dd = await runContainer(t, 'df-dfdaemon', DFDAEMON_IMAGE, [
    '--port', '0', '--registry', registry.url, '--node', `127.0.0.1:${String(snReady.port)}`,
  ], ['--volume', `${home}:/home/admin/dfdaemon`]);
  const ddReady = await waitReady(dd);
  const mirror = `http://127.0.0.1:${String(ddReady.port)}`;
  assert.equal(await execNode(dd, 'process.stdout.write(String(process.getuid()))'), String(APP_UID));

  assert.equal((await httpText(`${mirror}/healthz`)).trim(), 'ok');
  const v2 = await fetch(`${mirror}/v2/`);
  assert.equal(v2.status, 200);
  assert.equal(v2.headers.get('docker-distribution-api-version'), 'registry/2.0');
  await v2.arrayBuffer();

  const res = await fetch(`${mirror}/v2/demo/app/blobs/${digest}`);
  assert.equal(res.status, 200);
  const got = Buffer.from(await res.arrayBuffer());
  assert.equal(got.length, blob.length);
  assert.equal(sha256(got), digest);

  const ddMetrics = await httpText(`${mirror}/metrics`);
  assert.equal(metricValue(ddMetrics, 'dragonfly_dfdaemon_blob_bytes_total', { via: 'p2p' }), blob.length);
  const snMetrics = await httpText(`http://127.0.0.1:${String(snReady.downloadPort)}/metrics`);
  assert.equal(metricValue(snMetrics, 'dragonfly_supernode_source_bytes_total'), blob.length);

  // The peer inside dfdaemon keeps its state in the mounted directory, as uid 1000.
  const written = await walk(home);
  assert.ok(written.length > 0, 'dfdaemon wrote nothing to its home volume');
  for (const f of written) assert.equal(f.uid, APP_UID, `${f.rel} is owned by uid ${f.uid}`);
});

test('default target: npm ci, build and prune inside the image', { timeout: 600_000 }, async (t) => {
  const buildImage = 'localhost/df-node-npm:container-test';
  await makeNpmImage(buildImage);
  const tag = 'localhost/dragonfly-supernode:npm-test';
  await podmanOk(['build', '--layers=false', '--quiet', '--network', 'host', '--file', SUPERNODE_DOCKERFILE,
    '--build-arg', `BASE_IMAGE=${BASE}`, '--build-arg', `BUILD_IMAGE=${buildImage}`, '--tag', tag, REPO],
  { store, timeoutMs: 540_000 });
  const name = await runContainer(t, 'df-sn-npm', tag, ['--port', '0', '--download-port', '0', '--advertise-ip', '127.0.0.1']);
  const ready = await waitReady(name);
  assert.equal(await httpText(`http://127.0.0.1:${String(ready.downloadPort)}/healthz`), 'ok');
  assert.equal(await execNode(name, "process.stdout.write(String(require('fs').existsSync('/app/node_modules/typescript')))"), 'false');
  assert.equal(await execNode(name, "process.stdout.write(String(require('fs').existsSync('/app/node_modules/yargs')))"), 'true');
});

// ---------------------------------------------------------------------------

interface ImageConfig {
  User?: string;
  Entrypoint?: string[];
  Cmd?: string[] | null;
  ExposedPorts?: Record<string, unknown>;
  Volumes?: Record<string, unknown>;
}

async function imageConfig(image: string): Promise<ImageConfig> {
  const r = await podmanOk(['image', 'inspect', '--format', '{{json .Config}}', image], { store });
  return JSON.parse(r.stdout) as ImageConfig;
}

/** Starts a detached container on the host network; it is removed when the test ends. */
async function runContainer(t: TestContext, name: string, image: string, args: string[], opts: string[] = []): Promise<string> {
  t.after(async () => {
    await podmanCmd(['rm', '--force', '--time', '5', name], { store, timeoutMs: 60_000 });
  });
  await podmanOk(['run', '--detach', '--name', name, '--network', 'host', ...opts, image, ...args], { store, timeoutMs: 60_000 });
  return name;
}

/**
 * Follows the container's output until the program prints its ready line
 * ({"ready":true,...} on stdout); rejects with the output when the container
 * stops first.
 */
async function waitReady(name: string, timeoutMs = 60_000): Promise<Record<string, unknown>> {
  const logs = spawn('podman', [...podmanGlobalArgs(store), 'logs', '--follow', name], {
    env: { ...process.env, ...podmanEnv(store) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  logs.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
  try {
    return await new Promise<Record<string, unknown>>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${name}: no ready line within ${timeoutMs} ms\n${stdout}${stderr}`)), timeoutMs);
      readline.createInterface({ input: logs.stdout }).on('line', (line) => {
        stdout += `${line}\n`;
        let v: unknown;
        try { v = JSON.parse(line); } catch { return; }
        if (v && typeof v === 'object' && (v as { ready?: unknown }).ready === true) {
          clearTimeout(timer);
          resolve(v as Record<string, unknown>);
        }
      });
      logs.once('error', (e) => { clearTimeout(timer); reject(e); });
      logs.once('close', (code) => {
        clearTimeout(timer);
        reject(new Error(`${name} stopped before it was ready (podman logs exited ${code})\n${stdout}${stderr}`));
      });
    });
  } finally {
    logs.kill();
  }
}

/** Runs `node -e code` inside the running container, as its user; resolves with stdout. */
async function execNode(name: string, code: string): Promise<string> {
  const r = await podmanOk(['exec', name, 'node', '-e', code], { store, timeoutMs: 30_000 });
  return r.stdout;
}

/**
 * A host directory to mount as a volume, owned by the image's user as a
 * deployment would prepare it (docker has no equivalent of podman's `:U`).
 */
async function volumeDir(nameHint: string): Promise<string> {
  const dir = path.join(work, nameHint);
  await mkdir(dir);
  await chown(dir, APP_UID, APP_UID);
  return dir;
}

async function httpText(url: string): Promise<string> {
  const res = await fetch(url);
  const body = await res.text();
  assert.equal(res.status, 200, `${url}: ${res.status} ${body}`);
  return body;
}

interface Walked { rel: string; isFile: boolean; size: number; uid: number }

async function walk(root: string): Promise<Walked[]> {
  const out: Walked[] = [];
  const visit = async (dir: string): Promise<void> => {
    for (const e of await readdir(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      const st = await stat(p);
      out.push({ rel: path.relative(root, p), isFile: st.isFile(), size: st.size, uid: st.uid });
      if (st.isDirectory()) await visit(p);
    }
  };
  await visit(root);
  return out;
}

function sha256(b: Buffer): string {
  return `sha256:${createHash('sha256').update(b).digest('hex')}`;
}

/** Just enough of a registry for dfdaemon: /v2/ and blobs by digest. */
async function startFakeRegistry(): Promise<{ url: string; addBlob: (b: Buffer) => string; close: () => Promise<void> }> {
  const blobs = new Map<string, Buffer>();
  const server = http.createServer((req, res) => {
    const p = new URL(req.url ?? '/', 'http://x').pathname;
    const headers = { 'docker-distribution-api-version': 'registry/2.0' };
    if (p === '/v2/') {
      res.writeHead(200, { ...headers, 'content-type': 'application/json', 'content-length': '2' });
      res.end(req.method === 'HEAD' ? undefined : '{}');
      return;
    }
    const m = /^\/v2\/.+\/blobs\/(sha256:[a-f0-9]{64})$/.exec(p);
    const blob = m ? blobs.get(m[1]) : undefined;
    if (!m || !blob) {
      const body = JSON.stringify({ errors: [{ code: m ? 'BLOB_UNKNOWN' : 'NAME_UNKNOWN', message: 'unknown' }] });
      res.writeHead(404, { ...headers, 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) });
      res.end(body);
      return;
    }
    res.writeHead(200, {
      ...headers, 'content-type': 'application/octet-stream', 'content-length': String(blob.length), 'docker-content-digest': m[1],
    });
    res.end(req.method === 'HEAD' ? undefined : blob);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const port = (server.address() as net.AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    addBlob: (b) => { const d = sha256(b); blobs.set(d, b); return d; },
    close: () => new Promise<void>((resolve) => { server.closeAllConnections(); server.close(() => resolve()); }),
  };
}

/**
 * BASE plus this host's npm, for the default (npm) target. Adds /usr/bin/env
 * (npm's and node-gyp-build's scripts start with `#!/usr/bin/env node`) and
 * passes on NODE_EXTRA_CA_CERTS, which a TLS-intercepting proxy needs.
 */
async function makeNpmImage(tag: string): Promise<void> {
  const ctx = path.join(work, 'npm-image');
  await mkdir(ctx);
  const npmCli = await realpath(path.join(path.dirname(await realpath(process.execPath)), 'npm'));
  const npmDir = path.resolve(path.dirname(npmCli), '..');
  await cp(npmDir, path.join(ctx, 'npm'), { recursive: true });
  await writeFile(path.join(ctx, 'npm.sh'), '#!/bin/sh\nexec node /usr/local/lib/node_modules/npm/bin/npm-cli.js "$@"\n', { mode: 0o755 });
  await copyFile('/usr/bin/env', path.join(ctx, 'env'));
  const lines = [
    `FROM ${BASE}`,
    'COPY npm /usr/local/lib/node_modules/npm',
    'COPY npm.sh /usr/local/bin/npm',
    'COPY env /usr/bin/env',
  ];
  const extraCa = process.env.NODE_EXTRA_CA_CERTS;
  if (extraCa && existsSync(extraCa)) {
    await copyFile(extraCa, path.join(ctx, 'extra-ca.pem'));
    lines.push('COPY extra-ca.pem /etc/ssl/extra-ca.pem', 'ENV NODE_EXTRA_CA_CERTS=/etc/ssl/extra-ca.pem');
  }
  await writeFile(path.join(ctx, 'Containerfile'), `${lines.join('\n')}\n`);
  await podmanOk(['build', '--layers=false', '--quiet', '--tag', tag, ctx], { store, timeoutMs: 120_000 });
}
