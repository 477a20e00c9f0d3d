/**
 * Proxy rules decide, per blob GET, whether the blob comes through the P2P
 * network or straight from the upstream. Rules are tried in order against
 * the raw request path and the first match wins; with no match the default
 * holds: blob GETs through P2P. Only blob GETs can use P2P (the swarm is
 * keyed by the blob digest and needs no response headers from the
 * upstream), so a rule never moves a manifest or a HEAD onto P2P.
 */
import type { ProxyRule } from './config';

export type Via = 'p2p' | 'direct';

export class ProxyRules {
  private readonly rules: readonly ProxyRule[];

  constructor(rules: readonly ProxyRule[]) {
    this.rules = rules;
  }

  /** How a blob GET for this raw path should be fetched. */
  viaForBlob(path: string): Via {
    for (const r of this.rules) {
      // lastIndex matters only for /g and /y regexes; config regexes have no flags, reset anyway.
      r.regx.lastIndex = 0;
      if (r.regx.test(path)) return r.direct ? 'direct' : 'p2p';
    }
    return 'p2p';
  }
}
