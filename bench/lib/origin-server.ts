/**
 * The benchmark's HTTP origin, run inside the origin host's namespace:
 *
 *   node dist/bench/lib/origin-server.js --file PATH [--port 8080] [--host 0.0.0.0]
 *
 * Serves the one file at /<basename> (GET, HEAD, a single Range), and its own
 * counters at /__stats as JSON: body bytes handed to sockets and requests, so
 * the benchmark can compare them with the link counter. Prints
 * {"ready":true,"port":P} on stdout once it listens; exits on SIGTERM/SIGINT.
 */
import { createReadStream, statSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { basename } from 'node:path';

function arg(name: string, def?: string): string {
  const i = process.argv.indexOf(`--${name}`);
  const v = i >= 0 ? process.argv[i + 1] : def;
  if (v === undefined) {
    process.stderr.write(`origin-server: --${name} is required\n`);
    process.exit(2);
  }
  return v;
}

const file = arg('file');
const name = `/${basename(file)}`;
const size = statSync(file).size;
let bodyBytes = 0;
let requests = 0;

/** Parses "bytes=a-b", "bytes=a-" or "bytes=-n" against the file size; null when unsatisfiable. */
function parseRange(h: string): { start: number; end: number } | null | undefined {
  const m = /^bytes=(\d*)-(\d*)$/.exec(h.trim());
  if (!m || (m[1] === '' && m[2] === '')) return undefined; // not a form we serve: whole file
  let start: number;
  let end: number;
  if (m[1] === '') {
    const n = Number(m[2]);
    start = Math.max(0, size - n);
    end = size - 1;
  } else {
    start = Number(m[1]);
    end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
  }
  return start <= end && start < size ? { start, end } : null;
}

const server = http.createServer((req, res) => {
  const path = (req.url ?? '/').split('?')[0];
  if (path === '/__stats') {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ bodyBytes, requests }));
    return;
  }
  requests++;
  if (path !== name || (req.method !== 'GET' && req.method !== 'HEAD')) {
    res.writeHead(path === name ? 405 : 404, { 'content-length': '0' });
    res.end();
    return;
  }
  let start = 0;
  let end = size - 1;
  let status = 200;
  const headers: http.OutgoingHttpHeaders = { 'accept-ranges': 'bytes', 'content-type': 'application/octet-stream' };
  if (typeof req.headers.range === 'string') {
    const r = parseRange(req.headers.range);
    if (r === null) {
      res.writeHead(416, { 'content-range': `bytes */${size}`, 'content-length': '0' });
      res.end();
      return;
    }
    if (r) {
      ({ start, end } = r);
      status = 206;
      headers['content-range'] = `bytes ${start}-${end}/${size}`;
    }
  }
  headers['content-length'] = String(end - start + 1);
  res.writeHead(status, headers);
  if (req.method === 'HEAD' || size === 0) {
    res.end();
    return;
  }
  const src = createReadStream(file, { start, end, highWaterMark: 1024 * 1024 });
  src.on('data', (chunk) => {
    bodyBytes += chunk.length;
    if (!res.write(chunk)) {
      src.pause();
      res.once('drain', () => src.resume());
    }
  });
  src.on('end', () => res.end());
  src.on('error', () => res.destroy());
  res.on('close', () => src.destroy());
});

const port = Number(arg('port', '8080'));
server.listen(port, arg('host', '0.0.0.0'), () => {
  process.stdout.write(`${JSON.stringify({ ready: true, port: (server.address() as AddressInfo).port })}\n`);
});
const stop = (): void => {
  server.closeAllConnections();
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 2_000).unref();
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
