/**
 * Coded errors. The code decides what happens (exit code, HTTP status, gRPC
 * status, whether to fall back to the source); the message explains it to a
 * human. One table maps every code to its statuses.
 */

/**
 * gRPC status codes (fixed by the gRPC protocol). Kept here rather than
 * imported so that code which only needs error codes does not load gRPC.
 */
export const GrpcStatus = {
  OK: 0, CANCELLED: 1, UNKNOWN: 2, INVALID_ARGUMENT: 3, DEADLINE_EXCEEDED: 4, NOT_FOUND: 5, ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7, RESOURCE_EXHAUSTED: 8, FAILED_PRECONDITION: 9, ABORTED: 10, OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12, INTERNAL: 13, UNAVAILABLE: 14, DATA_LOSS: 15, UNAUTHENTICATED: 16,
} as const;
type GrpcStatus = (typeof GrpcStatus)[keyof typeof GrpcStatus];

export interface CodeInfo {
  /** Exit code of a CLI that fails with this error. */
  exit: number;
  /** HTTP status a server answers with. */
  http: number;
  /** gRPC status a server answers with. */
  grpc: GrpcStatus;
}

/**
 * Exit codes (documented in --help and the README):
 *   0 ok, 1 internal error, 2 invalid argument, 3 output path unusable,
 *   4 source unreachable or answered an error, 5 digest mismatch,
 *   6 P2P network unavailable/failed and --notbs given, 7 timeout.
 */
export const CODES = {
  DF_ERR_INTERNAL: { exit: 1, http: 500, grpc: GrpcStatus.INTERNAL },
  DF_ERR_INVALID_ARGUMENT: { exit: 2, http: 400, grpc: GrpcStatus.INVALID_ARGUMENT },
  DF_ERR_INVALID_URL: { exit: 2, http: 400, grpc: GrpcStatus.INVALID_ARGUMENT },
  DF_ERR_INVALID_DIGEST: { exit: 2, http: 400, grpc: GrpcStatus.INVALID_ARGUMENT },
  DF_ERR_INVALID_CONFIG: { exit: 2, http: 400, grpc: GrpcStatus.INVALID_ARGUMENT },
  DF_ERR_OUTPUT_PATH: { exit: 3, http: 500, grpc: GrpcStatus.INTERNAL },
  DF_ERR_SOURCE_UNREACHABLE: { exit: 4, http: 502, grpc: GrpcStatus.UNAVAILABLE },
  DF_ERR_SOURCE_STATUS: { exit: 4, http: 502, grpc: GrpcStatus.FAILED_PRECONDITION },
  DF_ERR_SOURCE_TRUNCATED: { exit: 4, http: 502, grpc: GrpcStatus.DATA_LOSS },
  DF_ERR_DIGEST_MISMATCH: { exit: 5, http: 502, grpc: GrpcStatus.DATA_LOSS },
  DF_ERR_PIECE_DIGEST_MISMATCH: { exit: 5, http: 502, grpc: GrpcStatus.DATA_LOSS },
  DF_ERR_SUPERNODE_UNAVAILABLE: { exit: 6, http: 503, grpc: GrpcStatus.UNAVAILABLE },
  DF_ERR_P2P_FAILED: { exit: 6, http: 502, grpc: GrpcStatus.ABORTED },
  DF_ERR_PEER_UNREACHABLE: { exit: 6, http: 502, grpc: GrpcStatus.UNAVAILABLE },
  DF_ERR_TASK_NOT_FOUND: { exit: 6, http: 404, grpc: GrpcStatus.NOT_FOUND },
  DF_ERR_TASK_FAILED: { exit: 6, http: 502, grpc: GrpcStatus.ABORTED },
  DF_ERR_RANGE_NOT_SATISFIABLE: { exit: 1, http: 416, grpc: GrpcStatus.OUT_OF_RANGE },
  DF_ERR_TIMEOUT: { exit: 7, http: 504, grpc: GrpcStatus.DEADLINE_EXCEEDED },
  DF_ERR_NO_ADVERTISE_IP: { exit: 2, http: 500, grpc: GrpcStatus.INTERNAL },
  DF_ERR_CLOSED: { exit: 1, http: 503, grpc: GrpcStatus.CANCELLED },
} as const satisfies Record<string, CodeInfo>;

export type ErrorCode = keyof typeof CODES;

export function isErrorCode(x: unknown): x is ErrorCode {
  return typeof x === 'string' && Object.prototype.hasOwnProperty.call(CODES, x);
}

export class DfError extends Error {
  readonly code: ErrorCode;
  /** Upstream HTTP status, when the error came from one. */
  readonly status?: number;

  constructor(code: ErrorCode, message: string, opts: { cause?: unknown; status?: number } = {}) {
    super(message, opts.cause !== undefined ? { cause: opts.cause } : undefined);
    this.name = 'DfError';
    this.code = code;
    if (opts.status !== undefined) this.status = opts.status;
  }

  get exitCode(): number { return CODES[this.code].exit; }
  get httpStatus(): number { return CODES[this.code].http; }
  get grpcStatus(): GrpcStatus { return CODES[this.code].grpc; }
}

export const invalidArgument = (msg: string) => new DfError('DF_ERR_INVALID_ARGUMENT', msg);

/** Wraps anything thrown into a DfError, keeping a DfError as it is. */
export function toDfError(err: unknown, fallback: ErrorCode = 'DF_ERR_INTERNAL'): DfError {
  if (err instanceof DfError) return err;
  const e = err as { code?: unknown; message?: unknown; details?: unknown } | undefined;
  if (e && isErrorCode(e.code)) return new DfError(e.code, String(e.message ?? e.code), { cause: err });
  // gRPC errors carry our code (and an upstream HTTP status) at the start of `details` (see grpcError).
  if (e && typeof e.details === 'string') {
    const m = /^(DF_ERR_[A-Z_]+)(?:\[(\d{3})\])?: ?(.*)$/s.exec(e.details);
    if (m && isErrorCode(m[1])) return new DfError(m[1], m[3] || m[1], { cause: err, status: m[2] ? Number(m[2]) : undefined });
  }
  return new DfError(fallback, e && typeof e.message === 'string' ? e.message : String(err), { cause: err });
}

/** Longest error message sent in a gRPC status, in characters. */
const MAX_STATUS_MESSAGE = 1024;

/** A gRPC ServiceError-shaped object carrying the code in `details`. */
export function grpcError(err: unknown): { code: GrpcStatus; details: string; message: string } {
  const e = toDfError(err);
  const status = e.status !== undefined ? `[${e.status}]` : '';
  // A status travels in a header: one too large never reaches the caller (and breaks its connection).
  const message = e.message.length > MAX_STATUS_MESSAGE ? `${e.message.slice(0, MAX_STATUS_MESSAGE)}...` : e.message;
  return { code: e.grpcStatus, details: `${e.code}${status}: ${message}`, message };
}

/** One line, for a CLI's stderr: "dfget: DF_ERR_X: message". */
export function oneLine(prog: string, err: DfError): string {
  return `${prog}: ${err.code}: ${err.message.replace(/\s*\n\s*/g, ' ')}`;
}
