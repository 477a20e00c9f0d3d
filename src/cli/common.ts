/** What every CLI entry shares: one-line errors with documented exit codes, signal handling. */
import type { Argv } from 'yargs';
import { VERSION } from '../common/constants';
import { DfError, oneLine, toDfError } from '../common/errors';

export const EXIT_CODES_HELP = [
  'Exit codes:',
  '  0  success',
  '  1  internal error',
  '  2  invalid argument, URL, digest or config',
  '  3  output path or dfget\'s --home unusable (missing directory, not writable)',
  '  4  source unreachable, answered an HTTP error, or sent a truncated body',
  '  5  digest mismatch (the bytes are not what --digest/--md5 promised)',
  '  6  P2P network unavailable or failed, and --notbs forbids the source',
  '  7  timeout',
  '  130, 143  dfget interrupted by SIGINT or SIGTERM (what it wrote is removed)',
].join('\n');

/** Prints one line for the error (no stack trace) and exits with its code. */
export function die(prog: string, err: unknown): never {
  const e = err instanceof DfError ? err : toDfError(err);
  process.stderr.write(`${oneLine(prog, e)}\n`);
  if (process.env.DF_DEBUG && e.stack) process.stderr.write(`${e.stack}\n`);
  process.exit(e.exitCode);
}

/** yargs' fail handler: a usage error is exit code 2 with one line. */
export function usageFailure(prog: string) {
  return (msg: string | undefined, err: Error | undefined): never => {
    if (err && err instanceof DfError) die(prog, err);
    const text = (msg ?? err?.message ?? 'invalid arguments').replace(/\s*\n\s*/g, ' ');
    process.stderr.write(`${prog}: DF_ERR_INVALID_ARGUMENT: ${text} (see ${prog} --help)\n`);
    process.exit(2);
  };
}

/** What every CLI's parser shares: strict flags, --version, exit codes in --help, one-line usage errors. */
export function finishParser<T>(y: Argv<T>, prog: string): Argv<T> {
  return y
    .scriptName(prog)
    .epilog(EXIT_CODES_HELP)
    .strict()
    .version(VERSION)
    .help()
    .wrap(Math.min(110, process.stdout.columns || 100))
    .fail(usageFailure(prog));
}

export function onSignals(close: () => Promise<void>): void {
  let n = 0;
  const h = () => {
    if (++n > 1) process.exit(130);
    close().then(() => process.exit(0), () => process.exit(1));
  };
  process.on('SIGINT', h);
  process.on('SIGTERM', h);
}
