/**
 * Image pull benchmark on loopback: a cold pull through dfdaemon (fresh
 * supernode cache, fresh dfdaemon) against a direct `skopeo copy` from the
 * same registry, repeated, medians reported; then two dfdaemons pulling the
 * same image, with the registry's bytes sent per layer.
 *
 *   node dist/bench/pull-bench.js [--reps 5] [--layers 3] [--layer-size 14M] [--json FILE]
 */
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { parseSize } from '../src/common/units';
import {
  blobPathRe, buildImage, makeTempDir, pushImage, registryDigests, skopeoCopyDirect, skopeoCopyViaMirror,
  skopeoPulledDigests, startCountingProxy, startRegistry, writeRegistriesConf,
} from '../test/helpers/registry';
import { startDfdaemon, startSupernode } from '../test/helpers/procs';
import { arg, runMain } from './lib/cli';

const median = (xs: number[]) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor((s.length - 1) / 2)]; };
const MiB = 1024 * 1024;

async function main(): Promise<void> {
  const reps = Number(arg('reps', '5'));
  const layers = Number(arg('layers', '3'));
  const layerBytes = parseSize(arg('layer-size', '14M'));
  const dir = await makeTempDir('df-pull-bench');
  const registry = await startRegistry();
  const proxy = await startCountingProxy(registry.url);
  const repo = 'bench/app';
  const tag = 'v1';
  const nowhere = '127.0.0.1:9';
  try {
    const img = await buildImage({ dir: path.join(dir, 'img'), layers, layerBytes, tag });
    await pushImage(img.ociDir, tag, registry.host, repo);
    const want = await registryDigests(registry.url, repo, tag);
    const total = want.layerSizes.reduce((a, b) => a + b, 0);

    const viaMs: number[] = [];
    const directMs: number[] = [];
    let verified = true;
    for (let r = 0; r < reps; r++) {
      // Cold: a new supernode cache and a new dfdaemon every time.
      const sn = await startSupernode(path.join(dir, `sn${r}`), ['--max-bandwidth', '0']);
      const d = await startDfdaemon(['--registry', registry.url, '--node', sn.addr, '--home', path.join(dir, `d${r}`), '--ratelimit', '10G']);
      const conf = path.join(dir, `reg${r}.conf`);
      await writeRegistriesConf(conf, { registryHost: nowhere, mirrorHost: d.host });
      const t0 = performance.now();
      const via = await skopeoCopyViaMirror({ registriesConf: conf, registryHost: nowhere, repo, tag, outDir: path.join(dir, `via${r}`) });
      viaMs.push(performance.now() - t0);
      await d.stop();
      await sn.stop();
      const t1 = performance.now();
      const direct = await skopeoCopyDirect(registry.host, repo, tag, path.join(dir, `direct${r}`));
      directMs.push(performance.now() - t1);
      if (via.code !== 0 || direct.code !== 0) throw new Error(`pull failed: ${via.stderr} ${direct.stderr}`);
      const got = await skopeoPulledDigests(path.join(dir, `via${r}`), tag);
      verified &&= got.manifestDigest === want.manifestDigest && got.layers.join() === want.layers.join();
      await fsp.rm(path.join(dir, `via${r}`), { recursive: true, force: true });
      await fsp.rm(path.join(dir, `direct${r}`), { recursive: true, force: true });
    }

    // Two dfdaemons, one registry: bytes the registry sent per layer.
    const sn = await startSupernode(path.join(dir, 'sn-two'), ['--max-bandwidth', '0']);
    const d1 = await startDfdaemon(['--registry', proxy.url, '--node', sn.addr, '--home', path.join(dir, 'two1'), '--ratelimit', '10G']);
    const d2 = await startDfdaemon(['--registry', proxy.url, '--node', sn.addr, '--home', path.join(dir, 'two2'), '--ratelimit', '10G']);
    const pulls = await Promise.all([d1, d2].map(async (d, i) => {
      const conf = path.join(dir, `two${i}.conf`);
      await writeRegistriesConf(conf, { registryHost: nowhere, mirrorHost: d.host });
      return skopeoCopyViaMirror({ registriesConf: conf, registryHost: nowhere, repo, tag, outDir: path.join(dir, `two-out${i}`) });
    }));
    await d1.stop();
    await d2.stop();
    await sn.stop();
    const perLayer = want.layers.map((l, i) => ({ digest: l, sizeBytes: want.layerSizes[i], registrySentBytes: proxy.bytesFor(blobPathRe(l)) }));

    const result = {
      image: { layers, totalBytes: total }, reps,
      coldPullViaDfdaemonMs: viaMs.map(Math.round), directSkopeoMs: directMs.map(Math.round),
      medianViaDfdaemonMs: Math.round(median(viaMs)), medianDirectMs: Math.round(median(directMs)), verified,
      twoDfdaemons: { ok: pulls.every((p) => p.code === 0), perLayer },
    };
    console.log(`image: ${layers} layers, ${(total / MiB).toFixed(1)} MiB; ${reps} cold pulls each`);
    console.log(`skopeo via dfdaemon (cold): median ${(result.medianViaDfdaemonMs / 1000).toFixed(2)} s  [${result.coldPullViaDfdaemonMs.join(', ')}] ms`);
    console.log(`skopeo direct:              median ${(result.medianDirectMs / 1000).toFixed(2)} s  [${result.directSkopeoMs.join(', ')}] ms`);
    console.log('two dfdaemons, registry bytes per layer:');
    for (const l of perLayer) console.log(`  ${l.digest.slice(0, 19)}  size ${l.sizeBytes}  sent ${l.registrySentBytes}  (${(l.registrySentBytes / l.sizeBytes).toFixed(2)} x)`);
    const out = arg('json', '');
    if (out) await fsp.writeFile(out, JSON.stringify(result, null, 2) + '\n');
  } finally {
    await proxy.close();
    await registry.close();
    await fsp.rm(dir, { recursive: true, force: true });
  }
}

runMain(main);
