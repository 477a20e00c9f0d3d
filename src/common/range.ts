/** HTTP byte ranges: one "bytes=a-b", "bytes=a-" or "bytes=-n" range per request. */
export interface ByteRange {
  /** First byte, inclusive. */
  start: number;
  /** Last byte, inclusive. */
  end: number;
}

/**
 * Parses a Range header against a resource of `length` bytes. Returns
 * undefined for no header, 'unsatisfiable' for a well-formed range outside
 * the resource, 'invalid' for anything malformed or multi-range.
 */
export function parseRange(header: string | undefined, length: number): ByteRange | undefined | 'invalid' | 'unsatisfiable' {
  if (header === undefined || header === '') return undefined;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === '' && m[2] === '')) return 'invalid';
  if (m[1] === '') {
    const n = Number(m[2]);
    if (n === 0) return 'unsatisfiable';
    return { start: Math.max(0, length - n), end: length - 1 };
  }
  const start = Number(m[1]);
  const end = m[2] === '' ? length - 1 : Math.min(Number(m[2]), length - 1);
  if (m[2] !== '' && Number(m[2]) < start) return 'invalid';
  if (start >= length) return 'unsatisfiable';
  return { start, end };
}
