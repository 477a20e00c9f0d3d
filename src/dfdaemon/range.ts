/**
 * HTTP Range requests for blobs (RFC 9110 section 14). dfdaemon serves one
 * byte range per request, the form registry clients use to resume a pull
 * ("bytes=N-"). A header it cannot honour (bad syntax, several ranges,
 * another unit) is refused with 416 rather than silently ignored, so a client
 * never mistakes a whole blob for the part it asked for.
 */

export type ParsedRange =
  | { kind: 'none' }
  /** bytes=start-end (end inclusive) or bytes=start- (end undefined). */
  | { kind: 'range'; start: number; end?: number }
  /** bytes=-n: the last n bytes. */
  | { kind: 'suffix'; length: number }
  | { kind: 'invalid'; reason: string };

const RANGE_RE = /^bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$/i;

function toSafeInt(s: string): number | undefined {
  const n = Number(s);
  return Number.isSafeInteger(n) ? n : undefined;
}

export function parseRangeHeader(header: string | string[] | undefined): ParsedRange {
  if (header === undefined) return { kind: 'none' };
  if (Array.isArray(header)) {
    if (header.length !== 1) return { kind: 'invalid', reason: 'several Range headers' };
    header = header[0];
  }
  const h = header.trim();
  if (h === '') return { kind: 'none' };
  if (h.includes(',')) return { kind: 'invalid', reason: 'multiple ranges are not supported' };
  const m = RANGE_RE.exec(h);
  if (!m) return { kind: 'invalid', reason: 'expected "bytes=first-last", "bytes=first-" or "bytes=-suffix"' };
  const [, a, b] = m;
  if (a === '' && b === '') return { kind: 'invalid', reason: 'empty range' };
  if (a === '') {
    const n = toSafeInt(b);
    if (n === undefined || n === 0) return { kind: 'invalid', reason: 'suffix length must be a positive integer' };
    return { kind: 'suffix', length: n };
  }
  const start = toSafeInt(a);
  if (start === undefined) return { kind: 'invalid', reason: 'range start too large' };
  if (b === '') return { kind: 'range', start };
  const end = toSafeInt(b);
  if (end === undefined) return { kind: 'invalid', reason: 'range end too large' };
  if (end < start) return { kind: 'invalid', reason: 'range end before its start' };
  return { kind: 'range', start, end };
}

export interface ResolvedRange {
  /** First byte, inclusive. */
  start: number;
  /** Last byte, inclusive. */
  end: number;
}

/**
 * The bytes a range selects in a blob of `total` bytes, clamped to its end;
 * undefined when none (416, "Content-Range: bytes * /total").
 */
export function resolveRange(range: ParsedRange, total: number): ResolvedRange | undefined {
  if (range.kind === 'suffix') {
    if (total === 0) return undefined;
    return { start: Math.max(0, total - range.length), end: total - 1 };
  }
  if (range.kind === 'range') {
    if (range.start >= total) return undefined;
    return { start: range.start, end: Math.min(range.end ?? total - 1, total - 1) };
  }
  return undefined;
}

export function contentRange(r: ResolvedRange, total: number): string {
  return `bytes ${r.start}-${r.end}/${total}`;
}
