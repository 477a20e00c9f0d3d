/** Digests: "sha256:<64 hex>" for files and blobs, bare hex sha256 for pieces, md5 for --md5. */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { DfError } from './errors';

export interface ParsedDigest { algorithm: 'sha256' | 'md5'; hex: string }

const SHA256_RE = /^sha256:([a-f0-9]{64})$/;

/** Parses "sha256:<hex>" (lower-case, as OCI requires). Throws DF_ERR_INVALID_DIGEST. */
export function parseDigest(input: string): ParsedDigest {
  const m = SHA256_RE.exec(input);
  if (!m) throw new DfError('DF_ERR_INVALID_DIGEST', `invalid digest "${input}": expected sha256:<64 lower-case hex characters>`);
  return { algorithm: 'sha256', hex: m[1] };
}

export function isSha256Digest(input: string): boolean {
  return SHA256_RE.test(input);
}

export function parseMd5(input: string): ParsedDigest {
  const hex = input.toLowerCase();
  if (!/^[a-f0-9]{32}$/.test(hex)) throw new DfError('DF_ERR_INVALID_DIGEST', `invalid md5 "${input}": expected 32 hex characters`);
  return { algorithm: 'md5', hex };
}

export function sha256Hex(data: string | Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

/**
 * Hex sha256 and md5 of a whole file, each only when asked for ('' when
 * not: md5 costs more than twice what sha256 does per byte).
 */
export async function hashFile(filePath: string, want: { sha256: boolean; md5: boolean }): Promise<{ sha256: string; md5: string }> {
  const sha = want.sha256 ? createHash('sha256') : undefined;
  const md5 = want.md5 ? createHash('md5') : undefined;
  for await (const c of createReadStream(filePath, { highWaterMark: 1024 * 1024 }) as AsyncIterable<Buffer>) {
    sha?.update(c);
    md5?.update(c);
  }
  return { sha256: sha?.digest('hex') ?? '', md5: md5?.digest('hex') ?? '' };
}
