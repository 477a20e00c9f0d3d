/**
 * Podman helpers for e2e tests on machines without a docker engine.
 *
 * Podman works here only with vfs storage, the runc runtime, the cgroupfs
 * cgroup manager and `default_ulimits = []` (as root podman otherwise raises
 * RLIMIT_NOFILE above the hard limit this sandbox allows and runc fails with
 * "error setting rlimit type 7: operation not permitted"). Every podman call
 * goes through podmanCmd(), which passes those settings explicitly and points
 * CONTAINERS_CONF at a containers.conf it writes, so the tests do not depend
 * on /etc/containers.
 */
import { existsSync, rmSync } from 'node:fs';
import { chmod, cp, copyFile, mkdir, realpath, rm, symlink, writeFile } from 'node:fs/promises';
import { execFileSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { makeTempDir, run, runOk, type Creds, type RunOptions, type RunResult } from './registry';

export interface PodmanStore {
  /** Parent temp dir of everything below. */
  dir: string;
  /** --root: image and container storage (vfs). */
  root: string;
  /** --runroot: runtime state. */
  runroot: string;
  /** --tmpdir: libpod's own state (locks, events). */
  tmpdir: string;
  /** The containers.conf podmanCmd points CONTAINERS_CONF at. */
  containersConf: string;
  /** Removes the store (images and containers in it go too). Idempotent. */
  close(): Promise<void>;
}

const CONTAINERS_CONF = `# Written by the e2e test helpers.
[containers]
# An empty list keeps podman from raising RLIMIT_NOFILE, which runc may not be allowed to do.
default_ulimits = []

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "runc"
`;

/** A fresh podman store (vfs storage, runroot, tmpdir, containers.conf) in a temp dir. */
export async function createPodmanStore(): Promise<PodmanStore> {
  const dir = await makeTempDir('df-podman');
  const store = storeIn(dir);
  await Promise.all([mkdir(store.root), mkdir(store.runroot), mkdir(store.tmpdir), mkdir(join(dir, 'tmp'))]);
  await writeFile(store.containersConf, CONTAINERS_CONF);
  return store;
}

function storeIn(dir: string): PodmanStore {
  let closed = false;
  const store: PodmanStore = {
    dir,
    root: join(dir, 'root'),
    runroot: join(dir, 'runroot'),
    tmpdir: join(dir, 'libpod'),
    containersConf: join(dir, 'containers.conf'),
    close: async () => {
      if (closed) return;
      closed = true;
      // Container processes are not our children (conmon daemonizes), so stop
      // any a test left running before their storage disappears.
      await run('podman', [...podmanGlobalArgs(store), 'rm', '--all', '--force', '--time', '0'],
        { env: podmanEnv(store), timeoutMs: 60_000 }).catch(() => undefined);
      await rm(dir, { recursive: true, force: true });
    },
  };
  return store;
}

function closeStoreSync(store: PodmanStore): void {
  try {
    execFileSync('podman', [...podmanGlobalArgs(store), 'rm', '--all', '--force', '--time', '0'],
      { env: { ...process.env, ...podmanEnv(store) }, stdio: 'ignore', timeout: 60_000 });
  } catch {
    // nothing to stop, or podman is gone
  }
  rmSync(store.dir, { recursive: true, force: true });
}

// One store per test process unless a test makes its own: makeNodeBaseImage()
// and podmanCmd() use it by default, so an imported image is visible to later
// runs. It is removed when the process exits.
let defaultStore: Promise<PodmanStore> | undefined;
export function defaultPodmanStore(): Promise<PodmanStore> {
  if (!defaultStore) {
    defaultStore = createPodmanStore();
    void defaultStore.then((s) => {
      process.once('exit', () => closeStoreSync(s));
    }, () => undefined);
  }
  return defaultStore;
}

/** Global flags for every podman call on this machine. */
export function podmanGlobalArgs(store: PodmanStore): string[] {
  return [
    '--storage-driver', 'vfs',
    '--root', store.root,
    '--runroot', store.runroot,
    '--tmpdir', store.tmpdir,
    '--runtime', 'runc',
    '--cgroup-manager', 'cgroupfs',
    '--events-backend', 'file',
  ];
}

export function podmanEnv(store: PodmanStore, extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  return { CONTAINERS_CONF: store.containersConf, TMPDIR: join(store.dir, 'tmp'), ...extra };
}

export interface PodmanCmdOptions extends RunOptions {
  /** Default: the per-process default store. */
  store?: PodmanStore;
}

/** Runs `podman <global flags> ...args`. Resolves with exit code and output; never rejects on failure. */
export async function podmanCmd(args: readonly string[], opts: PodmanCmdOptions = {}): Promise<RunResult> {
  const store = opts.store ?? await defaultPodmanStore();
  return run('podman', [...podmanGlobalArgs(store), ...args], { ...opts, env: podmanEnv(store, opts.env) });
}

/** Like podmanCmd but rejects when podman exits non-zero. */
export async function podmanOk(args: readonly string[], opts: PodmanCmdOptions = {}): Promise<RunResult> {
  const r = await podmanCmd(args, opts);
  if (r.code !== 0) throw new Error(`podman ${args.join(' ')} exited with ${r.code ?? r.signal}\n${r.stderr.trim()}`);
  return r;
}

// ---------------------------------------------------------------------------
// A Node.js base image made from the host's own files
// ---------------------------------------------------------------------------

export interface NodeBaseImageOptions {
  store?: PodmanStore;
  /** uid/gid of the non-root user "node" in the image. Default 1000. */
  uid?: number;
}

/**
 * Creates the local image `tag` containing this host's Node.js, without any
 * registry: a rootfs with the node binary (/usr/local/bin/node) and the shared
 * libraries ldd lists for it, /bin/sh (busybox if the host has it, else dash
 * and its libraries), /etc/ssl/certs, /etc/passwd and /etc/group with root and
 * a non-root user "node", /tmp (1777) and /home/node, tarred and `podman import`ed.
 * Resolves with the image id.
 */
export async function makeNodeBaseImage(tag: string, opts: NodeBaseImageOptions = {}): Promise<string> {
  const uid = opts.uid ?? 1000;
  const work = await makeTempDir('df-node-image');
  try {
    const rootfs = join(work, 'rootfs');
    for (const d of ['bin', 'dev', 'etc', 'home', 'proc', 'root', 'sys', 'tmp', 'usr/local/bin', 'var/tmp']) {
      await mkdir(join(rootfs, d), { recursive: true });
    }
    await chmod(join(rootfs, 'tmp'), 0o1777);
    await chmod(join(rootfs, 'var/tmp'), 0o1777);
    await chmod(join(rootfs, 'root'), 0o700);

    const nodeBin = await realpath(process.execPath);
    await copyExecutable(nodeBin, rootfs, '/usr/local/bin/node');

    const busybox = which('busybox');
    if (busybox && (await isStatic(busybox))) {
      await copyExecutable(busybox, rootfs, '/bin/busybox');
      for (const applet of ['sh', 'cat', 'ls', 'echo', 'sleep', 'kill', 'ps', 'wget', 'id']) {
        await symlink('busybox', join(rootfs, 'bin', applet));
      }
    } else {
      const sh = which('dash') ?? which('sh');
      if (!sh) throw new Error('neither busybox nor dash found on this host');
      await copyExecutable(await realpath(sh), rootfs, '/bin/sh');
    }

    if (existsSync('/etc/ssl/certs')) {
      await mkdir(join(rootfs, 'etc/ssl'), { recursive: true });
      await cp('/etc/ssl/certs', join(rootfs, 'etc/ssl/certs'), { recursive: true, dereference: true });
    }
    await writeFile(join(rootfs, 'etc/passwd'),
      `root:x:0:0:root:/root:/bin/sh\nnode:x:${uid}:${uid}:node:/home/node:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n`);
    await writeFile(join(rootfs, 'etc/group'), `root:x:0:\nnode:x:${uid}:\nnogroup:x:65534:\n`);
    await writeFile(join(rootfs, 'etc/nsswitch.conf'), 'passwd: files\ngroup: files\nhosts: files dns\n');
    await mkdir(join(rootfs, 'home/node'));
    await runOk('chown', [`${uid}:${uid}`, join(rootfs, 'home/node')]);

    const tarball = join(work, 'rootfs.tar');
    await runOk('tar', ['--numeric-owner', '-C', rootfs, '-cf', tarball, '.']);
    const r = await podmanOk([
      'import',
      '--change', 'ENV=PATH=/usr/local/bin:/usr/bin:/bin',
      '--change', 'WORKDIR=/',
      '--change', 'CMD=["node"]',
      tarball, tag,
    ], { store: opts.store });
    return r.stdout.trim().split('\n').pop() ?? '';
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

function which(cmd: string): string | undefined {
  for (const d of (process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(':')) {
    const p = join(d, cmd);
    if (d && existsSync(p)) return p;
  }
  return undefined;
}

async function isStatic(bin: string): Promise<boolean> {
  const r = await run('ldd', [bin]);
  return r.code !== 0 || /not a dynamic executable|statically linked/.test(r.stdout + r.stderr);
}

/** Copies an executable to dest inside rootfs, plus every shared library ldd lists, at the same paths. */
async function copyExecutable(src: string, rootfs: string, dest: string): Promise<void> {
  const target = join(rootfs, dest);
  await mkdir(dirname(target), { recursive: true });
  await copyFile(src, target);
  await chmod(target, 0o755);
  for (const lib of await sharedLibs(src)) {
    const libTarget = join(rootfs, lib);
    if (existsSync(libTarget)) continue;
    await mkdir(dirname(libTarget), { recursive: true });
    await copyFile(await realpath(lib), libTarget); // follows the .so.N symlinks
    await chmod(libTarget, 0o755);
  }
}

/** Absolute paths of the shared libraries (and the dynamic loader) a binary needs, per ldd. */
async function sharedLibs(bin: string): Promise<string[]> {
  const r = await run('ldd', [bin]);
  if (r.code !== 0) return []; // static
  const libs: string[] = [];
  for (const line of r.stdout.split('\n')) {
    // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
    const m = /=>\s*(\/\S+)/.exec(line) ?? /^\s*(\/\S+)\s+\(/.exec(line);
    if (m) libs.push(m[1]);
  }
  return libs;
}

// ---------------------------------------------------------------------------
// Pulls through a mirror
// ---------------------------------------------------------------------------

export interface PodmanPullOptions {
  registriesConf: string;
  registryHost: string;
  repo: string;
  tag: string;
  creds?: Creds;
  /** Default: a fresh store just for this pull (so nothing is already present); close() it after. */
  store?: PodmanStore;
  timeoutMs?: number;
}

export interface PodmanPullResult extends RunResult {
  /** The store the image was pulled into; close() it when done (the caller owns it). */
  store: PodmanStore;
  /** REGISTRYHOST/REPO:TAG */
  ref: string;
}

/**
 * podman pull --tls-verify=false REGISTRYHOST/REPO:TAG with
 * CONTAINERS_REGISTRIES_CONF=registriesConf, so the pull goes through its
 * mirrors. Resolves with exit code and output; never rejects on failure.
 */
export async function podmanPullViaMirror(o: PodmanPullOptions): Promise<PodmanPullResult> {
  const store = o.store ?? await createPodmanStore();
  const ref = `${o.registryHost}/${o.repo}:${o.tag}`;
  const args = ['pull', '--tls-verify=false'];
  if (o.creds) args.push('--creds', `${o.creds.user}:${o.creds.password}`);
  args.push(ref);
  const r = await podmanCmd(args, {
    store,
    env: { CONTAINERS_REGISTRIES_CONF: o.registriesConf },
    timeoutMs: o.timeoutMs,
  });
  return { ...r, store, ref };
}

/**
 * The manifest digest podman recorded for a pulled image (`podman image
 * inspect --format {{.Digest}}`). Podman stores layers uncompressed (diff ids),
 * so compare this with the registry's manifest digest, not layer digests.
 */
export async function podmanPulledDigest(ref: string, store?: PodmanStore): Promise<string> {
  const r = await podmanOk(['image', 'inspect', '--format', '{{.Digest}}', ref], { store });
  return r.stdout.trim();
}

/** Runs `podman image exists`. */
export async function podmanImageExists(ref: string, store?: PodmanStore): Promise<boolean> {
  return (await podmanCmd(['image', 'exists', ref], { store })).code === 0;
}

/** Whether podman is installed, for tests that skip themselves otherwise. */
export function hostHasPodman(): boolean {
  try {
    execFileSync('podman', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}
