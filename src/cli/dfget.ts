/** dfget: download a file by URL through the P2P network. */
import * as os from 'node:os';
import * as path from 'node:path';
import yargs from 'yargs';
import type { SingleBar } from 'cli-progress';
import { DEFAULTS } from '../common/constants';
import { parseDigest, parseMd5 } from '../common/digest';
import { createLogger } from '../common/logger';
import { parseNodeList } from '../common/net';
import { parseDuration, parseRate, formatBytes } from '../common/units';
import { parseFilter, parseHeaders, parseHttpUrl } from '../common/url';
import type { DfgetOptions } from '../peer/dfget';
import type * as Dfget from '../peer/dfget';
import { checkOutput } from '../peer/output';
import { die, finishParser } from './common';
import { DfError, invalidArgument, oneLine, toDfError } from '../common/errors';

const PROG = 'dfget';

export function parseDfgetArgs(argv: string[]) {
  return finishParser(yargs(argv), PROG)
    .usage('$0 --url URL -o FILE [options]\n\nDownloads URL to FILE through the P2P network: pieces come from other peers and the supernode, each is verified, and FILE appears only once the whole file has verified. Falls back to the source when no supernode answers, unless --notbs.')
    .option('url', { alias: 'u', type: 'string', demandOption: true, describe: 'Source URL (http or https)' })
    .option('output', { alias: 'o', type: 'string', demandOption: true, describe: 'Where to write the file; its directory must exist, and it may not be the --home directory or one of its entries' })
    .option('node', { alias: 'n', type: 'string', array: true, default: [`127.0.0.1:${DEFAULTS.supernodePort}`], describe: 'Supernodes, HOST:PORT[,HOST:PORT], tried in order' })
    .option('ratelimit', { alias: 's', type: 'string', default: '20M', describe: 'Download rate limit in bytes/s (K, M, G = KiB, MiB, GiB), for peer and source bytes alike' })
    .option('header', { alias: 'H', type: 'string', array: true, describe: "Header sent to the source, 'Name: value'; repeatable" })
    .option('filter', { alias: 'f', type: 'string', describe: "Query parameters left out of the task identity, 'k1&k2' (signed URLs of one file share a task)" })
    .option('identifier', { alias: 'i', type: 'string', default: '', describe: 'Task identity to use instead of the URL' })
    .option('digest', { type: 'string', describe: 'Expected sha256 of the whole file, sha256:HEX' })
    .option('md5', { alias: 'm', type: 'string', describe: 'Expected md5 of the whole file, HEX' })
    .option('timeout', { alias: 'e', type: 'string', default: '5m', describe: 'Give up after this long (e.g. 30s, 5m)' })
    .option('notbs', { type: 'boolean', default: false, describe: 'Never fetch from the source: fail when the P2P download fails' })
    .option('alivetime', { type: 'string', default: '5m', describe: 'How long this host keeps serving its pieces after dfget exits' })
    .option('upload-rate', { type: 'string', default: '100M', describe: 'Upload rate limit of this host\'s piece server, bytes/s' })
    .option('home', { type: 'string', default: path.join(os.homedir(), '.small-dragonfly'), describe: 'Directory for served pieces, the uploader\'s state and logs; made if missing (exit 3 when it cannot be)' })
    .option('showbar', { alias: 'b', type: 'boolean', default: false, describe: 'Show a progress bar even when stderr is not a terminal' })
    .option('verbose', { type: 'boolean', default: false, describe: 'Log debug details to stderr' })
    .parseSync();
}

export function buildOptions(a: ReturnType<typeof parseDfgetArgs>): Omit<DfgetOptions, 'logger'> {
  parseHttpUrl(a.url);
  if (!a.output) throw Object.assign(new Error('-o FILE must not be empty'), { code: 'DF_ERR_INVALID_ARGUMENT' });
  const timeoutMs = parseDuration(a.timeout, '--timeout');
  if (timeoutMs <= 0) throw invalidArgument(`invalid --timeout "${a.timeout}": must be greater than 0`);
  return {
    url: a.url,
    output: a.output,
    nodes: parseNodeList(a.node, DEFAULTS.supernodePort),
    rateLimitBytesPerSec: parseRate(a.ratelimit, '--ratelimit'),
    headers: parseHeaders(a.header),
    filter: parseFilter(a.filter),
    identifier: a.identifier,
    sha256: a.digest !== undefined ? parseDigest(a.digest).hex : undefined,
    md5: a.md5 !== undefined ? parseMd5(a.md5).hex : undefined,
    timeoutMs,
    notbs: a.notbs,
    aliveTimeMs: parseDuration(a.alivetime, '--alivetime'),
    uploadRateBytesPerSec: parseRate(a['upload-rate'], '--upload-rate'),
    home: path.resolve(a.home),
  };
}

async function main(): Promise<void> {
  const a = parseDfgetArgs(process.argv.slice(2));
  let opts: Omit<DfgetOptions, 'logger'>;
  try {
    opts = buildOptions(a);
  } catch (err) {
    die(PROG, err);
  }
  try {
    await checkOutput(opts.output, opts.home);
  } catch (err) {
    die(PROG, err);
  }
  const { dfget } = require('../peer/dfget') as typeof Dfget;
  const logger = createLogger(PROG, a.verbose ? 'debug' : 'silent');
  const showBar = a.showbar || process.stderr.isTTY === true;
  let bar: SingleBar | undefined;
  const onProgress = showBar ? (done: number, total: number) => {
    if (!bar) {
      const { SingleBar: Bar } = require('cli-progress') as typeof import('cli-progress');
      bar = new Bar({ stream: process.stderr, format: '{bar} {percentage}% | {doneH} of {totalH}', hideCursor: true, noTTYOutput: true, notTTYSchedule: 1000 });
      bar.start(total > 0 ? total : 1, 0, { doneH: formatBytes(0), totalH: total > 0 ? formatBytes(total) : '?' });
    }
    if (total > 0) bar.setTotal(total);
    bar.update(done, { doneH: formatBytes(done), totalH: total > 0 ? formatBytes(total) : '?' });
  } : undefined;
  // Ctrl-C or a TERM: the download stops, what it wrote goes, the supernode
  // is told, and dfget exits 130 or 143 as a shell expects; a second signal
  // ends it at once.
  const interrupt = new AbortController();
  let exitOnSignal = 0;
  const onSignal = (signal: NodeJS.Signals, code: number) => () => {
    if (exitOnSignal) process.exit(exitOnSignal);
    exitOnSignal = code;
    interrupt.abort(new DfError('DF_ERR_CLOSED', `interrupted by ${signal}`));
  };
  process.on('SIGINT', onSignal('SIGINT', 130));
  process.on('SIGTERM', onSignal('SIGTERM', 143));
  try {
    const r = await dfget({ ...opts, logger, onProgress, signal: interrupt.signal });
    bar?.stop();
    if (showBar) process.stderr.write(`${PROG}: downloaded ${formatBytes(r.length)} in ${(r.ms / 1000).toFixed(1)} s via ${r.via}\n`);
    process.exit(0);
  } catch (err) {
    bar?.stop();
    if (exitOnSignal) {
      process.stderr.write(`${oneLine(PROG, toDfError(err))}\n`);
      process.exit(exitOnSignal);
    }
    die(PROG, err);
  }
}

export function run(): void {
  main().catch((err) => die(PROG, err));
}

if (require.main === module) run();
