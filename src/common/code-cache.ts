/**
 * dfget, and the uploader it starts, run from one bundled file each with a
 * V8 code cache beside it, both written by the build (scripts/bundle.js).
 * Node then neither resolves and reads some 120 module files nor parses and
 * compiles their JavaScript at every start: when a rollout starts dfget on
 * many hosts at once, that start-up is CPU every host pays before it can
 * register.
 *
 * The cache is only ever an optimisation: V8 rejects one made by another
 * V8 version, with other V8 flags or for a source of another length, and
 * the bundle is then compiled from its source as usual. V8 checks no more
 * of the source than its length, so a bundle and its cache are only ever
 * written together, into an emptied directory, by the build.
 */
import { createRequire } from 'node:module';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as vm from 'node:vm';

/** Where the build writes the code cache of a bundle. */
export function codeCachePath(bundle: string): string {
  return `${bundle}.cache`;
}

/** The bundle as Node would wrap a CommonJS module; the cache is made from exactly this text. */
function compile(bundle: string, cachedData?: Buffer): vm.Script {
  const source = fs.readFileSync(bundle, 'utf8');
  const wrapped = `(function (exports, require, module, __filename, __dirname) {${source}\n});`;
  return new vm.Script(wrapped, { filename: bundle, cachedData });
}

/** Compiles the bundle and returns its code cache (the build writes it to codeCachePath). */
export function makeCodeCache(bundle: string): Buffer {
  return compile(bundle).createCachedData();
}

/** The bundle's code cache; undefined when the build wrote none. */
function readCodeCache(bundle: string): Buffer | undefined {
  try {
    return fs.readFileSync(codeCachePath(bundle));
  } catch {
    return undefined;
  }
}

/** Whether the bundle has a code cache that this Node's V8 accepts. */
export function codeCacheAccepted(bundle: string): boolean {
  const cachedData = readCodeCache(bundle);
  return cachedData !== undefined && compile(bundle, cachedData).cachedDataRejected === false;
}

type ModuleFunction = (exports: unknown, require: NodeJS.Require, module: { exports: unknown }, filename: string, dirname: string) => void;

/**
 * Runs the bundle as a CommonJS module (with its cache when there is one and
 * V8 accepts it) and returns its exports.
 */
export function loadBundle(bundle: string): unknown {
  const fn = compile(bundle, readCodeCache(bundle)).runInThisContext() as ModuleFunction;
  const mod = { exports: {} as unknown };
  fn.call(mod.exports, mod.exports, createRequire(bundle), mod, bundle, path.dirname(bundle));
  return mod.exports;
}
