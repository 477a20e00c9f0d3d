/**
 * The image for the `image` scenario: built with umoci (random, incompressible
 * layers), pushed with skopeo from the origin host into its registry, and
 * checked after each pull.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { join } from 'node:path';
import { buildImage, MANIFEST_ACCEPT, ociLayoutDigests } from '../../test/helpers/registry';
import type { Netbed } from './netbed';
import { ORIGIN_HOST, REGISTRY_PORT } from './services';
import type { PreparedImage } from './types';

export const IMAGE_REPO = 'bench/image';
export const IMAGE_TAG = 'latest';
export const IMAGE_LAYERS = 4;

interface Manifest {
  config: { digest: string; size: number };
  layers: Array<{ digest: string; size: number }>;
}

/** Builds a 4-layer image of about totalBytes and pushes it to the registry on the origin host. */
export async function prepareImage(nb: Netbed, dir: string, totalBytes: number): Promise<PreparedImage> {
  const built = await buildImage({ layers: IMAGE_LAYERS, layerBytes: Math.max(1, Math.floor(totalBytes / IMAGE_LAYERS)), dir, tag: IMAGE_TAG });
  // Pushed from inside the origin host to its own loopback: no shaped link in the way.
  const push = await nb.execOut(ORIGIN_HOST, 'skopeo', [
    '--insecure-policy', 'copy', '--quiet', '--dest-tls-verify=false',
    `oci:${built.ociDir}:${IMAGE_TAG}`, `docker://127.0.0.1:${REGISTRY_PORT}/${IMAGE_REPO}:${IMAGE_TAG}`,
  ], 300_000);
  if (push.code !== 0) throw new Error(`skopeo push into the origin registry failed (exit ${push.code})`);

  const registryHost = `${nb.ip(ORIGIN_HOST)}:${REGISTRY_PORT}`;
  const res = await fetch(`http://${registryHost}/v2/${IMAGE_REPO}/manifests/${IMAGE_TAG}`, { headers: { accept: MANIFEST_ACCEPT } });
  const raw = Buffer.from(await res.arrayBuffer());
  if (res.status !== 200) throw new Error(`GET manifest from the origin registry: HTTP ${res.status}`);
  const m = JSON.parse(raw.toString('utf8')) as Manifest;
  const layerSizes = m.layers.map((l) => l.size);
  return {
    registryHost,
    repo: IMAGE_REPO,
    tag: IMAGE_TAG,
    manifestDigest: `sha256:${createHash('sha256').update(raw).digest('hex')}`,
    config: m.config.digest,
    configBytes: m.config.size,
    layers: m.layers.map((l) => l.digest),
    layerSizes,
    totalBytes: layerSizes.reduce((s, x) => s + x, 0) + m.config.size,
  };
}

async function sha256Of(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const c of createReadStream(path, { highWaterMark: 1024 * 1024 })) h.update(c as Buffer);
  return `sha256:${h.digest('hex')}`;
}

/**
 * Checks what skopeo wrote to oci:OUTDIR:TAG: the manifest names the same
 * layers and config as the registry's, and every one of those blobs on disk
 * hashes to its digest. Returns an error message, or undefined when it matches.
 */
export async function verifyPulledImage(outDir: string, img: PreparedImage): Promise<string | undefined> {
  let pulled;
  try {
    pulled = await ociLayoutDigests(outDir, img.tag);
  } catch (e) {
    return `no readable image in ${outDir}: ${(e as Error).message}`;
  }
  if (pulled.layers.join(',') !== img.layers.join(',')) return `pulled layers ${pulled.layers.join(',')} differ from the registry's`;
  if (pulled.config !== img.config) return `pulled config ${pulled.config} differs from ${img.config}`;
  for (const d of [...img.layers, img.config]) {
    const got = await sha256Of(join(outDir, 'blobs', ...d.split(':'))).catch((e: Error) => `unreadable (${e.message})`);
    if (got !== d) return `blob ${d} on disk hashes to ${got}`;
  }
  return undefined;
}
