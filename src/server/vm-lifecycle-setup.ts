import type { AuditFields, AuditLog } from "../audit/index.js";
import {
  type RunnerRegistry,
  startLocalOperationRunner,
  startOperationRetention,
  startVmOperationSettler,
  type VmRecords,
} from "../cluster/index.js";
import { type Clock, Code, codeName, type Logger, REASONS, type Reason } from "../core/index.js";
import type { HypervisorDriver } from "../drivers/index.js";
import { type VmOperation, VmOperationKind, VmOperationState } from "../gen/debvisor/v1/vm_pb.js";
import type { KvStore } from "../store/index.js";

/** What the VM lifecycle's background parts need from the daemon. */
export interface VmLifecycleSetup {
  readonly store: KvStore;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly closing: AbortSignal;
  readonly audit: AuditLog | undefined;
  readonly vmRecords: VmRecords;
  /** Nodes this daemon drives itself (simulation, libvirt.nodes), and their drivers. */
  readonly nodes: () => readonly string[];
  readonly driver: (nodeId: string) => HypervisorDriver | undefined;
  /** True while an agent's stream on this process serves the node. */
  readonly servedByAgent: (nodeId: string) => boolean;
  /** Reports a node's new state at once after an operation on it finished. */
  readonly report: (nodeId: string) => Promise<void>;
  /** This process in the runner registry: who claims operations, and who is alive. */
  readonly runners: RunnerRegistry;
  /** How long finished operations are kept (cluster.operationRetentionMs). */
  readonly operationRetentionMs: number;
}

/** The principal of the audit records of finished lifecycle operations. */
export const VM_LIFECYCLE_PRINCIPAL = "system:vm-lifecycle";

/**
 * Starts the local operation runner (operations of nodes this daemon
 * drives), the settler (each finished operation audited once as
 * `vm.operation`, deletes and failed creates reflected in the VM records)
 * and the removal of finished operations past their retention.
 */
export async function startVmLifecycle(setup: VmLifecycleSetup): Promise<void> {
  const { logger, audit } = setup;
  const runner = startLocalOperationRunner({
    store: setup.store,
    clock: setup.clock,
    logger,
    nodes: setup.nodes,
    driver: setup.driver,
    servedByAgent: setup.servedByAgent,
    runnerId: setup.runners.id,
    isRunnerAlive: (id, signal) => setup.runners.isAlive(id, signal),
    onFinished: (nodeId) => {
      setup.report(nodeId).catch((err: unknown) => logger.warn({ err, nodeId }, "report failed"));
    },
    signal: setup.closing,
  });
  const settler = startVmOperationSettler({
    store: setup.store,
    vmRecords: setup.vmRecords,
    logger,
    signal: setup.closing,
    onSettled: async (op, tenant) => {
      logger.info(
        { operation: op.id, vm: op.vmId, outcome: VmOperationState[op.state], reason: op.reason },
        "vm operation finished",
      );
      // Awaited: the settler marks the outcome told only once the trail took it.
      await audit?.append(vmOperationAuditFields(op, tenant));
    },
  });
  await Promise.all([runner.ready, settler.ready]);
  startOperationRetention({
    store: setup.store,
    clock: setup.clock,
    logger,
    retentionMs: setup.operationRetentionMs,
    signal: setup.closing,
  });
}

const METHODS: Record<VmOperationKind, string> = {
  [VmOperationKind.UNSPECIFIED]: "",
  [VmOperationKind.CREATE]: "CreateVm",
  [VmOperationKind.START]: "StartVm",
  [VmOperationKind.STOP]: "StopVm",
  [VmOperationKind.REBOOT]: "RebootVm",
  [VmOperationKind.DELETE]: "DeleteVm",
};

/** The audit record of a lifecycle operation's outcome; its request id is the operation's id. */
export function vmOperationAuditFields(op: VmOperation, tenant: string): AuditFields {
  const ok = op.state === VmOperationState.SUCCEEDED;
  const method = METHODS[op.kind];
  return {
    event: "vm.operation",
    requestId: op.id,
    principal: VM_LIFECYCLE_PRINCIPAL,
    authMethod: "internal",
    keyId: "",
    tenant,
    peer: "",
    service: "debvisor.v1.VmService",
    method,
    permission: `vm:${method.replace(/Vm$/, "").toLowerCase()}`,
    decision: VmOperationState[op.state]?.toLowerCase() ?? "",
    reason: op.reason,
    args: `vm_id=${op.vmId} node=${op.nodeId?.id ?? ""} requested_by=${op.requestedBy}`,
    code: ok ? "OK" : codeName(isReason(op.reason) ? REASONS[op.reason].code : Code.Unknown),
    error: ok ? "" : op.message,
    durationMs: 0,
  };
}

const isReason = (r: string): r is Reason => Object.hasOwn(REASONS, r);
