/**
 * dfdaemon: a registry mirror on 127.0.0.1:65001 that pulls blobs through the
 * P2P network. Parse, build, start; everything else lives in src/dfdaemon/.
 */
import yargs from 'yargs';
import { VERSION } from '../common/constants';
import { DfError, oneLine, toDfError } from '../common/errors';
import { createLogger } from '../common/logger';
import { newRegistry } from '../common/metrics';
import { loadConfig, redactConfig, type DfdaemonFlags } from '../dfdaemon/config';
import { createP2PBlobSource, type StartableBlobSource } from '../dfdaemon/p2p-factory';
import { DfdaemonServer } from '../dfdaemon/server';

const PROG = 'dfdaemon';

const EPILOGUE = `Point clients at it:
  docker      /etc/docker/daemon.json: {"registry-mirrors": ["http://127.0.0.1:65001"]}
  containerd  /etc/containerd/certs.d/docker.io/hosts.toml (see examples/hosts.toml)
  podman      /etc/containers/registries.conf mirror (see examples/registries.conf)

Precedence: flags override the --config file, the file overrides the defaults.
Credentials for a private upstream go in the config file only
(registry_mirror.auth); there is no flag for them. See examples/dfdaemon.yml.

Sizes and rates: K, M, G are KiB, MiB, GiB (20M = 20 MiB/s).

Exit codes: 0 ok, 1 internal error, 2 invalid flag or config.`;

function buildParser(argv: string[]) {
  return yargs(argv)
    .scriptName(PROG)
    .usage('$0 [options]\n\nA registry mirror that fetches image blobs through the Dragonfly P2P network.')
    .option('registry', {
      type: 'string',
      describe: 'Upstream registry or mirror, http(s) URL',
      defaultDescription: 'https://index.docker.io',
    })
    .option('ratelimit', {
      type: 'string',
      describe: 'Download rate limit for blobs, bytes/s (P2P and direct)',
      defaultDescription: '20M',
    })
    .option('expiretime', {
      type: 'string',
      describe: 'A finished blob nobody has read or fetched pieces of for this long is deleted from --home (0: kept until dfdaemon exits)',
      defaultDescription: '3m',
    })
    .option('upload-rate', {
      type: 'string',
      describe: 'Cap on bytes/s of pieces this host serves to other peers (K, M, G = KiB, MiB, GiB); a little below the uplink keeps its own downloads fast',
      defaultDescription: '100M',
    })
    .option('port', {
      type: 'number',
      describe: 'Port to listen on (0: any free port)',
      defaultDescription: '65001',
    })
    .option('host-ip', {
      type: 'string',
      describe: 'IP address to listen on',
      defaultDescription: '127.0.0.1',
    })
    .option('node', {
      type: 'string',
      describe: 'Supernodes, HOST:PORT[,HOST:PORT] (port defaults to 8002); none: blobs are fetched directly',
    })
    .option('home', {
      type: 'string',
      describe: 'Working directory of the P2P peer; made if missing (exit 2 when it cannot be)',
      defaultDescription: '~/.small-dragonfly/dfdaemon',
    })
    .option('config', {
      type: 'string',
      describe: 'YAML config file (see examples/dfdaemon.yml)',
    })
    .option('verbose', {
      type: 'boolean',
      describe: 'Debug logs',
    })
    .example('$0 --node 10.0.0.2:8002', 'mirror Docker Hub through a supernode')
    .example('$0 --registry https://registry.example.com', 'mirror another registry')
    .example('$0 --config /etc/dragonfly/dfdaemon.yml', 'everything from a config file')
    .epilogue(EPILOGUE)
    .strict()
    .help()
    .alias('help', 'h')
    .version(VERSION)
    .wrap(Math.min(100, process.stdout.columns || 100))
    .exitProcess(false)
    .fail((msg, err) => {
      throw new DfError('DF_ERR_INVALID_ARGUMENT', msg ?? err?.message ?? 'invalid arguments');
    });
}

function flagsFrom(a: Record<string, unknown>): DfdaemonFlags {
  return {
    registry: a.registry as string | undefined,
    ratelimit: a.ratelimit as string | undefined,
    expiretime: a.expiretime as string | undefined,
    uploadRate: a['upload-rate'] as string | undefined,
    port: a.port as number | undefined,
    hostIp: a.hostIp as string | undefined,
    node: a.node as string | string[] | undefined,
    home: a.home as string | undefined,
    config: a.config as string | undefined,
    verbose: a.verbose as boolean | undefined,
  };
}

async function main(argv: string[]): Promise<void> {
  const parsed = buildParser(argv).parseSync() as Record<string, unknown>;
  if (parsed.help || parsed.version) return;
  const config = loadConfig(flagsFrom(parsed));
  const logger = createLogger(PROG, config.verbose ? 'debug' : undefined);
  logger.info({ config: redactConfig(config) }, 'starting');

  let blobSource: StartableBlobSource | undefined;
  if (config.supernodes.length > 0) {
    blobSource = createP2PBlobSource({
      nodes: config.supernodes,
      homeDir: config.homeDir,
      rateLimitBytesPerSec: config.rateLimitBytesPerSec,
      expireTimeMs: config.expireTimeMs,
      uploadRateBytesPerSec: config.uploadRateBytesPerSec,
      logger: logger.child({ component: 'p2p' }),
    });
    await blobSource.start();
  } else {
    logger.warn('no supernode given (--node): every blob is fetched from the upstream directly');
  }

  const server = new DfdaemonServer({ config, blobSource, logger, metricsRegistry: newRegistry(true) });
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'shutting down');
    void (async () => {
      let code = 0;
      try {
        await server.close();
        await blobSource?.close();
      } catch (e) {
        logger.error({ err: (e as Error).message }, 'error while shutting down');
        code = 1;
      }
      process.exit(code);
    })();
  };
  process.once('SIGINT', () => stop('SIGINT'));
  process.once('SIGTERM', () => stop('SIGTERM'));
  try {
    const { port, host } = await server.start();
    // Scripts and tests wait for this line to learn the port (useful with --port 0).
    process.stdout.write(`${JSON.stringify({ ready: true, port, host })}\n`);
  } catch (e) {
    await blobSource?.close().catch(() => undefined);
    throw e;
  }
}

export function run(): void {
  main(process.argv.slice(2)).catch((e: unknown) => {
    const err = toDfError(e);
    process.stderr.write(`${oneLine(PROG, err)}\n`);
    process.exit(err.exitCode);
  });
}

if (require.main === module) run();
