/** Structured logs: one pino root per process; child loggers carry taskId / peerId. */
import type { Logger } from 'pino';
import type * as Pino from 'pino';

export type { Logger };

/** pino is loaded on first use: a program that logs nothing starts without it. */
function pinoModule(): typeof Pino.pino {
  return (require('pino') as typeof Pino).pino;
}

const noop = (): void => undefined;

/**
 * A logger at level 'silent' that needs no pino: every call is a no-op and
 * children are itself.
 */
function nullLogger(): Logger {
  const l: Record<string, unknown> = {
    level: 'silent', trace: noop, debug: noop, info: noop, warn: noop, error: noop, fatal: noop, silent: noop,
    isLevelEnabled: () => false, flush: noop,
  };
  l.child = () => l;
  return l as unknown as Logger;
}

/**
 * Logs go to stderr (stdout stays free for a program's output) at
 * DF_LOG_LEVEL or the given level. Header values and credentials are never
 * logged: callers log header names only.
 */
export function createLogger(name: string, level?: string, dest?: NodeJS.WritableStream | number): Logger {
  const lvl = level ?? process.env.DF_LOG_LEVEL ?? 'info';
  if (lvl === 'silent') return nullLogger();
  const pino = pinoModule();
  const stream = typeof dest === 'number' ? pino.destination({ fd: dest, sync: true })
    : dest ?? pino.destination({ fd: 2, sync: true });
  return pino({
    name,
    level: lvl,
    redact: { paths: ['headers.authorization', 'headers.Authorization', '*.password', 'password', 'auth'], censor: '[redacted]' },
  }, stream as Pino.DestinationStream);
}

/** A logger that drops everything, for tests and quiet CLIs. */
export function silentLogger(): Logger {
  return nullLogger();
}
