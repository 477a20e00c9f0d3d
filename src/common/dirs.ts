/**
 * `mkdir -p`, one level at a time. Node's own `mkdir(..., { recursive: true })`
 * never returns for some paths where the kernel refuses a new directory with
 * ENOENT although the parent exists (any path under /proc on Node 20: it
 * retries forever at full CPU, on the thread pool for the promise form), so a
 * mistyped --home would hang a program instead of failing it. Synchronous:
 * it runs once per program or task, on local directories, and each call
 * takes microseconds.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DfError, type ErrorCode } from './errors';

const code = (err: unknown) => (err as NodeJS.ErrnoException).code;

/** Creates dir and its missing parents; returns when it is a directory, throws the system error otherwise. */
export function makeDirs(dir: string): void {
  const abs = path.resolve(dir);
  try {
    fs.mkdirSync(abs);
    return;
  } catch (err) {
    if (code(err) === 'EEXIST') return mustBeDirectory(abs, err);
    if (code(err) !== 'ENOENT' || path.dirname(abs) === abs) throw err;
  }
  makeDirs(path.dirname(abs));
  try {
    fs.mkdirSync(abs);
  } catch (err) {
    // Another process may have made it in between.
    if (code(err) === 'EEXIST') return mustBeDirectory(abs, err);
    throw err;
  }
}

function mustBeDirectory(dir: string, err: unknown): void {
  let isDir = false;
  try {
    isDir = fs.statSync(dir).isDirectory();
  } catch { /* gone again: the mkdir's error says more */ }
  if (!isDir) throw err;
}

/**
 * makeDirs for a program's home (or a directory in it): one that cannot be
 * made is the operator's setting, reported as `code` (an invalid argument
 * unless said otherwise) with what was asked for and why it failed.
 */
export function makeHomeDirs(dir: string, what: string, code: ErrorCode = 'DF_ERR_INVALID_ARGUMENT'): void {
  try {
    makeDirs(dir);
  } catch (err) {
    throw new DfError(code, `${what} is not usable: ${(err as Error).message}`);
  }
}
