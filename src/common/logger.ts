/** Structured logs: one pino root per process; child loggers carry taskId / peerId. */
import pino, { type Logger } from 'pino';

export type { Logger };

/**
 * Logs go to stderr (stdout stays free for a program's output) at
 * DF_LOG_LEVEL or the given level. Header values and credentials are never
 * logged: callers log header names only.
 */
export function createLogger(name: string, level?: string, dest?: NodeJS.WritableStream | number): Logger {
  const lvl = level ?? process.env.DF_LOG_LEVEL ?? 'info';
  const stream = typeof dest === 'number' ? pino.destination({ fd: dest, sync: true })
    : dest ?? pino.destination({ fd: 2, sync: true });
  return pino({
    name,
    level: lvl,
    redact: { paths: ['headers.authorization', 'headers.Authorization', '*.password', 'password', 'auth'], censor: '[redacted]' },
  }, stream as pino.DestinationStream);
}

/** A logger that drops everything, for tests and quiet CLIs. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
