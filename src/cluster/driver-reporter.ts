import { create } from "@bufbuild/protobuf";
import type { Clock, Logger } from "../core/index.js";
import { timestampFromMs } from "../core/index.js";
import { type HypervisorDriver, vmStateOf } from "../drivers/index.js";
import { NodeIdSchema, StatusCode } from "../gen/debvisor/v1/common_pb.js";
import { HealthSchema, type NodeInfo } from "../gen/debvisor/v1/node_pb.js";
import { type VmInfo, VmInfoSchema } from "../gen/debvisor/v1/vm_pb.js";
import type { Inventory } from "./inventory.js";

/** A node the daemon drives itself (no agent heartbeats for it): what it registers as and its driver. */
export interface ReportedNode {
  readonly info: NodeInfo;
  readonly driver: HypervisorDriver;
}

/** Options of {@link startDriverReporter}. */
export interface DriverReporterOptions {
  readonly inventory: Inventory;
  readonly nodes: readonly ReportedNode[];
  readonly clock: Clock;
  readonly logger: Logger;
  readonly intervalMs: number;
}

/** The loop that turns driver reports into heartbeats. */
export interface DriverReporter {
  /** One report from every node now. */
  report(): Promise<void>;
  close(): void;
}

/**
 * For nodes the daemon reaches through a local driver (libvirt over a URI)
 * rather than through an agent: registers each node, then every interval
 * lists its domains and records them as the node's heartbeat. What a
 * hypervisor does not know (tenant, HA, disks, CPU model) is kept from the
 * inventory's last report of the VM; state, vCPUs and memory come from the
 * driver. A node whose driver cannot be reached sends no heartbeat, so it
 * goes NOT_READY like a silent agent.
 */
export async function startDriverReporter(options: DriverReporterOptions): Promise<DriverReporter> {
  const { inventory, nodes, clock, logger } = options;
  for (const n of nodes) await inventory.register(n.info, `driver:${n.driver.kind}`);
  const reportOne = async (n: ReportedNode) => {
    const nodeId = n.info.id?.id ?? "";
    const signal = AbortSignal.timeout(Math.max(1000, options.intervalMs));
    const domains = await n.driver.list(signal);
    const known = new Map((await inventory.getNode(nodeId))?.vms.map((vm) => [vm.id, vm]) ?? []);
    const vms: VmInfo[] = domains.map((d) => {
      const vm = create(VmInfoSchema, known.get(d.id) ?? { id: d.id, name: d.id });
      return create(VmInfoSchema, {
        ...vm,
        state: vmStateOf(d.state),
        vcpus: d.vcpus,
        memoryBytes: d.memoryBytes,
        nodeId: create(NodeIdSchema, { id: nodeId }),
      });
    });
    await inventory.heartbeat(
      create(HealthSchema, {
        nodeId: { id: nodeId },
        overall: StatusCode.STATUS_OK,
        timestamp: timestampFromMs(clock.now()),
        vms,
      }),
    );
  };
  const report = async () => {
    await Promise.all(
      nodes.map((n) =>
        reportOne(n).catch((err: unknown) =>
          logger.warn({ err, node: n.info.id?.id }, "driver report failed; no heartbeat"),
        ),
      ),
    );
  };
  await report();
  const timer = setInterval(() => void report(), options.intervalMs);
  timer.unref();
  return { report, close: () => clearInterval(timer) };
}
