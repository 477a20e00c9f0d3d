import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { codeCacheAccepted, codeCachePath, makeCodeCache } from '../../src/common/code-cache';
import { tempDir } from '../helpers/origin';

const BUNDLE_DIR = path.resolve(__dirname, '..', '..', 'bundle');

test('the build bundles dfget and the uploader with code caches this Node accepts', async (t) => {
  for (const name of ['dfget', 'uploader-daemon']) {
    const bundle = path.join(BUNDLE_DIR, `${name}.bundle.js`);
    assert.ok(readFileSync(codeCachePath(bundle)).length > 0, name);
    assert.equal(codeCacheAccepted(bundle), true, `${name}: V8 rejected the cache the build made`);
  }
  // bin/dfget.js runs the bundle, whose exports are the CLI module's.
  const entry = require(path.join(BUNDLE_DIR, 'dfget.js')) as { run?: unknown; parseDfgetArgs?: unknown };
  assert.equal(typeof entry.run, 'function');
  assert.equal(typeof entry.parseDfgetArgs, 'function');
  // and it is what `dfget` (bin/dfget.js) runs: the files read show it.
  const watch = "const fs = require('fs'); const read = fs.readFileSync; const seen = new Set();" +
    "fs.readFileSync = function (p, ...a) { seen.add(String(p)); return read.call(this, p, ...a); };" +
    "process.on('exit', () => process.stderr.write('READ ' + JSON.stringify([...seen]) + '\\n'));";
  const dir = await tempDir();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(path.join(dir, 'watch.js'), watch);
  const r = spawnSync(process.execPath, ['-r', path.join(dir, 'watch.js'), path.join(BUNDLE_DIR, '..', '..', 'bin', 'dfget.js'), '--version'],
    { encoding: 'utf8', timeout: 20_000 });
  assert.equal(r.status, 0, r.stderr);
  const read = JSON.parse(/READ (.*)/.exec(r.stderr)![1]) as string[];
  assert.ok(read.includes(path.join(BUNDLE_DIR, 'dfget.bundle.js')), read.join(' '));
  assert.ok(read.includes(codeCachePath(path.join(BUNDLE_DIR, 'dfget.bundle.js'))));
});

test('a bundle loads with its cache, without one, and with a cache V8 rejects', async (t) => {
  const dir = await tempDir();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const bundle = path.join(dir, 'b.bundle.js');
  writeFileSync(bundle, "const { sep } = require('node:path');\nmodule.exports = { sep, file: __filename, dir: __dirname, twice: (n) => 2 * n };\n");
  // Each check in a new process: V8 would otherwise find the source already
  // compiled and never look at the cache.
  const check = () => {
    const script = `const c = require(${JSON.stringify(require.resolve('../../src/common/code-cache'))});
      const b = ${JSON.stringify(bundle)}; const accepted = c.codeCacheAccepted(b); const m = c.loadBundle(b);
      console.log(JSON.stringify({ accepted, sep: m.sep, file: m.file, dir: m.dir, twice: m.twice(21) }));`;
    const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 20_000 });
    assert.equal(r.status, 0, r.stderr);
    const o = JSON.parse(r.stdout) as { accepted: boolean; sep: string; file: string; dir: string; twice: number };
    assert.deepEqual({ sep: o.sep, file: o.file, dir: o.dir, twice: o.twice }, { sep: path.sep, file: bundle, dir, twice: 42 });
    return o.accepted;
  };
  assert.equal(check(), false, 'no cache yet');
  writeFileSync(codeCachePath(bundle), makeCodeCache(bundle));
  assert.equal(check(), true);
  // A cache that is not this source's is rejected and changes nothing.
  writeFileSync(codeCachePath(bundle), Buffer.from('not a code cache'));
  assert.equal(check(), false);
  writeFileSync(codeCachePath(bundle), makeCodeCache(bundle));
  writeFileSync(bundle, "module.exports = { sep: require('node:path').sep, file: __filename, dir: __dirname, twice: (n) => n + n, more: 1 };\n");
  assert.equal(check(), false, 'the cache of the old source');
});
