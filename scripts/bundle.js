#!/usr/bin/env node
// Build step after tsc: bundles the programs a rollout starts on many hosts
// at once (dfget and the uploader it starts) into dist/bundle/, each with the
// V8 code cache of its bundle and a small entry file that loads the two
// (src/common/code-cache.ts).
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const esbuild = require('esbuild');

const root = path.resolve(__dirname, '..');
const dist = path.join(root, 'dist');
const out = path.join(dist, 'bundle');
const { makeCodeCache, codeCachePath } = require(path.join(dist, 'src', 'common', 'code-cache.js'));

// name in dist/bundle -> the compiled entry it bundles. The uploader keeps
// its name: dfget starts `uploader-daemon.js` from its own directory.
const programs = {
  dfget: 'src/cli/dfget.js',
  'uploader-daemon': 'src/peer/uploader-daemon.js',
};

// Left out of the bundles and loaded from node_modules when first required:
// code a download only needs on a rarer path. undici is dfget's client for the
// source, required only when it goes back to the source; @grpc/proto-loader
// (with the whole of protobufjs) only by gRPC's channelz and ORCA, which
// neither program uses. Every byte of a bundle is read and decoded at each
// start, run or not: without these two the dfget bundle is half the size and
// a dfget starts with about 8 ms less CPU (bench/README.md).
const external = ['undici', '@grpc/proto-loader'];

async function main() {
  fs.rmSync(out, { recursive: true, force: true });
  fs.mkdirSync(out, { recursive: true });
  for (const [name, entry] of Object.entries(programs)) {
    const bundle = path.join(out, `${name}.bundle.js`);
    await esbuild.build({
      entryPoints: [path.join(dist, entry)],
      outfile: bundle,
      bundle: true,
      platform: 'node',
      target: 'node20',
      format: 'cjs',
      logLevel: 'warning',
      external,
    });
    fs.writeFileSync(codeCachePath(bundle), makeCodeCache(bundle));
    fs.writeFileSync(path.join(out, `${name}.js`), [
      "'use strict';",
      `// ${name}.bundle.js and its code cache, made by scripts/bundle.js.`,
      "const path = require('node:path');",
      "const { loadBundle } = require('../src/common/code-cache.js');",
      `module.exports = loadBundle(path.join(__dirname, '${name}.bundle.js'));`,
      '',
    ].join('\n'));
  }
}

main().catch((err) => {
  process.stderr.write(`bundle: ${err.stack || err}\n`);
  process.exit(1);
});
