/**
 * dfdaemon configuration: command-line flags override the YAML file, the file
 * overrides the defaults. The file is validated strictly: an unknown key at
 * any level, a wrong type or an unusable value is a DF_ERR_INVALID_CONFIG
 * naming the file and the key, so a typo never silently falls back to a
 * default. Credentials for the upstream exist only in the file (never a
 * flag: process arguments are visible to every user of the host).
 *
 * File schema (see examples/dfdaemon.yml):
 *   port: 65001                 # listen port, 0-65535 (0: any free port)
 *   host_ip: 127.0.0.1          # listen address
 *   home: /var/lib/dragonfly    # working directory of the P2P peer
 *   ratelimit: 20M              # bytes/s, K/M/G = KiB/MiB/GiB
 *   expiretime: 3m              # a finished blob unused this long leaves the disk (0: at exit)
 *   upload_rate: 100M           # bytes/s of pieces served to other peers
 *   supernodes: [host:port]     # or "host:port,host:port"
 *   verbose: false
 *   registry_mirror:
 *     remote: https://index.docker.io
 *     insecure: false           # skip TLS verification; required for credentials over http
 *     certs: [/path/ca.pem]     # extra CA certificates to trust
 *     auth: { username: u, password: p }
 *   proxies:
 *     - { regx: "^/v2/internal/", direct: true }
 */
import { accessSync, constants as fsConstants, readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { homedir } from 'node:os';
import * as path from 'node:path';
import * as yaml from 'js-yaml';
import { DEFAULTS } from '../common/constants';
import { DfError, type ErrorCode } from '../common/errors';
import { parseNodeList } from '../common/net';
import { parseDuration, parseRate } from '../common/units';

export interface RegistryAuth {
  username: string;
  password: string;
}

export interface RegistryMirrorConfig {
  /** Upstream registry or mirror, http(s) URL without credentials. */
  remote: string;
  /** Skip TLS certificate verification (self-signed upstream); allows credentials over plain http. */
  insecure: boolean;
  /** Paths of PEM CA certificates trusted for the upstream, besides the system ones. */
  certs: string[];
  /** Credentials sent as Basic auth (or traded for a bearer token) when the client sent none. */
  auth?: RegistryAuth;
}

export interface ProxyRule {
  /** Matched against the raw request path (no query). */
  regx: RegExp;
  /** true: fetch directly from the upstream; false: through the P2P network. */
  direct: boolean;
}

export interface DfdaemonConfig {
  port: number;
  hostIp: string;
  homeDir: string;
  rateLimitBytesPerSec: number;
  /** A finished blob unused this long is deleted from home, ms; 0 = kept until exit. */
  expireTimeMs: number;
  /** Cap on bytes/s of pieces served to other peers. */
  uploadRateBytesPerSec: number;
  /** "host:port" of the supernodes; empty: every blob is fetched directly. */
  supernodes: string[];
  verbose: boolean;
  registryMirror: RegistryMirrorConfig;
  /** First match wins; no match: blob GETs use P2P, everything else goes direct. */
  proxies: ProxyRule[];
}

/** Flags as the CLI parsed them; undefined = not given, so the file or default applies. */
export interface DfdaemonFlags {
  registry?: string;
  ratelimit?: string | number;
  expiretime?: string | number;
  uploadRate?: string | number;
  port?: number;
  hostIp?: string;
  node?: string | string[];
  home?: string;
  config?: string;
  verbose?: boolean;
}

export function defaultHomeDir(): string {
  return path.join(homedir(), '.small-dragonfly', 'dfdaemon');
}

export function defaultConfig(): DfdaemonConfig {
  return {
    port: DEFAULTS.dfdaemonPort,
    hostIp: DEFAULTS.dfdaemonHost,
    homeDir: defaultHomeDir(),
    rateLimitBytesPerSec: DEFAULTS.dfdaemonRateLimitBytesPerSec,
    expireTimeMs: DEFAULTS.dfdaemonExpireTimeMs,
    uploadRateBytesPerSec: DEFAULTS.dfgetUploadRateBytesPerSec,
    supernodes: [],
    verbose: false,
    registryMirror: { remote: DEFAULTS.dfdaemonRegistry, insecure: false, certs: [] },
    proxies: [],
  };
}

/** Where a value came from, for error messages and codes. */
interface Origin {
  code: ErrorCode;
  /** "--port" or "dfdaemon.yml: port". */
  label(key: string): string;
}

const flagOrigin: Origin = { code: 'DF_ERR_INVALID_ARGUMENT', label: (k) => `--${k}` };
const fileOrigin = (file: string): Origin => ({ code: 'DF_ERR_INVALID_CONFIG', label: (k) => `${file}: ${k}` });

function fail(origin: Origin, key: string, msg: string): never {
  throw new DfError(origin.code, `${origin.label(key)}: ${msg}`);
}

function typeName(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  return typeof v === 'object' ? 'a mapping' : `${typeof v} ${JSON.stringify(v)}`;
}

function checkPort(o: Origin, key: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 65535) {
    fail(o, key, `expected a port number 0-65535, got ${typeName(v)}`);
  }
  return v;
}

function checkIp(o: Origin, key: string, v: unknown): string {
  if (typeof v !== 'string' || isIP(v) === 0) fail(o, key, `expected an IP address, got ${typeName(v)}`);
  return v;
}

function checkString(o: Origin, key: string, v: unknown, allowEmpty = false): string {
  if (typeof v !== 'string' || (!allowEmpty && v.trim() === '')) fail(o, key, `expected a non-empty string, got ${typeName(v)}`);
  return v;
}

function checkBool(o: Origin, key: string, v: unknown): boolean {
  if (typeof v !== 'boolean') fail(o, key, `expected true or false, got ${typeName(v)}`);
  return v;
}

/** A string or number the given parser turns into a number (a rate, a duration). */
function checkParsed(o: Origin, key: string, v: unknown, expected: string, parse: (v: string | number, what: string) => number, what: string): number {
  if (typeof v !== 'string' && typeof v !== 'number') fail(o, key, `expected ${expected}, got ${typeName(v)}`);
  try {
    return parse(v, what);
  } catch (e) {
    return fail(o, key, (e as Error).message);
  }
}

const checkRate = (o: Origin, key: string, v: unknown): number => checkParsed(o, key, v, 'a rate such as 20M', parseRate, 'rate');
const checkDuration = (o: Origin, key: string, v: unknown): number => checkParsed(o, key, v, 'a duration such as 3m', parseDuration, 'duration');

function checkNodes(o: Origin, key: string, v: unknown): string[] {
  const list = typeof v === 'string' ? [v] : v;
  if (!Array.isArray(list) || !list.every((x) => typeof x === 'string')) {
    fail(o, key, `expected HOST:PORT strings, got ${typeName(v)}`);
  }
  try {
    return parseNodeList(list as string[], DEFAULTS.supernodePort);
  } catch (e) {
    return fail(o, key, (e as Error).message);
  }
}

/** An http(s) URL without userinfo; returned normalised without a trailing slash. */
function checkRemote(o: Origin, key: string, v: unknown): string {
  const s = checkString(o, key, v);
  let u: URL;
  try {
    u = new URL(s);
  } catch {
    return fail(o, key, `invalid URL "${s.slice(0, 200)}"`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') fail(o, key, `unsupported URL scheme "${u.protocol.replace(/:$/, '')}": expected http or https`);
  // Checked before anything could echo the URL back: it must never carry a secret.
  if (u.username || u.password) fail(o, key, 'credentials in the URL are not accepted: put them in the config file under registry_mirror.auth');
  if (u.search || u.hash) fail(o, key, 'expected a URL without query or fragment');
  return u.toString().replace(/\/+$/, '');
}

function checkRegex(o: Origin, key: string, v: unknown): RegExp {
  const s = checkString(o, key, v);
  try {
    return new RegExp(s);
  } catch (e) {
    return fail(o, key, `invalid regular expression: ${(e as Error).message}`);
  }
}

function checkReadableFile(o: Origin, key: string, v: unknown, baseDir: string): string {
  const p = path.resolve(baseDir, checkString(o, key, v));
  try {
    accessSync(p, fsConstants.R_OK);
  } catch {
    fail(o, key, `cannot read file ${p}`);
  }
  return p;
}

function checkMapping(o: Origin, key: string, v: unknown, allowed: readonly string[]): Record<string, unknown> {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) fail(o, key, `expected a mapping, got ${typeName(v)}`);
  for (const k of Object.keys(v)) {
    if (!allowed.includes(k)) {
      fail(o, key ? `${key}.${k}` : k, `unknown key (allowed${key ? ` under ${key}` : ''}: ${allowed.join(', ')})`);
    }
  }
  return v as Record<string, unknown>;
}

const TOP_KEYS = ['port', 'host_ip', 'home', 'ratelimit', 'expiretime', 'upload_rate', 'supernodes', 'verbose', 'registry_mirror', 'proxies'] as const;
const MIRROR_KEYS = ['remote', 'insecure', 'certs', 'auth'] as const;
const AUTH_KEYS = ['username', 'password'] as const;
const RULE_KEYS = ['regx', 'direct'] as const;

/** The settings a file gives; absent keys stay undefined. */
export interface FileConfig {
  port?: number;
  hostIp?: string;
  homeDir?: string;
  rateLimitBytesPerSec?: number;
  expireTimeMs?: number;
  uploadRateBytesPerSec?: number;
  supernodes?: string[];
  verbose?: boolean;
  remote?: string;
  insecure?: boolean;
  certs?: string[];
  auth?: RegistryAuth;
  proxies?: ProxyRule[];
}

/**
 * Parses and validates the YAML text of a config file. `file` names it in
 * messages; relative paths (home, certs) resolve against its directory.
 */
export function parseConfigFile(text: string, file: string): FileConfig {
  const o = fileOrigin(file);
  let doc: unknown;
  try {
    doc = yaml.load(text, { filename: file, schema: yaml.JSON_SCHEMA });
  } catch (e) {
    const ye = e as { reason?: string; mark?: { line: number; column: number }; message?: string };
    const where = ye.mark ? ` at line ${ye.mark.line + 1}, column ${ye.mark.column + 1}` : '';
    throw new DfError('DF_ERR_INVALID_CONFIG', `${file}: invalid YAML${where}: ${ye.reason ?? ye.message ?? String(e)}`);
  }
  if (doc === undefined || doc === null) return {};
  const top = checkMapping(o, '', doc, TOP_KEYS);
  const baseDir = path.dirname(path.resolve(file));
  const out: FileConfig = {};
  // A key written with no value (YAML null) counts as absent.
  const has = (m: Record<string, unknown>, k: string) => m[k] !== undefined && m[k] !== null;

  if (has(top, 'port')) out.port = checkPort(o, 'port', top.port);
  if (has(top, 'host_ip')) out.hostIp = checkIp(o, 'host_ip', top.host_ip);
  if (has(top, 'home')) out.homeDir = path.resolve(baseDir, checkString(o, 'home', top.home));
  if (has(top, 'ratelimit')) out.rateLimitBytesPerSec = checkRate(o, 'ratelimit', top.ratelimit);
  if (has(top, 'expiretime')) out.expireTimeMs = checkDuration(o, 'expiretime', top.expiretime);
  if (has(top, 'upload_rate')) out.uploadRateBytesPerSec = checkRate(o, 'upload_rate', top.upload_rate);
  if (has(top, 'supernodes')) out.supernodes = checkNodes(o, 'supernodes', top.supernodes);
  if (has(top, 'verbose')) out.verbose = checkBool(o, 'verbose', top.verbose);

  if (has(top, 'registry_mirror')) {
    const rm = checkMapping(o, 'registry_mirror', top.registry_mirror, MIRROR_KEYS);
    if (has(rm, 'remote')) out.remote = checkRemote(o, 'registry_mirror.remote', rm.remote);
    if (has(rm, 'insecure')) out.insecure = checkBool(o, 'registry_mirror.insecure', rm.insecure);
    if (has(rm, 'certs')) {
      if (!Array.isArray(rm.certs)) fail(o, 'registry_mirror.certs', `expected a list of file paths, got ${typeName(rm.certs)}`);
      out.certs = rm.certs.map((c, i) => checkReadableFile(o, `registry_mirror.certs[${i}]`, c, baseDir));
    }
    if (has(rm, 'auth')) {
      const a = checkMapping(o, 'registry_mirror.auth', rm.auth, AUTH_KEYS);
      // Values are never echoed: only their type is named.
      const username = a.username;
      const password = a.password;
      if (typeof username !== 'string' || username === '') fail(o, 'registry_mirror.auth.username', 'expected a non-empty string');
      if (username.includes(':')) fail(o, 'registry_mirror.auth.username', 'must not contain ":"');
      if (typeof password !== 'string') fail(o, 'registry_mirror.auth.password', 'expected a string');
      out.auth = { username, password };
    }
  }

  if (has(top, 'proxies')) {
    if (!Array.isArray(top.proxies)) fail(o, 'proxies', `expected a list of {regx, direct}, got ${typeName(top.proxies)}`);
    out.proxies = top.proxies.map((r, i) => {
      const key = `proxies[${i}]`;
      const rule = checkMapping(o, key, r, RULE_KEYS);
      if (!has(rule, 'regx')) fail(o, `${key}.regx`, 'missing');
      return {
        regx: checkRegex(o, `${key}.regx`, rule.regx),
        direct: has(rule, 'direct') ? checkBool(o, `${key}.direct`, rule.direct) : false,
      };
    });
  }
  return out;
}

export interface LoadOptions {
  /** Reads the config file; tests pass a fake. */
  readFile?: (file: string) => string;
}

/** Builds the effective configuration: flags > file > defaults. */
export function loadConfig(flags: DfdaemonFlags, opts: LoadOptions = {}): DfdaemonConfig {
  const cfg = defaultConfig();
  let file: FileConfig = {};
  if (flags.config !== undefined) {
    const name = checkString(flagOrigin, 'config', flags.config);
    let text: string;
    try {
      text = (opts.readFile ?? ((f: string) => readFileSync(f, 'utf8')))(name);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      throw new DfError('DF_ERR_INVALID_CONFIG', `cannot read config file ${name}${code ? `: ${code}` : ''}`);
    }
    file = parseConfigFile(text, name);
  }

  const f = flagOrigin;
  cfg.port = flags.port !== undefined ? checkPort(f, 'port', flags.port) : file.port ?? cfg.port;
  cfg.hostIp = flags.hostIp !== undefined ? checkIp(f, 'host-ip', flags.hostIp) : file.hostIp ?? cfg.hostIp;
  cfg.homeDir = flags.home !== undefined ? path.resolve(checkString(f, 'home', flags.home)) : file.homeDir ?? cfg.homeDir;
  cfg.rateLimitBytesPerSec = flags.ratelimit !== undefined ? checkRate(f, 'ratelimit', flags.ratelimit) : file.rateLimitBytesPerSec ?? cfg.rateLimitBytesPerSec;
  cfg.expireTimeMs = flags.expiretime !== undefined ? checkDuration(f, 'expiretime', flags.expiretime) : file.expireTimeMs ?? cfg.expireTimeMs;
  cfg.uploadRateBytesPerSec = flags.uploadRate !== undefined ? checkRate(f, 'upload-rate', flags.uploadRate) : file.uploadRateBytesPerSec ?? cfg.uploadRateBytesPerSec;
  cfg.supernodes = flags.node !== undefined ? checkNodes(f, 'node', flags.node) : file.supernodes ?? cfg.supernodes;
  cfg.verbose = flags.verbose === true ? true : file.verbose ?? cfg.verbose;
  cfg.registryMirror = {
    remote: flags.registry !== undefined ? checkRemote(f, 'registry', flags.registry) : file.remote ?? checkRemote(f, 'registry', cfg.registryMirror.remote),
    insecure: file.insecure ?? false,
    certs: file.certs ?? [],
    ...(file.auth ? { auth: file.auth } : {}),
  };
  cfg.proxies = file.proxies ?? [];

  const rm = cfg.registryMirror;
  if (rm.auth && rm.remote.startsWith('http:') && !rm.insecure) {
    throw new DfError(flags.config !== undefined ? 'DF_ERR_INVALID_CONFIG' : 'DF_ERR_INVALID_ARGUMENT',
      `${flags.config ?? 'config'}: registry_mirror.auth would be sent over plain http to ${rm.remote}: use https or set registry_mirror.insecure: true`);
  }
  return cfg;
}

/** The configuration as it may be logged: credentials replaced. */
export function redactConfig(cfg: DfdaemonConfig): Record<string, unknown> {
  return {
    port: cfg.port,
    hostIp: cfg.hostIp,
    homeDir: cfg.homeDir,
    rateLimitBytesPerSec: cfg.rateLimitBytesPerSec,
    expireTimeMs: cfg.expireTimeMs,
    uploadRateBytesPerSec: cfg.uploadRateBytesPerSec,
    supernodes: cfg.supernodes,
    registry: cfg.registryMirror.remote,
    insecure: cfg.registryMirror.insecure,
    certs: cfg.registryMirror.certs,
    credentials: cfg.registryMirror.auth ? 'configured' : 'none',
    proxies: cfg.proxies.map((r) => ({ regx: r.regx.source, direct: r.direct })),
  };
}
