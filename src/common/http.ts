/** Shared undici plumbing: a dispatcher that follows redirects, and status checks. */
import type { Readable } from 'node:stream';
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

export interface SourceResponse {
  body: Dispatcher.ResponseData['body'];
  /** -1 when the source sent no Content-Length. */
  contentLength: number;
  /** What identifies this version of the source for If-Range: a strong ETag, else Last-Modified, else ''. */
  validator: string;
}

/**
 * Where a broken-off fetch goes on: byte `from` (to byte `to`, inclusive, or
 * the end) of a `length`-byte source whose version is `validator`.
 */
export interface ResumeAt { from: number; to?: number; length: number; validator: string }

/**
 * Drops a body we will not read, with its connection. Destroying an undici
 * body emits an abort error: it is expected here and must not become an
 * unhandled 'error' (which would end the process).
 */
export function discard(body: Readable): void {
  body.on('error', () => undefined);
  body.destroy();
}

/**
 * GETs a source and checks it answered 200. Resolves with the body and the
 * Content-Length (-1 when absent); rejects with DF_ERR_SOURCE_STATUS (and the
 * status) or a network error code. With `resume`, asks for the range from
 * resume.from (If-Range the validator, when there is one) and accepts only a
 * 206 for exactly that range: anything else means the source cannot resume or
 * has changed.
 */
export async function openSource(url: string, headers: Record<string, string>, dispatcher: Dispatcher, signal?: AbortSignal,
  resume?: ResumeAt): Promise<SourceResponse> {
  let sent = headers;
  if (resume) {
    sent = Object.fromEntries(Object.entries(headers).filter(([k]) => !/^(range|if-range)$/i.test(k)));
    sent.range = `bytes=${resume.from}-${resume.to ?? ''}`;
    if (resume.validator) sent['if-range'] = resume.validator;
  }
  let res: Dispatcher.ResponseData;
  try {
    res = await request(url, { method: 'GET', headers: sent, dispatcher, signal });
  } catch (err) {
    throw networkError(err, `source ${redactUrl(url)}`);
  }
  const etag = res.headers.etag;
  const lastModified = res.headers['last-modified'];
  const validator = typeof etag === 'string' && !etag.startsWith('W/') ? etag : typeof lastModified === 'string' ? lastModified : '';
  if (resume) {
    const want = `bytes ${resume.from}-${resume.to ?? resume.length - 1}/${resume.length}`;
    const got = String(res.headers['content-range'] ?? '');
    if (res.statusCode !== 206 || got !== want) {
      discard(res.body);
      throw new DfError('DF_ERR_SOURCE_STATUS', res.statusCode !== 206
        ? `source ${redactUrl(url)} answered HTTP ${res.statusCode} to a request resuming at byte ${resume.from}: it cannot resume, or the file changed`
        : `source ${redactUrl(url)} answered a request resuming at byte ${resume.from} with Content-Range "${got.slice(0, 80)}", expected "${want}"`,
      { status: res.statusCode });
    }
    return { body: res.body, contentLength: resume.length, validator };
  }
  if (res.statusCode !== 200) {
    // Not read: an error page may be endless, and the connection goes with it.
    discard(res.body);
    throw new DfError('DF_ERR_SOURCE_STATUS', `source ${redactUrl(url)} answered HTTP ${res.statusCode}`, { status: res.statusCode });
  }
  const len = res.headers['content-length'];
  return { body: res.body, contentLength: typeof len === 'string' && /^\d+$/.test(len) ? Number(len) : -1, validator };
}

/** A source that breaks off is asked for the rest this many times in a row (progress resets the count)... */
const RESUME_TRIES = 3;
/** ...where progress is at least this many bytes since the last try... */
const RESUME_PROGRESS_BYTES = 1024 * 1024;
/** ...waiting this long before the first try, twice as long before each next. */
const RESUME_BACKOFF_MS = 250;

/** Waits ms, or less when the signal aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(done, ms);
    function done() { clearTimeout(t); signal?.removeEventListener('abort', done); resolve(); }
    signal?.addEventListener('abort', done, { once: true });
  });
}

export interface ResumableBodyOptions {
  headers: Record<string, string>;
  dispatcher: Dispatcher;
  signal?: AbortSignal;
  /** The caller checks a digest of the whole: a resume is safe even without a validator. */
  digestChecked: boolean;
  /** Told before each resume. */
  onResume?: (offset: number, attempt: number, err: DfError) => void;
}

/**
 * The body of an opened source, chunk by chunk, checked against its
 * Content-Length. When the connection breaks off (network error, stall,
 * short body) the rest is asked for with a range request, when the source
 * can tell it is still the same file (a validator) or the caller checks a
 * digest; RESUME_TRIES times in a row at most. Errors are coded.
 */
export async function* resumableBody(url: string, first: SourceResponse, opts: ResumableBodyOptions): AsyncGenerator<Buffer> {
  const length = first.contentLength;
  let body: SourceResponse['body'] | undefined = first.body;
  let offset = 0;
  let failedTries = 0;
  let resumedAt = 0;
  for (;;) {
    try {
      body ??= (await openSource(url, opts.headers, opts.dispatcher, opts.signal, { from: offset, length, validator: first.validator })).body;
      for await (const raw of body) {
        const chunk = raw as Buffer;
        if (length >= 0 && offset + chunk.length > length) {
          throw new DfError('DF_ERR_SOURCE_TRUNCATED', `source sent more than its Content-Length ${length}`);
        }
        offset += chunk.length;
        yield chunk;
      }
      if (length < 0 || offset === length) return;
      throw new DfError('DF_ERR_SOURCE_TRUNCATED', `source sent ${offset} of ${length} bytes`);
    } catch (err) {
      const e = err instanceof DfError ? err : networkError(err, `source ${redactUrl(url)}`);
      const brokeOff = e.code === 'DF_ERR_SOURCE_UNREACHABLE' || e.code === 'DF_ERR_TIMEOUT'
        || (e.code === 'DF_ERR_SOURCE_TRUNCATED' && offset < length);
      const sameFile = first.validator !== '' || opts.digestChecked;
      if (offset - resumedAt >= RESUME_PROGRESS_BYTES) failedTries = 0;
      if (!brokeOff || !sameFile || length <= 0 || opts.signal?.aborted || failedTries >= RESUME_TRIES) throw e;
      failedTries++;
      resumedAt = offset;
      opts.onResume?.(offset, failedTries, e);
      body?.destroy();
      body = undefined;
      await sleep(RESUME_BACKOFF_MS * 2 ** (failedTries - 1), opts.signal);
    }
  }
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
