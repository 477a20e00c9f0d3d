/**
 * End-to-end helpers around real registry tooling: Debian's `docker-registry`
 * (the CNCF distribution registry v2), a counting and fault-injecting HTTP
 * proxy, `umoci` to build test images, `skopeo` to push and copy them, and
 * `registries.conf` files that route pulls through a mirror.
 *
 * Everything that creates something returns (or is owned by) an object with an
 * idempotent close(); tests register `t.after(() => x.close())` right where
 * they create it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createWriteStream } from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { tempDir } from './tmp';

// Podman-based pulls live beside the other podman helpers; re-exported here so
// a mirror test can import every client helper from one place.
export { podmanPullViaMirror, podmanPulledDigest } from './podman';

// ---------------------------------------------------------------------------
// Processes and temp dirs
// ---------------------------------------------------------------------------

export interface RunResult {
  /** Exit code, or null when the process was killed by a signal. */
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  cwd?: string;
  /** Merged over process.env. */
  env?: NodeJS.ProcessEnv;
  /** Written to stdin, which is then closed. */
  input?: string | Buffer;
  /** Kill (SIGKILL) after this long. Default 120 s. */
  timeoutMs?: number;
}

/** Runs a command to completion and collects its output. Never rejects on a non-zero exit. */
export function run(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      cwd: opts.cwd,
      env: opts.env ? { ...process.env, ...opts.env } : process.env,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 120_000);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') });
    });
    child.stdin.on('error', () => { /* the child may exit without reading stdin */ });
    child.stdin.end(opts.input ?? '');
  });
}

/** Like run() but rejects with the command line and its stderr when the exit code is not 0. */
export async function runOk(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) {
    throw new Error(`${cmd} ${args.join(' ')} exited with ${r.code ?? r.signal}\n${r.stderr.trim() || r.stdout.trim()}`);
  }
  return r;
}

/** A fresh directory under os.tmpdir(), removed when the test process exits. */
export function makeTempDir(prefix: string): Promise<string> {
  return tempDir(`${prefix}-`);
}

// Children still running when the test process exits (a test that failed before
// its teardown ran) are killed so they never outlive the test runner.
const liveChildren = new Set<ChildProcess>();
let exitHookInstalled = false;
function track(child: ChildProcess): void {
  liveChildren.add(child);
  child.once('exit', () => liveChildren.delete(child));
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.once('exit', () => {
      for (const c of liveChildren) c.kill('SIGKILL');
    });
  }
}

/** SIGTERM, then SIGKILL if the process has not exited after graceMs. Resolves once it has exited. */
export async function stopChild(child: ChildProcess, graceMs = 5_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  try {
    await exited;
  } finally {
    clearTimeout(timer);
  }
}

// ---------------------------------------------------------------------------
// Registry
// ---------------------------------------------------------------------------

export interface Creds { user: string; password: string }

export interface RegistryOptions {
  /** Require HTTP basic auth with this user (htpasswd file made with `htpasswd -Bbn`). */
  htpasswd?: Creds;
  /** Max time to wait for the registry to answer GET /v2/. Default 20 s. */
  readyTimeoutMs?: number;
}

export interface Registry {
  /** http://127.0.0.1:PORT */
  url: string;
  /** 127.0.0.1:PORT, as image references and registries.conf want it. */
  host: string;
  port: number;
  /** Temp dir holding config.yml, htpasswd and the storage (data/). */
  dir: string;
  /** The credentials the registry requires, if any. */
  creds?: Creds;
  /** The registry's log output so far (stderr; last ~256 KiB). */
  log(): string;
  /** Stops the registry and removes its dir. Idempotent. */
  close(): Promise<void>;
}

const LISTENING_RE = /listening on (?:\[?[0-9a-fA-F.:]*\]?):(\d+)/;
const LOG_KEEP_CHARS = 256 * 1024;

/**
 * Starts `docker-registry serve config.yml` on 127.0.0.1 with a port the kernel
 * picks (the registry logs "listening on 127.0.0.1:PORT", which we parse, so
 * there is no race for a port), filesystem storage in a temp dir and delete
 * enabled. Resolves once GET /v2/ answers 200 (401 with auth).
 */
export async function startRegistry(opts: RegistryOptions = {}): Promise<Registry> {
  const dir = await makeTempDir('df-registry');
  try {
    const config: Record<string, unknown> = {
      version: '0.1',
      log: { level: 'info', formatter: 'text', accesslog: { disabled: true } },
      storage: {
        filesystem: { rootdirectory: join(dir, 'data') },
        delete: { enabled: true },
        // No background upload purging during a test.
        maintenance: { uploadpurging: { enabled: false } },
      },
      http: {
        addr: '127.0.0.1:0',
        secret: randomBytes(16).toString('hex'),
        headers: { 'X-Content-Type-Options': ['nosniff'] },
      },
    };
    if (opts.htpasswd) {
      const r = await runOk('htpasswd', ['-Bbn', opts.htpasswd.user, opts.htpasswd.password]);
      const file = join(dir, 'htpasswd');
      await writeFile(file, r.stdout.trim() + '\n');
      config.auth = { htpasswd: { realm: 'df-test-registry', path: file } };
    }
    // JSON is valid YAML, and the registry reads YAML.
    const configPath = join(dir, 'config.yml');
    await writeFile(configPath, JSON.stringify(config, null, 2));

    const child = spawn('docker-registry', ['serve', configPath], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
    track(child);
    let log = '';
    const onLog = (b: Buffer): void => {
      log += b.toString('utf8');
      if (log.length > LOG_KEEP_CHARS * 2) log = log.slice(-LOG_KEEP_CHARS);
    };
    // Keep draining both pipes for the registry's whole life: a full pipe would block it.
    child.stdout.on('data', onLog);
    child.stderr.on('data', onLog);

    let closed = false;
    const close = async (): Promise<void> => {
      if (closed) return;
      closed = true;
      await stopChild(child);
      await rm(dir, { recursive: true, force: true });
    };

    try {
      const port = await new Promise<number>((resolve, reject) => {
        const cleanup = (): void => {
          child.stdout.off('data', check);
          child.stderr.off('data', check);
          child.off('exit', onExit);
          child.off('error', onError);
        };
        const check = (): void => {
          const m = LISTENING_RE.exec(log);
          if (m) {
            cleanup();
            resolve(Number(m[1]));
          }
        };
        const onExit = (code: number | null): void => {
          cleanup();
          reject(new Error(`docker-registry exited (${code}) before listening:\n${log}`));
        };
        const onError = (e: Error): void => {
          cleanup();
          reject(e);
        };
        child.stdout.on('data', check);
        child.stderr.on('data', check);
        child.once('exit', onExit);
        child.once('error', onError);
      });
      const host = `127.0.0.1:${port}`;
      const url = `http://${host}`;
      await waitForV2(url, opts.htpasswd ? 401 : 200, opts.readyTimeoutMs ?? 20_000, () => log);
      return { url, host, port, dir, creds: opts.htpasswd, log: () => log, close };
    } catch (e) {
      await close();
      throw e;
    }
  } catch (e) {
    await rm(dir, { recursive: true, force: true });
    throw e;
  }
}

// The registry gives no readiness signal beyond its log line, so poll /v2/
// briefly; the listener is already bound by then, so the first try nearly
// always succeeds.
async function waitForV2(url: string, expect: number, timeoutMs: number, log: () => string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  for (;;) {
    try {
      const res = await fetch(`${url}/v2/`, { signal: AbortSignal.timeout(2_000) });
      await res.arrayBuffer();
      if (res.status === expect) return;
      last = `status ${res.status}`;
    } catch (e) {
      last = (e as Error).message;
    }
    if (Date.now() > deadline) throw new Error(`registry at ${url} not ready after ${timeoutMs} ms (${last}):\n${log()}`);
    await delay(50);
  }
}

// ---------------------------------------------------------------------------
// Counting / fault-injecting proxy
// ---------------------------------------------------------------------------

export interface ProxiedRequest {
  method: string;
  /** Path without the query string. */
  path: string;
  /** Path with the query string, as received. */
  url: string;
  /** Range header of the request, if any. */
  range?: string;
  status: number;
  /** Response body bytes sent to the client. */
  bytes: number;
  /** Which fault, if any, was applied to this response. */
  fault?: 'corrupt' | 'status' | 'truncate';
  /** The client went away (or the upstream failed) before the body was complete. */
  aborted?: boolean;
}

/**
 * Faults applied to blob GETs (paths /v2/<repo>/blobs/<digest>). Each is read at
 * request time, so a test can switch them on and off while the proxy runs.
 */
export interface ProxyFaults {
  /** Flip every bit of the first body byte (length unchanged, so only a digest check catches it). */
  corruptBlob?: (path: string) => boolean;
  /** Answer with this HTTP status (and no body) instead of forwarding; undefined = forward. */
  blobStatus?: (path: string) => number | undefined;
  /** Send only this many body bytes, then destroy the connection; undefined = send all. */
  truncateBlob?: (path: string) => number | undefined;
}

export interface CountingProxy {
  /** http://127.0.0.1:PORT */
  url: string;
  /** 127.0.0.1:PORT */
  host: string;
  port: number;
  /** Mutable: change faults at run time. */
  faults: ProxyFaults;
  /** Every completed request, in completion order. */
  requests: ProxiedRequest[];
  /** Sum of response body bytes over requests whose path matches. */
  bytesFor(pathRegex: RegExp): number;
  /** Requests whose path matches (and method, if given). */
  requestsFor(pathRegex: RegExp, method?: string): ProxiedRequest[];
  /** Forget the recorded requests. */
  reset(): void;
  /** Idempotent. */
  close(): Promise<void>;
}

export const BLOB_PATH_RE = /^\/v2\/.+\/blobs\/sha256:[a-f0-9]{64}$/;

/** A blob path regex for one digest (any repo). */
export function blobPathRe(digest: string): RegExp {
  return new RegExp(`^/v2/.+/blobs/${digest.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`);
}

/**
 * A tiny HTTP reverse proxy on 127.0.0.1:0 in front of targetUrl (normally a
 * registry). It forwards every request unchanged (including the Host header,
 * so the registry's upload Location URLs point back at the proxy), counts the
 * response body bytes it sends per request, and can inject faults into blob
 * GETs.
 */
export async function startCountingProxy(targetUrl: string, initialFaults: ProxyFaults = {}): Promise<CountingProxy> {
  const target = new URL(targetUrl);
  const agent = new http.Agent({ keepAlive: true });
  const requests: ProxiedRequest[] = [];
  const faults: ProxyFaults = { ...initialFaults };

  const server = http.createServer((req, res) => {
    const url = req.url ?? '/';
    const path = url.split('?')[0];
    const method = req.method ?? 'GET';
    const isBlobGet = method === 'GET' && BLOB_PATH_RE.test(path);
    const rec: ProxiedRequest = { method, path, url, status: 0, bytes: 0 };
    if (typeof req.headers.range === 'string') rec.range = req.headers.range;
    // Recorded as soon as the body is fully handed to the socket (so a test
    // that awaited its client sees the count), or when the exchange ends early.
    let recorded = false;
    const record = (): void => {
      if (recorded) return;
      recorded = true;
      requests.push(rec);
    };

    const failStatus = isBlobGet ? faults.blobStatus?.(path) : undefined;
    if (failStatus !== undefined) {
      rec.fault = 'status';
      rec.status = failStatus;
      req.resume();
      res.writeHead(failStatus, { 'content-length': '0' });
      res.end();
      record();
      return;
    }
    const corrupt = isBlobGet && faults.corruptBlob?.(path) === true;
    const truncateAt = isBlobGet ? faults.truncateBlob?.(path) : undefined;

    const upstream = http.request({
      protocol: target.protocol,
      hostname: target.hostname,
      port: target.port,
      method,
      path: url,
      headers: req.headers,
      agent,
    }, (up) => {
      rec.status = up.statusCode ?? 0;
      res.writeHead(rec.status, up.statusMessage, up.rawHeaders);
      let flipped = false;
      up.on('data', (chunk: Buffer) => {
        let out = chunk;
        if (corrupt && !flipped && out.length > 0 && rec.status >= 200 && rec.status < 300) {
          out = Buffer.from(out);
          out[0] ^= 0xff;
          flipped = true;
          rec.fault = 'corrupt';
        }
        if (truncateAt !== undefined && rec.bytes + out.length >= truncateAt) {
          const part = out.subarray(0, Math.max(0, truncateAt - rec.bytes));
          rec.bytes += part.length;
          rec.fault = 'truncate';
          up.destroy();
          // Flush what we were allowed to send, then cut the connection.
          res.write(part, () => res.destroy());
          record();
          return;
        }
        rec.bytes += out.length;
        if (!res.write(out)) {
          up.pause();
          res.once('drain', () => up.resume());
        }
      });
      up.on('end', () => {
        if (rec.fault === 'truncate') return;
        res.end();
        record();
      });
      up.on('error', () => res.destroy());
    });
    upstream.on('error', (e) => {
      if (recorded || rec.fault === 'truncate') return;
      if (!res.headersSent) {
        rec.status = 502;
        res.writeHead(502, { 'content-type': 'text/plain' });
        res.end(`proxy: upstream error: ${e.message}\n`);
        record();
      } else {
        rec.aborted = true;
        res.destroy();
      }
    });
    res.on('close', () => {
      if (!res.writableFinished) {
        if (!rec.fault) rec.aborted = true;
        upstream.destroy();
      }
      record();
    });
    req.pipe(upstream);
  });

  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as AddressInfo).port;
  const host = `127.0.0.1:${port}`;
  let closed = false;
  return {
    url: `http://${host}`,
    host,
    port,
    faults,
    requests,
    bytesFor: (re) => requests.filter((r) => re.test(r.path)).reduce((n, r) => n + r.bytes, 0),
    requestsFor: (re, m) => requests.filter((r) => re.test(r.path) && (m === undefined || r.method === m)),
    reset: () => { requests.length = 0; },
    close: async () => {
      if (closed) return;
      closed = true;
      const done = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      agent.destroy();
      await done;
    },
  };
}

// ---------------------------------------------------------------------------
// Images: build with umoci, push with skopeo, read back digests
// ---------------------------------------------------------------------------

export interface BuildImageOptions {
  /** Number of layers, each holding one file of random bytes. Default 3. */
  layers?: number;
  /** Size of each layer's file. Default 14 MiB (3 x 14 MiB = 42 MiB). */
  layerBytes?: number;
  /** Parent dir; the layout goes to DIR/oci. */
  dir: string;
  /** Default "latest". */
  tag?: string;
}

export interface BuiltImage {
  /** The OCI image layout directory. */
  ociDir: string;
  tag: string;
  /** "oci:DIR:TAG", a skopeo/podman transport reference. */
  ref: string;
}

/**
 * Builds an OCI image layout with umoci: `layers` layers, each adding one file
 * of `layerBytes` random (incompressible) bytes, so each compressed layer blob
 * is at least layerBytes long and every build has fresh digests.
 */
export async function buildImage(opts: BuildImageOptions): Promise<BuiltImage> {
  const layers = opts.layers ?? 3;
  const layerBytes = opts.layerBytes ?? 14 * 1024 * 1024;
  const tag = opts.tag ?? 'latest';
  const ociDir = join(opts.dir, 'oci');
  const bundle = join(opts.dir, `bundle-${randomBytes(4).toString('hex')}`);
  const image = `${ociDir}:${tag}`;
  const rootless = typeof process.getuid === 'function' && process.getuid() !== 0 ? ['--rootless'] : [];

  await mkdir(opts.dir, { recursive: true });
  await runOk('umoci', ['init', '--layout', ociDir]);
  await runOk('umoci', ['new', '--image', image]);
  await runOk('umoci', ['unpack', ...rootless, '--image', image, bundle]);
  try {
    for (let i = 0; i < layers; i++) {
      await writeRandomFile(join(bundle, 'rootfs', `layer-${i}.bin`), layerBytes);
      // --refresh-bundle updates the bundle's mtree so the next repack only
      // contains the next file: no need to unpack again between layers.
      await runOk('umoci', ['repack', '--refresh-bundle', '--history.created_by', `test layer ${i}`, '--image', image, bundle]);
    }
  } finally {
    await rm(bundle, { recursive: true, force: true });
  }
  return { ociDir, tag, ref: `oci:${image}` };
}

async function writeRandomFile(path: string, size: number): Promise<void> {
  const out = createWriteStream(path);
  const chunk = 1024 * 1024;
  for (let left = size; left > 0; left -= chunk) {
    if (!out.write(randomBytes(Math.min(chunk, left)))) await once(out, 'drain');
  }
  out.end();
  await once(out, 'finish');
}

/** The digests of an image in an OCI layout (oci:DIR:TAG). */
export async function ociLayoutDigests(ociDir: string, tag: string): Promise<ImageDigests> {
  const index = JSON.parse(await readFile(join(ociDir, 'index.json'), 'utf8')) as OciIndex;
  const entry = index.manifests.find((m) => m.annotations?.['org.opencontainers.image.ref.name'] === tag)
    ?? (index.manifests.length === 1 ? index.manifests[0] : undefined);
  if (!entry) throw new Error(`no manifest tagged "${tag}" in ${ociDir}/index.json`);
  const raw = await readFile(join(ociDir, 'blobs', ...entry.digest.split(':')));
  return digestsFromManifest(raw, entry.digest);
}

/** `skopeo copy` the layout to docker://HOST/REPO:TAG over plain HTTP. */
export async function pushImage(ociDir: string, tag: string, registryHost: string, repo: string, creds?: Creds): Promise<void> {
  const args = ['--insecure-policy', 'copy', '--quiet', '--dest-tls-verify=false'];
  if (creds) args.push('--dest-creds', `${creds.user}:${creds.password}`);
  args.push(`oci:${ociDir}:${tag}`, `docker://${registryHost}/${repo}:${tag}`);
  await runOk('skopeo', args);
}

export interface ImageDigests {
  /** sha256 of the manifest bytes as served. */
  manifestDigest: string;
  mediaType: string;
  config: string;
  /** Layer blob digests, in manifest order. */
  layers: string[];
  /** Layer blob sizes, in manifest order. */
  layerSizes: number[];
}

interface OciIndex { manifests: Array<{ digest: string; annotations?: Record<string, string> }> }
interface ImageManifest {
  mediaType?: string;
  config: { digest: string };
  layers: Array<{ digest: string; size: number }>;
}

export const MANIFEST_ACCEPT = [
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.v2+json',
].join(', ');

function digestsFromManifest(raw: Buffer, expectedDigest?: string): ImageDigests {
  const manifestDigest = `sha256:${createHash('sha256').update(raw).digest('hex')}`;
  if (expectedDigest && expectedDigest !== manifestDigest) {
    throw new Error(`manifest digest ${manifestDigest} does not match ${expectedDigest}`);
  }
  const m = JSON.parse(raw.toString('utf8')) as ImageManifest;
  if (!m.config || !Array.isArray(m.layers)) throw new Error('not an image manifest (an index or list?)');
  return {
    manifestDigest,
    mediaType: m.mediaType ?? 'application/vnd.oci.image.manifest.v1+json',
    config: m.config.digest,
    layers: m.layers.map((l) => l.digest),
    layerSizes: m.layers.map((l) => l.size),
  };
}

export function basicAuth(creds: Creds): string {
  return `Basic ${Buffer.from(`${creds.user}:${creds.password}`).toString('base64')}`;
}

/** GETs the manifest of REPO:TAG (OCI or docker v2 schema 2) and returns its digests. */
export async function registryDigests(registryUrl: string, repo: string, tag: string, creds?: Creds): Promise<ImageDigests> {
  const headers: Record<string, string> = { accept: MANIFEST_ACCEPT };
  if (creds) headers.authorization = basicAuth(creds);
  const res = await fetch(`${registryUrl}/v2/${repo}/manifests/${tag}`, { headers });
  const raw = Buffer.from(await res.arrayBuffer());
  if (res.status !== 200) throw new Error(`GET manifest ${repo}:${tag}: HTTP ${res.status} ${raw.toString('utf8').slice(0, 300)}`);
  const d = digestsFromManifest(raw, res.headers.get('docker-content-digest') ?? undefined);
  const ct = res.headers.get('content-type');
  if (ct) d.mediaType = ct;
  return d;
}

// ---------------------------------------------------------------------------
// Clients through a mirror
// ---------------------------------------------------------------------------

export interface RegistriesConfOptions {
  /** The registry clients name in image references, e.g. 127.0.0.1:5000. */
  registryHost: string;
  /** Mirror(s) tried in order before the registry itself, e.g. dfdaemon's 127.0.0.1:65001. */
  mirrorHost?: string | string[];
}

/** Writes a registries.conf (v2 format) with the registry and its mirror(s), all plain HTTP. */
export async function writeRegistriesConf(path: string, opts: RegistriesConfOptions): Promise<void> {
  const mirrors = opts.mirrorHost === undefined ? [] : Array.isArray(opts.mirrorHost) ? opts.mirrorHost : [opts.mirrorHost];
  const q = (s: string): string => JSON.stringify(s);
  const lines = [
    'unqualified-search-registries = []',
    '',
    '[[registry]]',
    `prefix = ${q(opts.registryHost)}`,
    `location = ${q(opts.registryHost)}`,
    'insecure = true',
  ];
  for (const m of mirrors) lines.push('', '[[registry.mirror]]', `location = ${q(m)}`, 'insecure = true');
  await writeFile(path, lines.join('\n') + '\n');
}

export interface SkopeoCopyOptions {
  registriesConf: string;
  registryHost: string;
  repo: string;
  tag: string;
  /** Destination OCI layout dir (created). */
  outDir: string;
  /** Credentials for the source. */
  creds?: Creds;
  timeoutMs?: number;
}

/**
 * skopeo copy docker://REGISTRYHOST/REPO:TAG oci:OUTDIR:TAG with the given
 * registries.conf, so the pull goes through its mirrors. Resolves with the
 * exit code and output; never rejects on failure.
 */
export async function skopeoCopyViaMirror(o: SkopeoCopyOptions): Promise<RunResult> {
  const args = ['--insecure-policy', '--registries-conf', o.registriesConf, 'copy', '--src-tls-verify=false'];
  if (o.creds) args.push('--src-creds', `${o.creds.user}:${o.creds.password}`);
  args.push(`docker://${o.registryHost}/${o.repo}:${o.tag}`, `oci:${o.outDir}:${o.tag}`);
  return run('skopeo', args, { env: { CONTAINERS_REGISTRIES_CONF: o.registriesConf }, timeoutMs: o.timeoutMs });
}

/** skopeo copy straight from the registry (no registries.conf mirrors) to oci:OUTDIR:TAG. */
export async function skopeoCopyDirect(registryHost: string, repo: string, tag: string, outDir: string, creds?: Creds): Promise<RunResult> {
  const args = ['--insecure-policy', 'copy', '--src-tls-verify=false'];
  if (creds) args.push('--src-creds', `${creds.user}:${creds.password}`);
  args.push(`docker://${registryHost}/${repo}:${tag}`, `oci:${outDir}:${tag}`);
  return run('skopeo', args);
}

/** Digests of what skopeo wrote to oci:OUTDIR:TAG (the layer digests are the registry's blob digests). */
export function skopeoPulledDigests(outDir: string, tag: string): Promise<ImageDigests> {
  return ociLayoutDigests(outDir, tag);
}
