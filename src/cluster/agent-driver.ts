/**
 * One node's driver when the node runs an agent: what the control plane's
 * executors hand the migration engine, drain and failover for that node.
 * Calls become operations for the node's agent; list and info answer from
 * its last report. Built once per node by `createAgentExecutors`.
 */
import { type Clock, RpcError } from "../core/index.js";
import {
  type DomainState,
  type DomainStatus,
  type JobAbortingDriver,
  type QuiescingDriver,
  type RecoveringDriver,
  type StaleCopyRemovingDriver,
  vmDefinitionParams,
} from "../drivers/index.js";
import { OperationKind } from "../gen/debvisor/v1/agent_pb.js";
import { NodeReadiness } from "../gen/debvisor/v1/node_pb.js";
import { VmState } from "../gen/debvisor/v1/vm_pb.js";
import { callUnlessDown } from "./agent-call-unless-down.js";
import { agentMigrateOut } from "./agent-migrate-out.js";
import type { AgentOperationCaller } from "./agent-operation-call.js";
import type { AgentOperations } from "./agent-operations.js";
import { agentQuiesce } from "./agent-quiesce.js";
import type { Inventory } from "./inventory.js";

/** Every ability an agent's node offers the control plane. */
export type AgentDriver = RecoveringDriver &
  QuiescingDriver &
  JobAbortingDriver &
  StaleCopyRemovingDriver;

/**
 * What every agent node's driver shares: built once by `createAgentExecutors`,
 * fully defaulted, so the parts (`createAgentDriver`, `agentMigrateOut`,
 * `agentQuiesce`) hold no state of their own.
 */
export interface AgentDriverDeps {
  readonly inventory: Inventory;
  readonly operations: AgentOperations;
  readonly clock: Clock;
  /** Runs one operation on a node's agent (requested by the executor principal). */
  readonly call: AgentOperationCaller;
  /** How long a node may be NOT_READY with a job on a VM before it is presumed dead, job and all. */
  readonly downGraceMs: number;
  /** How long `quiesce` waits for a report made after a node's job. */
  readonly reportWaitMs: number;
}

/**
 * The driver of `nodeId`, whose calls are operations for its agent
 * (start, stop, MIGRATE_OUT on the source, RECOVER on the target) awaited
 * through `deps.call`; list and info answer from the node's last report
 * and fail BACKEND_UNAVAILABLE while it is not READY.
 */
export function createAgentDriver(nodeId: string, deps: AgentDriverDeps): AgentDriver {
  const { inventory, call } = deps;
  const reported = async (signal: AbortSignal): Promise<DomainStatus[]> => {
    const node = await inventory.getNode(nodeId, signal);
    // A node that stopped reporting cannot be asked: its last report is no answer.
    if (node === undefined || node.summary.readiness !== NodeReadiness.READY)
      throw new RpcError("BACKEND_UNAVAILABLE", { message: `${nodeId} is not reporting` });
    return node.vms
      .map((vm) => ({
        id: vm.id,
        state: domainState(vm.state),
        vcpus: vm.vcpus,
        memoryBytes: vm.memoryBytes,
        persistent: true,
      }))
      .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  };
  return {
    kind: "agent",
    nodeId,
    capabilities: { liveMigration: true, offlineMigration: true },
    list: reported,
    info: async (vmId, signal) => (await reported(signal)).find((d) => d.id === vmId),
    // Under the generation the caller decided under, if it says (else the current one).
    start: (vmId, signal, startOptions) =>
      call({
        nodeId,
        kind: OperationKind.START_VM,
        vmId,
        generation: startOptions?.generation ?? 0n,
        signal,
      }),
    stop: (vmId, { force, signal }) =>
      call({
        nodeId,
        kind: OperationKind.STOP_VM,
        vmId,
        params: { force: String(force) },
        signal,
      }),
    migrate: (vmId, to, migrateOptions) => agentMigrateOut(nodeId, vmId, to, migrateOptions, deps),
    async recover(vmId, fromNodeId, signal, recoverOptions) {
      // The control plane's last view of the vm: the target defines it from this where it can.
      const vm = await inventory.findVm(vmId, signal);
      // A target that dies with the recover never answers: waited for without end, it held
      // the failover controller's pass, and every later one, for good (an adversarial review).
      await callUnlessDown(
        {
          nodeId,
          kind: OperationKind.RECOVER,
          vmId,
          params: { ...(vm === undefined ? {} : vmDefinitionParams(vm)), from: fromNodeId },
          generation: recoverOptions?.generation ?? 0n,
          signal,
        },
        deps,
        `${nodeId} went down during the recover of ${vmId}; its outcome is left to what the nodes report`,
      );
    },
    // Conflicts: the node removes its copy only if it is older than `generation` (the VM's current one).
    removeStaleCopy: (vmId, generation, signal) =>
      call({ nodeId, kind: OperationKind.REMOVE_STALE_COPY, vmId, generation, signal }),
    async abortJob(vmId, signal) {
      // The node's migration of the vm is an operation: cancelling it aborts the hypervisor's
      // job (rolled back before its switchover), whoever submitted it.
      for (const r of await deps.operations.open(nodeId, signal))
        if (r.dispatch?.vmId === vmId && r.dispatch.kind === OperationKind.MIGRATE_OUT)
          await deps.operations.requestCancel(nodeId, r.dispatch.operationId, signal);
    },
    quiesce: (vmId, signal) => agentQuiesce(nodeId, vmId, signal, deps),
  };
}

function domainState(state: VmState): DomainState {
  switch (state) {
    case VmState.RUNNING:
      return "running";
    case VmState.PAUSED:
      return "paused";
    case VmState.CRASHED:
      return "crashed";
    default:
      return "stopped";
  }
}
