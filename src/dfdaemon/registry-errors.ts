/**
 * Errors as a registry client expects them: an HTTP status and a JSON body
 * `{"errors":[{"code","message","detail"}]}` (OCI distribution spec, "Error
 * codes"). dfdaemon answers every request it refuses or cannot serve in this
 * shape, so docker, containerd and skopeo print a meaningful message.
 */
import type { ServerResponse } from 'node:http';

export type RegistryErrorCode =
  | 'BLOB_UNKNOWN'
  | 'DIGEST_INVALID'
  | 'MANIFEST_UNKNOWN'
  | 'NAME_INVALID'
  | 'NAME_UNKNOWN'
  | 'RANGE_INVALID'
  | 'TAG_INVALID'
  | 'UNAUTHORIZED'
  | 'DENIED'
  | 'UNSUPPORTED'
  | 'TOOMANYREQUESTS'
  | 'UNKNOWN';

/** An answer to a client request that is not a success. Not a DfError: it is an HTTP reply, not a failure of ours. */
export class RegistryError extends Error {
  readonly status: number;
  readonly code: RegistryErrorCode;
  readonly detail: unknown;

  constructor(status: number, code: RegistryErrorCode, message: string, detail?: unknown) {
    super(message);
    this.name = 'RegistryError';
    this.status = status;
    this.code = code;
    this.detail = detail;
  }
}

/** The registry error code that best names an upstream HTTP status. */
export function codeForStatus(status: number, kind: 'blob' | 'manifest' | 'other' = 'other'): RegistryErrorCode {
  switch (status) {
    case 401: return 'UNAUTHORIZED';
    case 403: return 'DENIED';
    case 404: return kind === 'blob' ? 'BLOB_UNKNOWN' : kind === 'manifest' ? 'MANIFEST_UNKNOWN' : 'NAME_UNKNOWN';
    case 416: return 'RANGE_INVALID';
    case 429: return 'TOOMANYREQUESTS';
    default: return 'UNKNOWN';
  }
}

/** Headers every locally made registry answer carries. */
export const API_VERSION_HEADER = { 'docker-distribution-api-version': 'registry/2.0' } as const;

/**
 * Writes the error if nothing was sent yet; otherwise the response is already
 * streaming a body and the only honest signal left is to cut the connection.
 */
export function sendRegistryError(res: ServerResponse, err: RegistryError, extraHeaders: Record<string, string> = {}): void {
  if (res.headersSent) {
    res.destroy(err);
    return;
  }
  const body = errorBody(err);
  res.writeHead(err.status, {
    ...API_VERSION_HEADER,
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(body),
    ...extraHeaders,
  });
  res.end(res.req?.method === 'HEAD' ? undefined : body);
}

/** The registry API's error body for err. */
function errorBody(err: RegistryError): string {
  const entry: Record<string, unknown> = { code: err.code, message: err.message };
  if (err.detail !== undefined) entry.detail = err.detail;
  return JSON.stringify({ errors: [entry] });
}

/**
 * The whole answer, as bytes for a raw socket, to a request Node's HTTP
 * parser refused (no ServerResponse exists for it): 431 when its head was too
 * large, 400 otherwise, with the connection closed.
 */
export function rawRegistryError(parserCode: string | undefined): string {
  const [status, reason, message] = parserCode === 'HPE_HEADER_OVERFLOW'
    ? [431, 'Request Header Fields Too Large', 'request head too large']
    : [400, 'Bad Request', 'malformed HTTP request'];
  const body = errorBody(new RegistryError(status, 'UNSUPPORTED', message));
  const headers = { ...API_VERSION_HEADER, 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body), connection: 'close' };
  return `HTTP/1.1 ${status} ${reason}\r\n${Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n${body}`;
}
