/**
 * Request paths a registry mirror receives, parsed and validated at the edge.
 *
 * The raw path is matched as the client sent it, never normalised: a URL
 * parser would resolve "/v2/a/../b" into "/v2/b" and hide the traversal. Every
 * legal name, tag and digest is made of characters that need no
 * percent-encoding, so a path that would need decoding is simply invalid.
 */
import { RegistryError } from './registry-errors';

export type Route =
  /** GET /v2/: the API version check (and where clients learn the auth challenge). */
  | { kind: 'base' }
  | { kind: 'manifest'; name: string; reference: string; isDigest: boolean; rest: string }
  | { kind: 'blob'; name: string; digest: string; rest: string }
  /** Everything else the registry API knows (uploads, tags list, referrers): passed through as is. */
  | { kind: 'passthrough'; name: string; rest: string }
  | { kind: 'catalog' }
  | { kind: 'metrics' }
  | { kind: 'healthz' };

export type RouteKind = Route['kind'];

/** One path component of a repository name (distribution reference grammar). */
const COMPONENT = '[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*';
const NAME_RE = new RegExp(`^${COMPONENT}(?:/${COMPONENT})*$`);
/** Distribution limits the whole name to 255 characters. */
export const MAX_NAME_LENGTH = 255;
const TAG_RE = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;
const DIGEST_RE = /^([a-z0-9]+(?:[.+_-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)$/;
/** Hex length of each supported digest algorithm. */
const DIGEST_HEX_LENGTH: Record<string, number> = { sha256: 64, sha512: 128 };

export interface ValidDigest { algorithm: 'sha256' | 'sha512'; hex: string; digest: string }

/** Validates "algo:hex"; throws a 400 DIGEST_INVALID RegistryError. */
export function validateDigest(input: string): ValidDigest {
  const m = DIGEST_RE.exec(input);
  if (!m) throw new RegistryError(400, 'DIGEST_INVALID', 'invalid digest: expected <algorithm>:<hex>', { digest: input.slice(0, 200) });
  const [, algorithm, hex] = m;
  const len = DIGEST_HEX_LENGTH[algorithm];
  if (len === undefined) {
    throw new RegistryError(400, 'DIGEST_INVALID', `unsupported digest algorithm "${algorithm}": expected sha256 or sha512`, { digest: input.slice(0, 200) });
  }
  if (hex.length !== len || !/^[a-f0-9]+$/.test(hex)) {
    throw new RegistryError(400, 'DIGEST_INVALID', `invalid ${algorithm} digest: expected ${len} lower-case hex characters`, { digest: input.slice(0, 200) });
  }
  return { algorithm: algorithm as ValidDigest['algorithm'], hex, digest: input };
}

/** Validates a repository name; throws a 400 NAME_INVALID RegistryError. */
export function validateName(name: string): string {
  if (name.length > MAX_NAME_LENGTH) {
    throw new RegistryError(400, 'NAME_INVALID', `invalid repository name: longer than ${MAX_NAME_LENGTH} characters`);
  }
  if (!NAME_RE.test(name)) {
    throw new RegistryError(400, 'NAME_INVALID',
      'invalid repository name: expected lower-case components of [a-z0-9] separated by ".", "_", "__" or "-", joined by "/"',
      { name: name.slice(0, 200) });
  }
  return name;
}

/** Splits a request target into its raw path and query ("" or "?..."). */
export function splitTarget(target: string): { path: string; query: string } {
  const q = target.indexOf('?');
  return q < 0 ? { path: target, query: '' } : { path: target.slice(0, q), query: target.slice(q) };
}

function unknownPath(): RegistryError {
  return new RegistryError(404, 'UNSUPPORTED', 'unknown path: this registry mirror serves the /v2/ registry API, /metrics and /healthz');
}

/**
 * Parses a raw request path (no query). Throws a RegistryError (4xx) for a
 * malformed name, tag or digest and for paths outside the API.
 */
export function parseRoute(path: string): Route {
  if (path === '/metrics') return { kind: 'metrics' };
  if (path === '/healthz') return { kind: 'healthz' };
  if (path === '/v2' || path === '/v2/') return { kind: 'base' };
  if (!path.startsWith('/v2/')) throw unknownPath();
  const rest = path.slice(4);
  if (rest === '_catalog') return { kind: 'catalog' };

  // Greedy (.+) takes the last "/manifests/", "/blobs/"...: a repository may
  // itself contain a component named "blobs".
  let m = /^(.+)(\/manifests\/([^/]+))$/.exec(rest);
  if (m) {
    const name = validateName(m[1]);
    const reference = m[3];
    if (reference.includes(':')) {
      validateDigest(reference);
      return { kind: 'manifest', name, reference, isDigest: true, rest: m[2] };
    }
    if (!TAG_RE.test(reference)) {
      throw new RegistryError(400, 'TAG_INVALID', 'invalid tag: expected [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}', { tag: reference.slice(0, 200) });
    }
    return { kind: 'manifest', name, reference, isDigest: false, rest: m[2] };
  }
  m = /^(.+)(\/blobs\/uploads(?:\/[^/]*)?)$/.exec(rest);
  if (m) return { kind: 'passthrough', name: validateName(m[1]), rest: m[2] };
  m = /^(.+)(\/blobs\/([^/]+))$/.exec(rest);
  if (m) {
    const name = validateName(m[1]);
    return { kind: 'blob', name, digest: validateDigest(m[3]).digest, rest: m[2] };
  }
  m = /^(.+)(\/tags\/list)$/.exec(rest);
  if (m) return { kind: 'passthrough', name: validateName(m[1]), rest: m[2] };
  m = /^(.+)(\/referrers\/([^/]+))$/.exec(rest);
  if (m) {
    const name = validateName(m[1]);
    validateDigest(m[3]);
    return { kind: 'passthrough', name, rest: m[2] };
  }
  throw unknownPath();
}
