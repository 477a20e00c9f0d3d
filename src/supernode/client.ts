/** The supernode's gRPC client, as peers use it. */
import * as grpc from '@grpc/grpc-js';
import * as net from 'node:net';
import { DfError, toDfError } from '../common/errors';
import { supernodeClientCtor, type PeerMessage, type RegisterRequest, type RegisterResponse, type SupernodeMessage } from '../common/proto';

export type PiecesCall = grpc.ClientDuplexStream<PeerMessage, SupernodeMessage>;

type Unary<Req, Res> = (req: Req, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res: Res) => void) => void;

export class SupernodeClient {
  private readonly client: grpc.Client & Record<string, unknown>;

  /** addr: "host:port" of the supernode's gRPC port. */
  constructor(readonly addr: string) {
    const Ctor = supernodeClientCtor();
    this.client = new Ctor(addr, grpc.credentials.createInsecure(), {
      'grpc.keepalive_time_ms': 30_000,
      'grpc.keepalive_timeout_ms': 10_000,
      'grpc.initial_reconnect_backoff_ms': 200,
      'grpc.max_reconnect_backoff_ms': 2_000,
    }) as grpc.Client & Record<string, unknown>;
  }

  private unary<Req, Res>(method: string, req: Req, timeoutMs: number): Promise<Res> {
    const fn = (this.client[method] as Unary<Req, Res>).bind(this.client);
    return new Promise<Res>((resolve, reject) => {
      fn(req, { deadline: Date.now() + timeoutMs }, (err, res) => {
        if (!err) return resolve(res);
        if (err.code === grpc.status.UNAVAILABLE && !/^DF_ERR_/.test(err.details ?? '')) {
          return reject(new DfError('DF_ERR_SUPERNODE_UNAVAILABLE', `supernode ${this.addr} unavailable: ${err.details}`, { cause: err }));
        }
        if (err.code === grpc.status.DEADLINE_EXCEEDED && !/^DF_ERR_/.test(err.details ?? '')) {
          return reject(new DfError('DF_ERR_SUPERNODE_UNAVAILABLE', `supernode ${this.addr} did not answer within ${timeoutMs} ms`, { cause: err }));
        }
        reject(toDfError(err));
      });
    });
  }

  register(req: RegisterRequest, timeoutMs: number): Promise<RegisterResponse> {
    return this.unary<RegisterRequest, RegisterResponse>('Register', req, timeoutMs);
  }

  leave(peerId: string, taskId: string, timeoutMs = 2_000): Promise<void> {
    return this.unary<object, object>('Leave', { peerId, taskId }, timeoutMs).then(() => undefined);
  }

  /** Resolves once the HTTP/2 connection is up; rejects when it is not within timeoutMs. */
  connect(timeoutMs: number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.client.waitForReady(Date.now() + timeoutMs, (err) => {
        if (err) reject(new DfError('DF_ERR_SUPERNODE_UNAVAILABLE', `supernode ${this.addr} unavailable: ${err.message}`, { cause: err }));
        else resolve();
      });
    });
  }

  pieces(): PiecesCall {
    return (this.client.Pieces as () => PiecesCall).call(this.client);
  }

  close(): void {
    this.client.close();
  }
}

/**
 * The local address this host uses to reach `addr`: what other peers should
 * dial to reach us (the supernode sees us from the same network).
 */
export function localAddressToward(addr: string, timeoutMs: number): Promise<string> {
  const i = addr.lastIndexOf(':');
  const host = addr.slice(0, i).replace(/^\[|\]$/g, '');
  const port = Number(addr.slice(i + 1));
  return new Promise((resolve, reject) => {
    const s = net.connect({ host, port, timeout: timeoutMs });
    s.once('connect', () => { const a = s.localAddress; s.destroy(); a ? resolve(a.replace(/^::ffff:/, '')) : reject(new Error('no local address')); });
    s.once('timeout', () => { s.destroy(); reject(new DfError('DF_ERR_SUPERNODE_UNAVAILABLE', `supernode ${addr} did not accept a connection within ${timeoutMs} ms`)); });
    s.once('error', (err) => reject(new DfError('DF_ERR_SUPERNODE_UNAVAILABLE', `supernode ${addr} unreachable: ${(err as NodeJS.ErrnoException).code ?? err.message}`, { cause: err })));
  });
}

/**
 * One client (one HTTP/2 connection) and one local-address probe per
 * supernode, shared by every download of a long-lived process such as
 * dfdaemon: a blob does not pay for a new connection.
 */
export class SupernodeClients {
  private readonly clients = new Map<string, SupernodeClient>();
  private readonly local = new Map<string, string>();

  get(node: string): SupernodeClient {
    let c = this.clients.get(node);
    if (!c) {
      c = new SupernodeClient(node);
      this.clients.set(node, c);
    }
    return c;
  }

  /** The local address toward the node, probed once while it answers. */
  async localAddress(node: string, timeoutMs: number): Promise<string> {
    const known = this.local.get(node);
    if (known) return known;
    const ip = await localAddressToward(node, timeoutMs);
    this.local.set(node, ip);
    return ip;
  }

  /**
   * Opens the connection to a node and probes the local address toward it
   * ahead of the first download, which then registers at once. Resolves
   * false when the node does not answer within timeoutMs (a download may be
   * using the client meanwhile, so it is kept: a failed registration drops it).
   */
  async warm(node: string, timeoutMs: number): Promise<boolean> {
    try {
      await Promise.all([this.get(node).connect(timeoutMs), this.localAddress(node, timeoutMs)]);
      return true;
    } catch {
      return false;
    }
  }

  /** Forgets a node after it failed, so the next use connects afresh. */
  drop(node: string): void {
    this.clients.get(node)?.close();
    this.clients.delete(node);
    this.local.delete(node);
  }

  /** Best-effort Leave; never throws. */
  async leave(node: string, peerId: string, taskId: string): Promise<void> {
    await this.get(node).leave(peerId, taskId, 1_000).catch(() => undefined);
  }

  close(): void {
    for (const c of this.clients.values()) c.close();
    this.clients.clear();
    this.local.clear();
  }
}
