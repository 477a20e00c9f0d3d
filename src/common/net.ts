import { networkInterfaces } from 'node:os';
import { isIP } from 'node:net';
import { DfError, invalidArgument } from './errors';

/** The first non-loopback IPv4 address of this host (IPv6 if there is no IPv4). */
export function firstNonLoopbackAddress(ifaces = networkInterfaces()): string | undefined {
  let v6: string | undefined;
  for (const list of Object.values(ifaces)) {
    for (const a of list ?? []) {
      if (a.internal) continue;
      if (a.family === 'IPv4') return a.address;
      if (!v6 && !a.address.startsWith('fe80')) v6 = a.address;
    }
  }
  return v6;
}

export function resolveAdvertiseIp(given: string | undefined, ifaces = networkInterfaces()): string {
  if (given !== undefined && given !== '') {
    if (!isIP(given)) throw invalidArgument(`invalid --advertise-ip "${given}": not an IP address`);
    return given;
  }
  const ip = firstNonLoopbackAddress(ifaces);
  if (!ip) {
    throw new DfError('DF_ERR_NO_ADVERTISE_IP',
      'no non-loopback network address found to advertise to peers; pass --advertise-ip IP');
  }
  return ip;
}

/** "host:port" with IPv6 hosts bracketed. */
export function joinHostPort(host: string, port: number): string {
  return isIP(host) === 6 ? `[${host}]:${port}` : `${host}:${port}`;
}

/** Parses "host:port[,host:port]" (port defaults to defaultPort). */
export function parseNodeList(input: string | string[], defaultPort: number): string[] {
  const parts = (Array.isArray(input) ? input : [input]).flatMap((s) => String(s).split(',')).map((s) => s.trim()).filter(Boolean);
  return parts.map((p) => {
    const m = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(?::(\d{1,5}))?$/.exec(p);
    if (!m) throw invalidArgument(`invalid node "${p}": expected HOST:PORT`);
    const port = m[2] ? Number(m[2]) : defaultPort;
    if (port < 1 || port > 65535) throw invalidArgument(`invalid node "${p}": port out of range`);
    return `${m[1]}:${port}`;
  });
}
