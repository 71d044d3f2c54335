import { X509Certificate } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { cpus, hostname, totalmem } from "node:os";
import { create } from "@bufbuild/protobuf";
import { AgentError, type AgentFiles } from "../client/index.js";
import type { Logger } from "../core/index.js";
import {
  createLibvirtDriver,
  createLocalSimulation,
  type DomainStatus,
  type HypervisorDriver,
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

/** This node's hypervisor as the agent drives and reports it. */
export interface NodeHypervisor {
  readonly nodeId: string;
  readonly driver: HypervisorDriver;
  /** What the node registers as. */
  readonly info: NodeInfo;
  /** The node's domains now, as a Health report (the content of Hello and heartbeats). */
  inventory(signal: AbortSignal): Promise<{ health: Health; datasets: DatasetRef[] }>;
  /** Domains as the hypervisor reports them, for `status`. */
  domains(signal: AbortSignal): Promise<DomainStatus[]>;
  /** Whether a domain is highly available (self-fencing stops these); false when unknown. */
  isHa(vmId: string): boolean;
}

/** The node id of an enrolled agent: its certificate's common name. */
export function enrolledNodeId(files: AgentFiles): string {
  for (const f of [files.key, files.cert, files.ca])
    if (!existsSync(f)) throw new AgentError(`${f}: missing; run debvisor-agent enroll first`);
  const cn = /(?:^|\n)CN=([^\n,]+)/.exec(new X509Certificate(readFileSync(files.cert)).subject);
  if (cn?.[1] === undefined) throw new AgentError(`${files.cert}: no common name`);
  return cn[1];
}

/**
 * Opens the configured driver for this node: the simulation in the agent's
 * directory, or libvirt. `readOnly` (for `status` beside a running
 * agent): the simulation reports what its watchdog and storage imply
 * without acting on it.
 */
export function openNodeHypervisor(
  config: AgentConfig,
  nodeId: string,
  logger: Logger,
  extras: { readOnly?: boolean } = {},
): NodeHypervisor {
  if (config.driver.kind === "sim") {
    const sim = createLocalSimulation({
      nodeId,
      dir: config.dir,
      ...config.sim,
      now: Date.now(),
      readOnly: extras.readOnly,
    });
    return build(nodeId, sim.driver, sim.node, (id) => sim.vmInfo(id));
  }
  const info = create(NodeInfoSchema, {
    id: { id: nodeId },
    hostname: hostname()
      .replace(/[^a-zA-Z0-9.-]/g, "-")
      .slice(0, 253),
    capacity: { cpuCores: cpus().length, memoryBytes: BigInt(totalmem()) },
    labels: { "debvisor.io/driver": "libvirt" },
  });
  const driver = createLibvirtDriver({
    nodeId,
    uri: config.driver.uri,
    virsh: config.driver.virsh,
    logger,
  });
  return build(nodeId, driver, info, () => undefined);
}

function build(
  nodeId: string,
  driver: HypervisorDriver,
  info: NodeInfo,
  known: (vmId: string) => VmInfo | undefined,
): NodeHypervisor {
  return {
    nodeId,
    driver,
    info,
    domains: (signal) => driver.list(signal),
    isHa: (vmId) => known(vmId)?.ha === true,
    async inventory(signal) {
      const domains = await driver.list(signal);
      const vms = domains.map((d) =>
        create(VmInfoSchema, {
          ...(known(d.id) ?? { id: d.id, name: d.id }),
          state: vmStateOf(d.state),
          vcpus: d.vcpus,
          memoryBytes: d.memoryBytes,
          nodeId: create(NodeIdSchema, { id: nodeId }),
        }),
      );
      const ms = Date.now();
      const health = create(HealthSchema, {
        nodeId: { id: nodeId },
        overall: StatusCode.STATUS_OK,
        timestamp: { seconds: BigInt(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1_000_000 },
        vms,
      });
      return { health, datasets: vms.flatMap((v) => v.disks) };
    },
  };
}
