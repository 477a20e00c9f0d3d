/**
 * The socket in front of a piece server. Nearly every request a piece server
 * gets is one kind: GET of a piece path with one Range, from a peer's piece
 * client, on a kept-alive connection. The front answers those itself: it
 * reads the request head off the socket with a few string operations and
 * writes the head of the 206 and the file's bytes straight to the socket,
 * paced as sendFileRange paces them, with none of Node's HTTP server (its
 * parser, request and response objects and stream layers) in between:
 * serving 64 MiB at 50 Mbit/s to 8 clients took the server 270-294 ms of CPU
 * against 368-377 ms through the HTTP server (bench/README.md).
 *
 * Anything else (another path or method, a file that is not there, a range
 * that is malformed, unsatisfiable or not yet available, a head with a body,
 * an upgrade, or anything unusual) goes to the HTTP server behind the front,
 * together with its connection and the bytes read so far: that server answers
 * it, and every later request on that connection, exactly as it would alone.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import type * as http from 'node:http';
import { pumpFileRange, sendFileRange, sendText, type PumpOptions } from './file-server';
import { parseRange, type ByteRange } from './range';
import type { Logger } from './logger';
import type { RateLimiter } from './ratelimit';

/** What a request target names, for the front to serve. */
export interface RangeTarget {
  filePath: string;
  /** A range must end before this byte (the bytes written so far, for a file still growing). */
  available: number;
  /** The length in Content-Range: the file's whole length, or '*' while it is unknown. */
  total: number | '*';
}

/**
 * The range a Range header asks of a target: undefined for no header,
 * 'invalid' when malformed or multi-range, 'unsatisfiable' when outside the
 * file or past its available bytes. The front and the HTTP handlers behind it
 * judge a request by this one rule.
 */
export function targetRange(header: string | undefined, target: RangeTarget): ByteRange | undefined | 'invalid' | 'unsatisfiable' {
  const range = parseRange(header, target.total === '*' ? Number.MAX_SAFE_INTEGER : target.total);
  return typeof range === 'object' && range.end >= target.available ? 'unsatisfiable' : range;
}

/**
 * The HTTP handlers' answer to a piece request for target: 400 without a
 * single byte range, 416 for one it cannot serve, else the 206 with the bytes.
 */
export async function sendTarget(req: http.IncomingMessage, res: http.ServerResponse, target: RangeTarget, opts: PumpOptions): Promise<void> {
  const range = targetRange(req.headers.range, target);
  if (range === undefined || range === 'invalid') return sendText(res, 400, 'a single byte range is required');
  if (range === 'unsatisfiable') return sendText(res, 416, 'range not available');
  await sendFileRange(res, target.filePath, range.start, range.end, target.total, opts);
}

export interface RangeFrontOptions {
  /**
   * The file a GET request target (path and query, as sent) names, or
   * undefined to leave the request to the HTTP server. Called for each
   * request; the error answers (404, 400, 416) are the HTTP server's.
   */
  resolve: (target: string) => RangeTarget | undefined;
  limiter?: RateLimiter;
  onBytes?: (n: number) => void;
  /** Called when the front starts a response and when it ends one. */
  onActivity?: () => void;
  /** A connection that sends nothing for this long is closed. */
  idleTimeoutMs: number;
  logger: Logger;
}

/** A head longer than this goes to the HTTP server (which refuses it). */
const MAX_HEAD_BYTES = 16 * 1024;
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const CLOSE = /(?:^|,)\s*close\s*(?:,|$)/i;

interface Head {
  target: string;
  range: string;
  close: boolean;
}

/**
 * The parts of a request head the front needs, or undefined when the request
 * is not a plain GET with one Range and no body (the HTTP server's, then).
 */
export function parseRangeHead(text: string): Head | undefined {
  const lines = text.split('\r\n');
  const first = lines[0];
  if (!first.startsWith('GET /') || !first.endsWith(' HTTP/1.1')) return undefined;
  const target = first.slice(4, -9);
  if (/[\s\x00-\x1f\x7f]/.test(target)) return undefined;
  let range: string | undefined;
  let host = false;
  let close = false;
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i];
    const colon = line.indexOf(':');
    if (colon <= 0) return undefined;
    const name = line.slice(0, colon);
    const value = line.slice(colon + 1).trim();
    if (!TOKEN.test(name) || /[\x00-\x08\x0a-\x1f\x7f]/.test(value)) return undefined;
    switch (name.toLowerCase()) {
      case 'range':
        if (range !== undefined) return undefined;
        range = value;
        break;
      case 'host':
        if (host) return undefined;
        host = true;
        break;
      case 'connection':
        if (CLOSE.test(value)) close = true;
        break;
      case 'content-length': case 'transfer-encoding': case 'expect': case 'upgrade':
        return undefined;
      default:
    }
  }
  return host && range !== undefined ? { target, range, close } : undefined;
}

export class RangeFront {
  private server: net.Server;
  private readonly sockets = new Set<net.Socket>();
  /** The connections the front itself serves (not those given to the HTTP server). */
  private readonly connections = new Set<Connection>();
  private responding = 0;
  private quiet?: () => void;
  /** Set by drain(): every connection closes once its response is sent. */
  draining = false;

  constructor(private readonly httpServer: http.Server, readonly opts: RangeFrontOptions) {
    // The HTTP server never listens itself. Its 'listening' event is what
    // starts its checks of the connections it holds (headersTimeout,
    // requestTimeout): without them a client that sends half a head and then
    // nothing would keep its connection for good.
    httpServer.emit('listening');
    this.server = net.createServer({ noDelay: true }, this.onConnection);
  }

  private readonly onConnection = (socket: net.Socket): void => {
    // Also for an adopted server, which was not made with noDelay.
    socket.setNoDelay(true);
    this.sockets.add(socket);
    socket.once('close', () => this.sockets.delete(socket));
    const c = new Connection(socket, this);
    this.connections.add(c);
    socket.once('close', () => this.connections.delete(c));
    c.start();
  };

  /** The listening socket (to hand to another process). */
  get listener(): net.Server { return this.server; }

  /** Responses the front is sending now. */
  get active(): number { return this.responding; }

  listen(port: number, host: string): Promise<number> {
    return new Promise<number>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => {
        this.server.off('error', reject);
        const a = this.server.address();
        resolve(typeof a === 'object' && a ? a.port : 0);
      });
    });
  }

  /**
   * Serves the connections of a listening server another process handed over
   * (what child_process delivers with a message: a server already listening,
   * whose connections nobody takes until this is called); returns its port.
   * Call it in the same turn as the message came: a connection accepted
   * before would have no one to serve it.
   */
  adopt(listening: net.Server): number {
    this.server = listening;
    listening.on('connection', this.onConnection);
    const a = listening.address();
    return typeof a === 'object' && a ? a.port : 0;
  }

  /**
   * Stops taking connections and lets the responses under way finish: an
   * idle connection closes now, a busy one once its response is sent. A
   * client whose next request meets the closed connection sends it again on
   * a new one (to whoever listens on the port now). Resolves when no
   * response of the front is left; the HTTP server's are the caller's.
   */
  async drain(): Promise<void> {
    this.draining = true;
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const c of this.connections) c.closeIfIdle();
    this.httpServer.closeIdleConnections();
    if (this.responding > 0) await new Promise<void>((resolve) => { this.quiet = resolve; });
    await closed;
  }

  /** Stops listening and closes every connection, the HTTP server's too. */
  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    this.httpServer.closeAllConnections();
    // Stops its connection checks (it was not listening: the error that says so is expected).
    this.httpServer.close(() => undefined);
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  /** @internal */
  started(): void {
    this.responding++;
    this.opts.onActivity?.();
  }

  /** @internal */
  ended(): void {
    this.responding--;
    this.opts.onActivity?.();
    if (this.responding === 0 && this.quiet) {
      const q = this.quiet;
      this.quiet = undefined;
      q();
    }
  }

  /** @internal Gives a connection, with the bytes already read from it, to the HTTP server. */
  handOff(c: Connection, socket: net.Socket, unread: Buffer | undefined): void {
    this.connections.delete(c);
    if (unread) socket.unshift(unread);
    this.httpServer.emit('connection', socket);
  }
}

/** Whether buf has a LF that no CR comes before. */
function hasBareLf(buf: Buffer): boolean {
  for (let i = buf.indexOf(0x0a); i >= 0; i = buf.indexOf(0x0a, i + 1)) if (i === 0 || buf[i - 1] !== 0x0d) return true;
  return false;
}

class Connection {
  /** Bytes read and not yet taken as a request. */
  private unread: Buffer | undefined;
  /** When the first byte of the head in `unread` arrived. */
  private headSince = 0;
  private busy = false;
  private readonly onData = (d: Buffer) => {
    if (!this.unread) this.headSince = performance.now();
    this.unread = this.unread ? Buffer.concat([this.unread, d]) : d;
    if (!this.busy) this.next();
    else if (this.unread.length > MAX_HEAD_BYTES) this.socket.pause();
  };
  private readonly onTimeout = () => this.socket.destroy();
  private readonly onError = (err: Error) => this.front.opts.logger.debug({ err: err.message }, 'piece connection failed');

  constructor(private readonly socket: net.Socket, private readonly front: RangeFront) {}

  start(): void {
    this.socket.setTimeout(this.front.opts.idleTimeoutMs);
    this.socket.on('timeout', this.onTimeout);
    this.socket.on('error', this.onError);
    this.socket.on('data', this.onData);
  }

  /** Closes the connection unless a response is under way (see RangeFront.drain). */
  closeIfIdle(): void {
    if (!this.busy) this.socket.destroy();
  }

  /** Takes the next request in `unread`, if its head is complete. */
  private next(): void {
    const buf = this.unread;
    if (this.front.draining) {
      // Unanswered, so the client sends the request again elsewhere.
      this.socket.destroy();
      return;
    }
    if (!buf) return;
    const end = buf.indexOf('\r\n\r\n');
    if (end < 0) {
      // A line ending in a bare LF never ends a head here: the HTTP server answers it (400).
      if (buf.length > MAX_HEAD_BYTES || hasBareLf(buf)) this.handOff();
      // A head trickling in for longer than a whole idle spell: a client that
      // only holds the connection (silence alone ends at the idle timeout).
      else if (performance.now() - this.headSince > this.front.opts.idleTimeoutMs) this.socket.destroy();
      return;
    }
    const head = end <= MAX_HEAD_BYTES ? parseRangeHead(buf.toString('latin1', 0, end)) : undefined;
    const target = head && this.front.opts.resolve(head.target);
    const range = target && targetRange(head.range, target);
    if (!head || !target || typeof range !== 'object') {
      this.handOff();
      return;
    }
    let fd: number;
    try {
      fd = fs.openSync(target.filePath, 'r');
    } catch {
      this.handOff();
      return;
    }
    this.unread = end + 4 < buf.length ? buf.subarray(end + 4) : undefined;
    void this.respond(fd, target, range, head.close);
  }

  private async respond(fd: number, target: RangeTarget, range: ByteRange, close: boolean): Promise<void> {
    this.busy = true;
    this.front.started();
    const length = range.end - range.start + 1;
    const prefix = 'HTTP/1.1 206 Partial Content\r\nContent-Type: application/octet-stream\r\n'
      + `Content-Length: ${length}\r\nContent-Range: bytes ${range.start}-${range.end}/${target.total}\r\n`
      + (close ? 'Connection: close\r\n\r\n' : 'Connection: keep-alive\r\n\r\n');
    try {
      await pumpFileRange(this.socket, fd, range.start, range.end, {
        limiter: this.front.opts.limiter, onBytes: this.front.opts.onBytes, prefix,
      });
    } catch (err) {
      this.front.opts.logger.debug({ err: String(err) }, 'upload ended early');
      return;
    } finally {
      fs.closeSync(fd);
      this.busy = false;
      this.front.ended();
    }
    if (close || this.front.draining) {
      this.socket.end();
      return;
    }
    if (this.socket.isPaused()) this.socket.resume();
    // A head that came in during the response is timed from now.
    this.headSince = performance.now();
    this.next();
  }

  private handOff(): void {
    const { socket } = this;
    socket.off('data', this.onData);
    socket.off('timeout', this.onTimeout);
    socket.off('error', this.onError);
    socket.setTimeout(0);
    const unread = this.unread;
    this.unread = undefined;
    this.front.handOff(this, socket, unread);
    if (socket.isPaused()) socket.resume();
  }
}
