import { X509Certificate } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { cpus, hostname, totalmem } from "node:os";
import { create } from "@bufbuild/protobuf";
import { AgentError, type AgentFiles, finishAgentFiles } from "../client/index.js";
import type { Logger } from "../core/index.js";
import {
  type CommandRunner,
  createLibvirtDriver,
  createLocalSimulation,
  createRbdFencing,
  type DomainStatus,
  type HypervisorDriver,
  MIGRATION_URI_LABEL,
  type NodeUsage,
  simulatedUsage,
  vmStateOf,
} from "../drivers/index.js";
import { NodeIdSchema, StatusCode } from "../gen/debvisor/v1/common_pb.js";
import {
  type Health,
  HealthSchema,
  type NodeInfo,
  NodeInfoSchema,
} from "../gen/debvisor/v1/node_pb.js";
import type { DatasetRef } from "../gen/debvisor/v1/storage_pb.js";
import { type VmInfo, VmInfoSchema } from "../gen/debvisor/v1/vm_pb.js";
import type { AgentConfig } from "./agent-config.js";
import { trackDomainHaFlags } from "./domain-ha-flags.js";

/** This node's hypervisor as the agent drives and reports it. */
export interface NodeHypervisor {
  readonly nodeId: string;
  readonly driver: HypervisorDriver;
  /** What the node registers as (labels include {@link MIGRATION_URI_LABEL}). */
  readonly info: NodeInfo;
  /** The node's domains now, as a Health report (the content of Hello and heartbeats). */
  inventory(signal: AbortSignal): Promise<{ health: Health; datasets: DatasetRef[] }>;
  /** Domains as the hypervisor reports them, for `status`. */
  domains(signal: AbortSignal): Promise<DomainStatus[]>;
  /** Whether a domain is highly available (self-fencing stops these); false when unknown. */
  isHa(vmId: string): boolean;
  /**
   * Defines a VM here from the control plane's view (for a failover), when
   * the backend can; undefined when it cannot (libvirt: the definition must
   * already be here, on shared or replicated storage).
   */
  readonly define?: (info: VmInfo) => void;
  close(): void;
}

/** What the running agent adds to the configured driver. */
export interface HypervisorExtras {
  /** The agent's clock for reports (a clock-offset fault shifts it). Default Date.now. */
  readonly now?: () => number;
  /** sim: the percent at which migrations fail now (fault injection). */
  readonly failMigrationAt?: () => number | undefined;
  /** sim: the percent at which migrations hold now (fault injection). */
  readonly holdMigrationAt?: () => number | undefined;
  /** Only look (status beside a running agent): write nothing. */
  readonly readOnly?: boolean;
  /** sim: told the HA VMs a watchdog reset stopped. */
  readonly onWatchdogReset?: (haVmIds: readonly string[]) => void;
  /** sim: told the HA VMs stopped because another node took their disks' locks. */
  readonly onFencedOff?: (haVmIds: readonly string[]) => void;
  /** Told the HA VMs running (or paused) at each inventory. */
  readonly onHaRunning?: (haVmIds: readonly string[]) => void;
  /** libvirt: runs virsh (default a process per call; a virsh session keeps one connection). */
  readonly virshRunner?: CommandRunner;
}

/** The node id of an enrolled agent: its certificate's common name. */
export function enrolledNodeId(files: AgentFiles): string {
  finishAgentFiles(files);
  for (const f of [files.key, files.cert, files.ca])
    if (!existsSync(f)) throw new AgentError(`${f}: missing; run debvisor-agent enroll first`);
  const cn = /(?:^|\n)CN=([^\n,]+)/.exec(new X509Certificate(readFileSync(files.cert)).subject);
  if (cn?.[1] === undefined) throw new AgentError(`${files.cert}: no common name`);
  return cn[1];
}

/**
 * Opens the configured driver for this node: the simulation in the agent's
 * directory, or libvirt (its domains' HA flags read from DebVisor's metadata,
 * see domain-ha-flags.ts). `readOnly` (for `status` beside a running
 * agent): the simulation reports what its watchdog and storage imply
 * without acting on it.
 */
export function openNodeHypervisor(
  config: AgentConfig,
  nodeId: string,
  logger: Logger,
  extras: HypervisorExtras = {},
): NodeHypervisor {
  const now = extras.now ?? Date.now;
  if (config.driver.kind === "sim") {
    const sim = createLocalSimulation({
      nodeId,
      dir: config.dir,
      ...config.sim,
      failMigrationAt: extras.failMigrationAt,
      holdMigrationAt: extras.holdMigrationAt,
      readOnly: extras.readOnly,
      onWatchdogReset: extras.onWatchdogReset,
      onFencedOff: extras.onFencedOff,
      bootIdFile: config.bootIdFile,
      now: Date.now(),
    });
    const info = create(NodeInfoSchema, {
      ...sim.node,
      labels: { ...sim.node.labels, [MIGRATION_URI_LABEL]: sim.migrationUri },
    });
    return build(
      nodeId,
      sim.driver,
      info,
      (id) => sim.vmInfo(id),
      now,
      { define: (vm) => sim.define(vm), close: () => sim.close() },
      (domains) => simulatedUsage(domains, info.capacity),
      extras.onHaRunning,
    );
  }
  const host = hostname()
    .replace(/[^a-zA-Z0-9.-]/g, "-")
    .slice(0, 253);
  const info = create(NodeInfoSchema, {
    id: { id: nodeId },
    hostname: host,
    capacity: { cpuCores: cpus().length, memoryBytes: BigInt(totalmem()) },
    labels: {
      "debvisor.io/driver": "libvirt",
      [MIGRATION_URI_LABEL]: config.driver.migrationUri ?? `qemu+tls://${host}/system`,
    },
  });
  const driver = createLibvirtDriver({
    nodeId,
    uri: config.driver.uri,
    virsh: config.driver.virsh,
    // The agent's virsh speaks only to this node's libvirtd, which reaches the destination itself.
    peerToPeer: true,
    logger,
    // A start under a generation takes its RBD disks' locks first (no rbd command without RBD disks).
    rbdFencing: createRbdFencing({ rbd: config.storage.rbdCommand }),
    runner: extras.virshRunner,
  });
  // Self-fencing, leased starts and the host-boot record know the HA domains from their metadata.
  const flags = trackDomainHaFlags(driver, logger);
  return build(
    nodeId,
    flags.driver,
    info,
    (id) => create(VmInfoSchema, { id, name: id, ha: flags.isHa(id) }),
    now,
    { close: () => {} },
    undefined,
    extras.onHaRunning,
  );
}

/**
 * `usage`: the node's CPU load and memory in use from its domains; absent,
 * none is reported (0). `onHaRunning`: {@link HypervisorExtras.onHaRunning}.
 */
function build(
  nodeId: string,
  driver: HypervisorDriver,
  info: NodeInfo,
  known: (vmId: string) => VmInfo | undefined,
  now: () => number,
  more: Pick<NodeHypervisor, "define" | "close">,
  usage?: (domains: readonly DomainStatus[]) => NodeUsage,
  onHaRunning?: (haVmIds: readonly string[]) => void,
): NodeHypervisor {
  const isHa = (vmId: string) => known(vmId)?.ha === true;
  return {
    nodeId,
    driver,
    info,
    ...more,
    domains: (signal) => driver.list(signal),
    isHa,
    async inventory(signal) {
      const domains = await driver.list(signal);
      onHaRunning?.(
        domains
          .filter((d) => (d.state === "running" || d.state === "paused") && isHa(d.id))
          .map((d) => d.id),
      );
      const vms = domains.map((d) =>
        create(VmInfoSchema, {
          ...(known(d.id) ?? { id: d.id, name: d.id }),
          state: vmStateOf(d.state),
          vcpus: d.vcpus,
          memoryBytes: d.memoryBytes,
          nodeId: create(NodeIdSchema, { id: nodeId }),
        }),
      );
      const ms = now();
      const health = create(HealthSchema, {
        nodeId: { id: nodeId },
        overall: StatusCode.STATUS_OK,
        ...usage?.(domains),
        timestamp: { seconds: BigInt(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1_000_000 },
        vms,
      });
      return { health, datasets: vms.flatMap((v) => v.disks) };
    },
  };
}
