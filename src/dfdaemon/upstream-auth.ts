/**
 * Credentials dfdaemon itself holds for the upstream (registry_mirror.auth),
 * used only when the client sent no Authorization of its own.
 *
 * A registry asks for credentials in one of two ways (WWW-Authenticate on a
 * 401): "Basic" (htpasswd registries) takes them as they are; "Bearer"
 * (Docker Hub, Harbor, token-auth distribution) wants them traded at its
 * token service for a short-lived token per repository scope. We send Basic
 * first and, on a Bearer challenge, fetch and cache a token, so both kinds
 * work with the same config. Secrets are never logged: only scopes are.
 */
import type { Dispatcher } from 'undici';
import { request } from 'undici';
import type { Logger } from '../common/logger';
import type { RegistryAuth } from './config';

export interface Challenge {
  /** Lower-case scheme: "basic", "bearer"... */
  scheme: string;
  /** Parameter names lower-cased; values unquoted. */
  params: Record<string, string>;
}

/**
 * Parses the first challenge of a WWW-Authenticate header, e.g.
 * `Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull"`.
 */
export function parseChallenge(header: string | string[] | undefined): Challenge | undefined {
  const h = Array.isArray(header) ? header[0] : header;
  if (!h) return undefined;
  const m = /^\s*([A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]*)\s*(.*)$/s.exec(h);
  if (!m) return undefined;
  const params: Record<string, string> = {};
  const re = /\s*([A-Za-z0-9!#$%&'*+.^_`|~-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))\s*(?:,|$)/gy;
  const rest = m[2];
  let p: RegExpExecArray | null;
  while (re.lastIndex < rest.length && (p = re.exec(rest)) !== null) {
    const name = p[1].toLowerCase();
    // A second challenge starts with a scheme token and no "=": stop there.
    params[name] = p[2] !== undefined ? p[2].replace(/\\(.)/g, '$1') : p[3];
  }
  return { scheme: m[1].toLowerCase(), params };
}

/** The pull scope of a repository, as token services name it. */
export function pullScope(repository: string): string {
  return `repository:${repository}:pull`;
}

interface CachedToken {
  token: string;
  /** performance.now() after which the token is not used any more. */
  expiresAtMs: number;
}

/** Tokens are dropped this long before the service says they expire (clock skew, request time). */
const EXPIRY_MARGIN_MS = 10_000;
/** Docker's token spec: a token without expires_in lasts 60 s. */
const DEFAULT_TOKEN_LIFETIME_S = 60;
/** Tokens kept at most; oldest dropped first. */
const MAX_CACHED_TOKENS = 1024;

export class UpstreamCredentials {
  private readonly basic: string | undefined;
  private readonly tokens = new Map<string, CachedToken>();
  private readonly dispatcher: Dispatcher;
  private readonly logger: Logger;

  constructor(auth: RegistryAuth | undefined, dispatcher: Dispatcher, logger: Logger) {
    this.basic = auth ? `Basic ${Buffer.from(`${auth.username}:${auth.password}`, 'utf8').toString('base64')}` : undefined;
    this.dispatcher = dispatcher;
    this.logger = logger;
  }

  get configured(): boolean {
    return this.basic !== undefined;
  }

  /** The Authorization to send for a scope ("" for /v2/): a cached token, else Basic; undefined without credentials. */
  authorization(scope: string): string | undefined {
    if (!this.basic) return undefined;
    const t = this.tokens.get(scope);
    if (t && t.expiresAtMs > performance.now()) return `Bearer ${t.token}`;
    if (t) this.tokens.delete(scope);
    return this.basic;
  }

  /**
   * Trades the credentials for a token at the challenge's realm and caches it
   * under `scope`. Resolves undefined when the challenge is not a usable
   * Bearer one or the token service refuses: the caller then returns the
   * upstream's own 401 to the client.
   */
  async fetchToken(challenge: Challenge, scope: string, signal?: AbortSignal): Promise<string | undefined> {
    if (!this.basic || challenge.scheme !== 'bearer' || !challenge.params.realm) return undefined;
    let realm: URL;
    try {
      realm = new URL(challenge.params.realm);
    } catch {
      return undefined;
    }
    if (realm.protocol !== 'https:' && realm.protocol !== 'http:') return undefined;
    if (challenge.params.service) realm.searchParams.set('service', challenge.params.service);
    const wanted = challenge.params.scope ?? scope;
    if (wanted) realm.searchParams.set('scope', wanted);
    try {
      const res = await request(realm, {
        method: 'GET',
        headers: { authorization: this.basic, accept: 'application/json' },
        dispatcher: this.dispatcher,
        signal,
      });
      if (res.statusCode !== 200) {
        await res.body.dump();
        this.logger.warn({ status: res.statusCode, scope: wanted }, 'token service refused the configured credentials');
        return undefined;
      }
      const json = (await res.body.json()) as { token?: unknown; access_token?: unknown; expires_in?: unknown };
      const token = typeof json.token === 'string' ? json.token : typeof json.access_token === 'string' ? json.access_token : undefined;
      if (!token) return undefined;
      const lifetimeS = typeof json.expires_in === 'number' && json.expires_in > 0 ? json.expires_in : DEFAULT_TOKEN_LIFETIME_S;
      if (this.tokens.size >= MAX_CACHED_TOKENS) this.tokens.delete(this.tokens.keys().next().value as string);
      this.tokens.set(scope, { token, expiresAtMs: performance.now() + Math.max(0, lifetimeS * 1000 - EXPIRY_MARGIN_MS) });
      this.logger.debug({ scope: wanted }, 'fetched upstream token');
      return token;
    } catch (e) {
      this.logger.warn({ err: (e as Error).message, scope: wanted }, 'token service unreachable');
      return undefined;
    }
  }
}
