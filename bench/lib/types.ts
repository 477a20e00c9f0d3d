/** The shapes of the benchmark's results (results.json) and of its run context. */
import type { Netbed } from './netbed';
import type { ProcUsage } from './procstat';

export type ScenarioName = 'direct' | 'p2p' | 'image' | 'relay';
export const SCENARIOS: readonly ScenarioName[] = ['direct', 'p2p', 'image', 'relay'];
/** What runs without --scenarios; `relay` (a reference, not the product) only when asked for. */
export const DEFAULT_SCENARIOS: readonly ScenarioName[] = ['direct', 'p2p', 'image'];

export interface HostResult {
  host: string;
  /** From the common start to this host's exit, seconds; null when it never finished. */
  seconds: number | null;
  exitCode: number | null;
  verified: boolean;
  /** Why it did not verify (exit code, digest mismatch, timeout, ...). */
  error?: string;
}

export interface RoleUsage extends ProcUsage {
  host: string;
  /** The processes summed into this role (dfget and its uploader, for p2p). */
  processes: Array<ProcUsage & { name: string }>;
}

export interface P2PDetails {
  pieceSizeBytes: number | null;
  /** dragonfly_supernode_pieces_scheduled_total by holder. */
  piecesFromPeers: number;
  piecesFromSupernode: number;
  /** Piece results peers reported as failures (any holder). */
  pieceFailures: number;
  /** dragonfly_supernode_source_bytes_total: what the supernode pulled from the origin. */
  sourceBytes: number;
  /** dragonfly_supernode_upload_bytes_total: piece bytes the supernode served. */
  supernodeUploadBytes: number;
  /** Bytes the supernode host sent on its link (pieces plus protocol). */
  supernodeTxBytes: number;
  /** supernodeTxBytes / F. Its uplink is as fast as the origin's: each F it sends costs F/Us seconds. */
  supernodeTxRatio: number;
  /**
   * From the supernode's log: seconds from the launch to its first "source
   * fetch started", and from there to its last "source fetch complete" (all
   * tasks: the image's layers too). null when the log does not say.
   */
  sourceFetchStartS: number | null;
  sourceFetchS: number | null;
}

export interface ImageDetails {
  repo: string;
  layers: number;
  layerBytes: number[];
  configBytes: number;
  /** Blob bytes the dfdaemons handed to skopeo, all hosts together, by how they got them. */
  blobBytesViaP2P: number;
  blobBytesViaDirect: number;
}

export interface ScenarioResult {
  scenario: ScenarioName;
  peers: number;
  /** F: the file size, or for image the total of the layers and the config. */
  fileBytes: number;
  rateBitsPerSec: number;
  /** Time until the last host was done, and the median host, seconds (null if a host never finished). */
  lastS: number | null;
  medianS: number | null;
  /** max(F/Us, F/d, N*F/(Us + N*u)), seconds. */
  boundS: number;
  /** lastS / boundS and medianS / boundS. */
  ratio: number | null;
  medianRatio: number | null;
  /** Bytes the origin host sent on its link during the scenario (frames, headers included). */
  originTxBytes: number;
  /** originTxBytes / (fileBytes): 1.0 means each byte left the origin once (plus ~4.6% TCP/IP/Ethernet headers). */
  originTxRatio: number;
  /** Body bytes the HTTP origin handed to sockets (direct, p2p); null for the registry. */
  originBodyBytes: number | null;
  supernode: RoleUsage | null;
  /** One peer host (h1): what ran there for this scenario. */
  peer: RoleUsage | null;
  /** All cores of the machine, during the timed part. */
  machineCpuBusyPct: number;
  /** CPU seconds of the peer-side processes of all N hosts together (null when not all were measured). */
  allPeersCpuS: number | null;
  /**
   * (allPeersCpuS + supernode CPU) / cores: the time this run needs on this
   * machine even with infinitely fast links, since every simulated host shares
   * the same cores. When it comes near lastS, the run is CPU-bound here.
   */
  cpuFloorS: number | null;
  verified: boolean;
  hostsVerified: number;
  hosts: HostResult[];
  p2p?: P2PDetails;
  image?: ImageDetails;
  /** With --repeat K (K > 1): every run's figures, in run order; this result is the median run (bench/lib/repeat.ts). */
  repeats?: {
    lastS: Array<number | null>;
    medianS: Array<number | null>;
    cpuFloorS: Array<number | null>;
    verified: boolean[];
  };
  notes: string[];
}

export interface BenchResults {
  kind: 'netbed-bench';
  version: 1;
  startedAt: string;
  finishedAt?: string;
  machine: { cpus: number; cpuModel: string; memGiB: number; kernel: string; node: string };
  /** The commit the run was built from (git describe of the working directory; "-dirty" when it had changes). */
  commit: string | null;
  config: {
    peers: number[];
    rate: string;
    rateBitsPerSec: number;
    sizeBytes: number;
    scenarios: ScenarioName[];
    netbedId: number;
    sweep: boolean;
    /** Permanent ARP entries on every host (--static-neighbours); absent = false. */
    staticNeighbours?: boolean;
    /** --upload-headroom: percent below the link rate the programs cap their uploads at (0 = no cap); absent = 0. */
    uploadHeadroomPct?: number;
    /** Nice value of the origin server, the registry and the supernode. */
    serviceNice?: number;
    /** --repeat: runs of each scenario but direct at each N. */
    repeat?: number;
    /** --supernode-args, as given. */
    supernodeArgs?: string[];
  };
  /** One result per scenario and N: the median run when it ran more than once. */
  results: ScenarioResult[];
  /** With --repeat K > 1: every run, in the order they ran. */
  runs?: ScenarioResult[];
  /** True when every result verified. */
  allVerified: boolean;
}

/** What every scenario needs to run. */
export interface BenchContext {
  nb: Netbed;
  /** dist/ of this repo (where src/cli/*.js are). */
  distDir: string;
  /** This run's temp dir under /tmp. */
  workDir: string;
  /** Where procstat-hook.js writes. */
  procstatDir: string;
  hookPath: string;
  rate: string;
  rateBitsPerSec: number;
  /** --upload-rate given to the supernode, dfget and dfdaemon, bytes/s; 0 = none given. */
  uploadRateBytesPerSec: number;
  /** Nice value of the origin server, the registry and the supernode (0 = as the hosts' programs). */
  serviceNice: number;
  /** More flags for every supernode the scenarios start (--supernode-args). */
  supernodeArgs: string[];
  /** All peer hosts that are up (h1..hMAX); a scenario with N peers uses the first N. */
  peerHosts: string[];
  file: { path: string; name: string; bytes: number; sha256: string; url: string };
  originStatsUrl: string;
  image?: PreparedImage;
  timeoutS?: number;
  /** Where the logs of a run that did not verify are kept (the run's temp dir is removed). */
  failLogDir?: string;
  log: (msg: string) => void;
}

export interface PreparedImage {
  /** ORIGIN_IP:5000, as image references and registries.conf name it. */
  registryHost: string;
  repo: string;
  tag: string;
  manifestDigest: string;
  config: string;
  configBytes: number;
  layers: string[];
  layerSizes: number[];
  totalBytes: number;
}
