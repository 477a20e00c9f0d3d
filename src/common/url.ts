import { createHash } from 'node:crypto';
import { DfError } from './errors';

/** Longest URL taken, in characters (signed URLs run to a few KiB). */
export const MAX_URL_CHARS = 16 * 1024;

/** At most the first 200 characters of what was given, for an error message. */
const shown = (input: string) => (input.length > 200 ? `${input.slice(0, 200)}...` : input);

/** Parses an http(s) URL or throws DF_ERR_INVALID_URL. */
export function parseHttpUrl(input: string): URL {
  if (input.length > MAX_URL_CHARS) throw new DfError('DF_ERR_INVALID_URL', `URL of ${input.length} characters, more than ${MAX_URL_CHARS}`);
  let u: URL;
  try {
    u = new URL(input);
  } catch {
    throw new DfError('DF_ERR_INVALID_URL', `invalid URL "${shown(input)}"`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') {
    throw new DfError('DF_ERR_INVALID_URL', `unsupported URL scheme "${u.protocol.replace(/:$/, '')}" in "${shown(input)}": only http and https are supported`);
  }
  if (!u.hostname) throw new DfError('DF_ERR_INVALID_URL', `invalid URL "${shown(input)}": no host`);
  return u;
}

/** The URL with the named query parameters removed (dfget --filter). */
export function filterUrl(url: string, filter: string[]): string {
  if (filter.length === 0) return url;
  const u = new URL(url);
  for (const k of filter) u.searchParams.delete(k);
  return u.toString();
}

/**
 * Task id: sha256 of the identity. The identity is the identifier when one is
 * given (dfdaemon: the blob digest, so every mirror and signed redirect of a
 * blob shares one swarm), else the URL without its filtered query parameters.
 */
export function taskIdFor(url: string, filter: string[], identifier: string): string {
  const identity = identifier ? `id:${identifier}` : `url:${filterUrl(url, filter)}`;
  return createHash('sha256').update(identity).digest('hex');
}

/** Parses --filter 'k1&k2' into ['k1','k2']. */
export function parseFilter(input: string | string[] | undefined): string[] {
  if (input === undefined) return [];
  return (Array.isArray(input) ? input : [input]).flatMap((s) => String(s).split('&')).map((s) => s.trim()).filter(Boolean);
}

/** Headers about one connection, which the connection to the source decides (undici refuses them). */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'upgrade', 'expect', 'te', 'trailer', 'proxy-connection']);

/**
 * Why a header cannot be sent to a source, or undefined when it can: a token
 * for a name, not one of the connection's own; a value of tabs, visible
 * ASCII and spaces, or Latin-1 beyond ASCII, as an HTTP client sends it.
 */
export function headerProblem(name: string, value: string): string | undefined {
  if (!/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(name)) return 'the name is not an HTTP token';
  if (HOP_BY_HOP.has(name.toLowerCase())) return 'it is about the connection, which the fetch decides';
  if (!/^[\t\x20-\x7e\x80-\xff]*$/.test(value)) return 'the value has a control character or a character beyond Latin-1';
  return undefined;
}

/** Parses repeated --header 'K: V' into an object; throws on malformed input. */
export function parseHeaders(input: string | string[] | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  if (input === undefined) return out;
  for (const h of Array.isArray(input) ? input : [input]) {
    const i = String(h).indexOf(':');
    const name = i > 0 ? String(h).slice(0, i).trim() : '';
    if (!name || !/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(name)) {
      throw new DfError('DF_ERR_INVALID_ARGUMENT', `invalid --header "${String(h).slice(0, 40)}": expected "Name: value"`);
    }
    const value = String(h).slice(i + 1).trim();
    const problem = headerProblem(name, value);
    if (problem) throw new DfError('DF_ERR_INVALID_ARGUMENT', `invalid --header ${name}: ${problem}`);
    out[name] = value;
  }
  return out;
}
