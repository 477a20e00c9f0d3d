import { createHash } from 'node:crypto';
import { DfError } from './errors';

/** Parses an http(s) URL or throws DF_ERR_INVALID_URL. */
export function parseHttpUrl(input: string): URL {
  let u: URL;
  try {
    u = new URL(input);
  } catch {
    throw new DfError('DF_ERR_INVALID_URL', `invalid URL "${input}"`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') {
    throw new DfError('DF_ERR_INVALID_URL', `unsupported URL scheme "${u.protocol.replace(/:$/, '')}" in "${input}": only http and https are supported`);
  }
  if (!u.hostname) throw new DfError('DF_ERR_INVALID_URL', `invalid URL "${input}": no host`);
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
    if (/[\r\n\0]/.test(value)) throw new DfError('DF_ERR_INVALID_ARGUMENT', `invalid --header ${name}: value contains a line break`);
    out[name] = value;
  }
  return out;
}
