/**
 * The program of the `relay` scenario: the least work a Node program on every
 * host of a swarm does. It starts, serves the source file (the one file on the
 * shared disk) as a plain byte stream to whoever connects, takes the same
 * number of bytes from the next host of a ring and writes them to OUT, and
 * exits when both are done. No pieces, digests, scheduler, HTTP or rate caps:
 * each host receives F and sends F, as a peer of the p2p scenario does, and
 * the CPU it costs is what moving the bytes through Node and this machine's
 * network stack costs on its own.
 *
 *   node relay.js LISTEN_IP PORT FILE NEXT_IP OUT
 */
import * as fs from 'node:fs';
import * as net from 'node:net';

const CHUNK_BYTES = 256 * 1024;
/** The next host may not listen yet (every host starts at once): ask again this often, ms. */
const RETRY_MS = 20;
const GIVE_UP_MS = 30_000;

function fail(why: string): never {
  process.stderr.write(`relay: ${why}\n`);
  process.exit(1);
}

const [listenIp, portArg, file, nextIp, out] = process.argv.slice(2);
const port = Number(portArg);
if (!listenIp || !Number.isInteger(port) || port <= 0 || !file || !nextIp || !out) {
  fail('usage: relay.js LISTEN_IP PORT FILE NEXT_IP OUT');
}
const size = fs.statSync(file).size;
let sent = false;
let received = false;
const maybeExit = (): void => { if (sent && received) process.exit(0); };

/** Streams the file to one connection, reading the next chunk once the last one is written. */
function serve(socket: net.Socket): void {
  const fd = fs.openSync(file, 'r');
  const buf = Buffer.allocUnsafe(CHUNK_BYTES);
  let pos = 0;
  socket.on('error', (e) => fail(`serving: ${e.message}`));
  const next = (): void => {
    if (pos >= size) {
      fs.closeSync(fd);
      socket.end(() => { sent = true; maybeExit(); });
      return;
    }
    const n = fs.readSync(fd, buf, 0, Math.min(CHUNK_BYTES, size - pos), pos);
    pos += n;
    socket.write(buf.subarray(0, n), (err) => (err ? fail(`serving: ${err.message}`) : next()));
  };
  next();
}

function fetchFromNext(deadline: number): void {
  const fd = fs.openSync(out, 'w');
  const buf = Buffer.allocUnsafe(CHUNK_BYTES);
  let got = 0;
  const socket = net.connect({
    host: nextIp, port,
    onread: {
      buffer: buf,
      callback: (n: number): boolean => {
        for (let at = 0; at < n;) at += fs.writeSync(fd, buf, at, n - at, got + at);
        got += n;
        if (got === size) {
          fs.closeSync(fd);
          socket.destroy();
          received = true;
          maybeExit();
        }
        return true;
      },
    },
  });
  socket.on('error', (e: NodeJS.ErrnoException) => {
    fs.closeSync(fd);
    if (e.code === 'ECONNREFUSED' && got === 0 && Date.now() < deadline) setTimeout(() => fetchFromNext(deadline), RETRY_MS);
    else fail(`fetching from ${nextIp}:${port}: ${e.message}`);
  });
  socket.on('end', () => { if (got !== size) fail(`${nextIp}:${port} sent ${got} of ${size} bytes`); });
}

net.createServer({ noDelay: true }, serve).listen(port, listenIp, () => fetchFromNext(Date.now() + GIVE_UP_MS));
