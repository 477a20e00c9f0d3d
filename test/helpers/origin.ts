/** A real HTTP origin for tests: serves files, counts the bytes it sends, and injects faults on demand. */
import * as http from 'node:http';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';

export interface OriginFaults {
  /** Answer every request with this status. */
  status?: number;
  /** Send headers and part of the body, then stop sending without closing. */
  stallAfterBytes?: number;
  /** Close the connection (cleanly: every byte written arrives) after this many body bytes... */
  dropAfterBytes?: number;
  /** ...on this many answers (counted down). */
  drops?: number;
  /** Answer a range request with the whole file (200), as a source without range support does. */
  ignoreRange?: boolean;
}

export interface Origin {
  url: (name: string) => string;
  port: number;
  /** Body bytes sent, per path and in total. */
  bytesSent: () => number;
  bytesFor: (name: string) => number;
  requests: () => number;
  /** The Range header of every request that had one. */
  ranges: string[];
  faults: OriginFaults;
  close: () => Promise<void>;
}

export async function makeRandomFile(dir: string, name: string, bytes: number): Promise<{ path: string; sha256: string }> {
  const p = path.join(dir, name);
  const h = createHash('sha256');
  const fh = await fsp.open(p, 'w');
  const chunk = 1024 * 1024;
  for (let off = 0; off < bytes; off += chunk) {
    const b = randomBytes(Math.min(chunk, bytes - off));
    h.update(b);
    await fh.write(b);
  }
  await fh.close();
  return { path: p, sha256: h.digest('hex') };
}

export async function sha256File(p: string): Promise<string> {
  const h = createHash('sha256');
  for await (const c of fs.createReadStream(p)) h.update(c as Buffer);
  return h.digest('hex');
}

export { tempDir } from './tmp';

/** Serves files from dir at /<name>. */
export async function startOrigin(dir: string): Promise<Origin> {
  const perPath = new Map<string, number>();
  let total = 0;
  let reqs = 0;
  const ranges: string[] = [];
  const faults: OriginFaults = {};
  const stalled = new Set<http.ServerResponse>();
  const server = http.createServer((req, res) => {
    reqs++;
    const name = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname.slice(1));
    if (faults.status) { res.writeHead(faults.status); res.end('fault'); return; }
    const file = path.join(dir, path.basename(name));
    fs.stat(file, (err, st) => {
      if (err || !st.isFile()) { res.writeHead(404); res.end('not found'); return; }
      const etag = `"${st.size}-${Math.floor(st.mtimeMs)}"`;
      if (req.headers.range) ranges.push(req.headers.range);
      const m = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
      const ifRange = req.headers['if-range'];
      const ranged = m !== null && !faults.ignoreRange && (ifRange === undefined || ifRange === etag);
      const start = ranged ? Number(m[1]) : 0;
      const end = ranged && m[2] !== '' ? Math.min(Number(m[2]), st.size - 1) : st.size - 1;
      if (ranged && (start >= st.size || end < start)) { res.writeHead(416); res.end(); return; }
      const head = { 'Content-Length': String(end - start + 1), 'Content-Type': 'application/octet-stream', ETag: etag };
      if (start > 0 || end < st.size - 1) res.writeHead(206, { ...head, 'Content-Range': `bytes ${start}-${end}/${st.size}` });
      else res.writeHead(200, head);
      if (req.method === 'HEAD') { res.end(); return; }
      const src = fs.createReadStream(file, { start, end });
      let sent = 0;
      const dropAt = faults.drops && faults.drops > 0 && faults.dropAfterBytes !== undefined ? faults.dropAfterBytes : -1;
      if (dropAt >= 0) faults.drops! -= 1;
      src.on('data', (c) => {
        let b = c as Buffer;
        if (faults.stallAfterBytes !== undefined && sent + b.length > faults.stallAfterBytes) {
          src.destroy();
          stalled.add(res);
          return;
        }
        if (dropAt >= 0 && sent + b.length > dropAt) {
          b = b.subarray(0, dropAt - sent);
          src.destroy();
          sent += b.length;
          total += b.length;
          perPath.set(name, (perPath.get(name) ?? 0) + b.length);
          res.write(b, () => res.socket?.end());
          return;
        }
        sent += b.length;
        total += b.length;
        perPath.set(name, (perPath.get(name) ?? 0) + b.length);
        if (!res.write(b)) { src.pause(); res.once('drain', () => src.resume()); }
      });
      src.on('end', () => res.end());
      res.on('close', () => src.destroy());
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    url: (name) => `http://127.0.0.1:${port}/${name}`,
    bytesSent: () => total,
    bytesFor: (name) => perPath.get(name) ?? 0,
    requests: () => reqs,
    ranges,
    faults,
    close: async () => {
      for (const r of stalled) r.destroy();
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
