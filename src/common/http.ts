/** Shared undici plumbing: a dispatcher that follows redirects, and status checks. */
import { Agent, interceptors, request, type Dispatcher } from 'undici';
import { DfError } from './errors';

export interface SourceAgentOptions {
  /** Time to wait for response headers, ms. */
  headersTimeoutMs?: number;
  /** Longest pause between body chunks before the source counts as stalled, ms. */
  bodyTimeoutMs?: number;
  /** Accept self-signed certificates. */
  insecure?: boolean;
  /** Extra CA certificates (PEM). */
  ca?: string[];
  maxRedirections?: number;
}

export function sourceAgent(opts: SourceAgentOptions = {}): Dispatcher {
  const connect: Record<string, unknown> = {};
  if (opts.insecure) connect.rejectUnauthorized = false;
  if (opts.ca && opts.ca.length) connect.ca = opts.ca;
  return new Agent({
    headersTimeout: opts.headersTimeoutMs ?? 30_000,
    bodyTimeout: opts.bodyTimeoutMs ?? 30_000,
    connect,
  }).compose(interceptors.redirect({ maxRedirections: opts.maxRedirections ?? 5 }));
}

/** Maps an undici/network error to a coded one. */
export function networkError(err: unknown, what: string): DfError {
  if (err instanceof DfError) return err;
  const e = err as { code?: string; message?: string };
  if (e?.code === 'UND_ERR_HEADERS_TIMEOUT' || e?.code === 'UND_ERR_BODY_TIMEOUT' || e?.code === 'UND_ERR_CONNECT_TIMEOUT') {
    return new DfError('DF_ERR_TIMEOUT', `${what} stalled (${e.code})`, { cause: err });
  }
  return new DfError('DF_ERR_SOURCE_UNREACHABLE', `${what} unreachable: ${e?.code ?? ''} ${e?.message ?? String(err)}`.replace(/\s+/g, ' ').trim(), { cause: err });
}

/**
 * GETs a source and checks it answered 200. Resolves with the body and the
 * Content-Length (-1 when absent); rejects with DF_ERR_SOURCE_STATUS (and the
 * status) or a network error code.
 */
export async function openSource(url: string, headers: Record<string, string>, dispatcher: Dispatcher, signal?: AbortSignal):
  Promise<{ body: Dispatcher.ResponseData['body']; contentLength: number }> {
  let res: Dispatcher.ResponseData;
  try {
    res = await request(url, { method: 'GET', headers, dispatcher, signal });
  } catch (err) {
    throw networkError(err, `source ${redactUrl(url)}`);
  }
  if (res.statusCode !== 200) {
    res.body.resume();
    throw new DfError('DF_ERR_SOURCE_STATUS', `source ${redactUrl(url)} answered HTTP ${res.statusCode}`, { status: res.statusCode });
  }
  const len = res.headers['content-length'];
  return { body: res.body, contentLength: typeof len === 'string' && /^\d+$/.test(len) ? Number(len) : -1 };
}

/** Drops the query string and any userinfo: what a URL may show in logs. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    return `${u.protocol}//${u.host}${u.pathname}`;
  } catch {
    return '<invalid url>';
  }
}
