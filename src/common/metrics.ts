/**
 * Metrics, behind one module. Each server owns a Registry (so several servers
 * in one test process do not share counters); names start with dragonfly_.
 * Labels never carry URLs, headers or credentials.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export { Registry };

export function newRegistry(defaults = false): Registry {
  const r = new Registry();
  if (defaults) collectDefaultMetrics({ register: r, prefix: 'dragonfly_' });
  return r;
}

export function supernodeMetrics(register: Registry) {
  return {
    sourceBytes: new Counter({ name: 'dragonfly_supernode_source_bytes_total', help: 'Bytes fetched from sources', registers: [register] }),
    sourceFetches: new Counter({ name: 'dragonfly_supernode_source_fetches_total', help: 'Source fetches started', labelNames: ['result'] as const, registers: [register] }),
    piecesScheduled: new Counter({ name: 'dragonfly_supernode_pieces_scheduled_total', help: 'Piece assignments sent, by kind of holder (peer or supernode)', labelNames: ['holder'] as const, registers: [register] }),
    pieceResults: new Counter({ name: 'dragonfly_supernode_piece_results_total', help: 'Piece results reported by peers', labelNames: ['holder', 'result'] as const, registers: [register] }),
    uploadBytes: new Counter({ name: 'dragonfly_supernode_upload_bytes_total', help: 'Piece bytes the supernode served to peers', registers: [register] }),
    tasks: new Gauge({ name: 'dragonfly_supernode_tasks', help: 'Tasks known', registers: [register] }),
    peers: new Gauge({ name: 'dragonfly_supernode_peers', help: 'Peers connected to a scheduling stream', registers: [register] }),
    cacheBytes: new Gauge({ name: 'dragonfly_supernode_cache_bytes', help: 'Bytes of cached tasks on disk, as of the last cache GC', registers: [register] }),
    cacheEvictions: new Counter({ name: 'dragonfly_supernode_cache_evictions_total', help: 'Cached tasks deleted by the cache GC, by reason (expired, space)', labelNames: ['reason'] as const, registers: [register] }),
    registrations: new Counter({ name: 'dragonfly_supernode_registrations_total', help: 'Register calls', labelNames: ['result'] as const, registers: [register] }),
  };
}
export type SupernodeMetrics = ReturnType<typeof supernodeMetrics>;

export function dfdaemonMetrics(register: Registry) {
  return {
    requests: new Counter({ name: 'dragonfly_dfdaemon_requests_total', help: 'Requests handled, by route and how they were served', labelNames: ['route', 'via', 'status'] as const, registers: [register] }),
    blobBytes: new Counter({ name: 'dragonfly_dfdaemon_blob_bytes_total', help: 'Blob bytes sent to clients, by path', labelNames: ['via'] as const, registers: [register] }),
    duration: new Histogram({ name: 'dragonfly_dfdaemon_request_seconds', help: 'Request duration', labelNames: ['route'] as const, registers: [register] }),
  };
}
export type DfdaemonMetrics = ReturnType<typeof dfdaemonMetrics>;

/** Reads one counter's value from a text exposition (tests and the benchmark use this). */
export function metricValue(text: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (!m || m[1] !== name) continue;
    const lbl = m[2] ?? '';
    if (Object.entries(labels).every(([k, v]) => lbl.includes(`${k}="${v}"`))) sum += Number(m[3]);
  }
  return sum;
}
