/** Numbers for the benchmark: link rates, the lower bound, medians, and the printed table. */

const TC_UNITS: Record<string, number> = {
  bit: 1, kbit: 1e3, mbit: 1e6, gbit: 1e9, tbit: 1e12,
  kibit: 1024, mibit: 1024 ** 2, gibit: 1024 ** 3,
  // tc's "bps" means bytes per second.
  bps: 8, kbps: 8e3, mbps: 8e6, gbps: 8e9,
  kibps: 8 * 1024, mibps: 8 * 1024 ** 2, gibps: 8 * 1024 ** 3,
};

/** A tc rate ("50mbit", "1gbit", "200kbit", "10mbps" = 10 MB/s) in bits per second. */
export function parseTcRate(input: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(input);
  const unit = (m?.[2] ?? '').toLowerCase() || 'bps';
  const mult = TC_UNITS[unit];
  if (!m || mult === undefined || Number(m[1]) <= 0) {
    throw new Error(`invalid rate "${input}": expected a tc rate such as 50mbit, 200mbit or 1gbit`);
  }
  return Number(m[1]) * mult;
}

/**
 * Kumar & Ross lower bound, seconds, for F bytes from one source with uplink
 * Us to n peers with uplinks u and downlinks d (all bits per second):
 * max(F/Us, F/d, n*F/(Us + n*u)).
 */
export function lowerBoundS(fileBytes: number, n: number, us: number, u: number, d: number): number {
  const f = fileBytes * 8;
  return Math.max(f / us, f / d, (n * f) / (us + n * u));
}

export function median(xs: number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

export const round = (x: number, digits = 2): number => {
  const p = 10 ** digits;
  return Math.round(x * p) / p;
};

export function fmtBytes(n: number): string {
  if (n >= 1024 ** 3) return `${round(n / 1024 ** 3, 2)} GiB`;
  if (n >= 1024 ** 2) return `${round(n / 1024 ** 2, 1)} MiB`;
  if (n >= 1024) return `${round(n / 1024, 1)} KiB`;
  return `${n} B`;
}

export function fmtRate(bitsPerSec: number): string {
  if (bitsPerSec >= 1e9) return `${round(bitsPerSec / 1e9, 2)} Gbit/s`;
  if (bitsPerSec >= 1e6) return `${round(bitsPerSec / 1e6, 1)} Mbit/s`;
  return `${round(bitsPerSec / 1e3, 1)} kbit/s`;
}

/** A plain-text table with right-aligned columns (left-aligned first column). */
export function formatTable(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string => cells
    .map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i])))
    .join('  ')
    .trimEnd();
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}
