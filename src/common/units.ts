/**
 * Sizes, rates and durations as users write them on the command line.
 * Sizes use binary multiples, as Dragonfly does: "20M" = 20 MiB, "1.5G" =
 * 1.5 GiB, "512K" = 512 KiB, "100" = 100 bytes. A trailing "B" or "iB" is
 * accepted ("20MB", "20MiB"). A rate is a size per second.
 */
import { invalidArgument } from './errors';

const SIZE_MULT: Record<string, number> = { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4 };

export function parseSize(input: string | number, what = 'size'): number {
  if (typeof input === 'number') {
    if (!Number.isFinite(input) || input < 0) throw invalidArgument(`invalid ${what} ${input}`);
    return Math.floor(input);
  }
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)(?:i?[bB])?\s*$/.exec(String(input));
  if (!m) throw invalidArgument(`invalid ${what} "${input}": expected a number with an optional K, M, G or T suffix, e.g. 20M`);
  const v = Math.floor(Number(m[1]) * SIZE_MULT[m[2].toUpperCase()]);
  if (!Number.isSafeInteger(v)) throw invalidArgument(`invalid ${what} "${input}": too large`);
  return v;
}

/** A rate in bytes per second; must be positive. */
export function parseRate(input: string | number, what = 'rate'): number {
  const v = parseSize(input, what);
  if (v <= 0) throw invalidArgument(`invalid ${what} "${input}": must be greater than 0`);
  return v;
}

const DUR_MULT: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** Durations like "5m", "30s", "1h30m", "250ms"; a bare number means seconds. Returns ms. */
export function parseDuration(input: string | number, what = 'duration'): number {
  if (typeof input === 'number') {
    if (!Number.isFinite(input) || input < 0) throw invalidArgument(`invalid ${what} ${input}`);
    return Math.round(input * 1000);
  }
  const s = String(input).trim();
  if (/^\d+(\.\d+)?$/.test(s)) return Math.round(Number(s) * 1000);
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h)/gy;
  let total = 0;
  let consumed = 0;
  let m: RegExpExecArray | null;
  while ((m = re.exec(s)) !== null) {
    total += Number(m[1]) * DUR_MULT[m[2]];
    consumed = re.lastIndex;
  }
  if (consumed === 0 || consumed !== s.length) {
    throw invalidArgument(`invalid ${what} "${input}": expected e.g. 30s, 5m, 1h`);
  }
  return Math.round(total);
}

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return `${v.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}
