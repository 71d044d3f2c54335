import { setTimeout as sleep } from "node:timers/promises";
import {
  type Clock,
  type Logger,
  msFromTimestamp,
  RpcError,
  rethrowAborted,
} from "../core/index.js";
import {
  type DomainState,
  type DomainStatus,
  type JobAbortingDriver,
  MIGRATION_URI_LABEL,
  type MigrationPhase,
  migrationUriProblem,
  parseTransfer,
  type QuiescingDriver,
  type RecoveringDriver,
  type StaleCopyRemovingDriver,
  vmDefinitionParams,
} from "../drivers/index.js";
import { OperationKind } from "../gen/debvisor/v1/agent_pb.js";
import { NodeReadiness } from "../gen/debvisor/v1/node_pb.js";
import { VmState } from "../gen/debvisor/v1/vm_pb.js";
import type { KvStore } from "../store/index.js";
import { createAgentOperationCaller } from "./agent-operation-call.js";
import type { AgentOperations } from "./agent-operations.js";
import type { Executors } from "./executors.js";
import type { Inventory } from "./inventory.js";

/** Options of {@link createAgentExecutors}. */
export interface AgentExecutorsOptions {
  readonly store: KvStore;
  readonly inventory: Inventory;
  readonly operations: AgentOperations;
  readonly clock: Clock;
  readonly logger: Logger;
  /** Nodes this process drives itself (the embedded simulation, libvirt.nodes) come first. */
  readonly local?: Executors;
  /** An operation no agent takes within this long fails BACKEND_UNAVAILABLE (default 30 s). */
  readonly deliveryTimeoutMs?: number;
  /** After an abort, how long the agent's own outcome is awaited (default 10 s). */
  readonly cancelGraceMs?: number;
  /**
   * How long a node may be NOT_READY with a job on a VM before settling
   * presumes it dead, job and all (default 60 s; the daemon uses the fence delay).
   */
  readonly downGraceMs?: number;
  /**
   * How long `quiesce` waits for a report made after a node's job (received
   * since, its content newer) before it fails BACKEND_UNAVAILABLE for the
   * caller to look again later (default 30 s; the daemon uses two heartbeat
   * intervals, at most 30 s: under settling's 60 s bound on a pass). A job
   * that moved a VM changes the node's list, which is stored from the next
   * report whatever `cluster.reportRefreshMs` says.
   */
  readonly reportWaitMs?: number;
  /** The process is stopping: operations under way are left to the agents (SHUTTING_DOWN). */
  readonly closing?: AbortSignal;
}

/** Operations the control plane's executors submit are recorded as requested by this principal. */
export const EXECUTOR_PRINCIPAL = "system:executor";

/**
 * Executors whose drivers are node agents: every call the migration
 * engine, drain and failover make becomes an operation in the store for
 * that node's agent (start, stop, MIGRATE_OUT on the source, RECOVER on the
 * target), awaited by watching its record; list and info answer from what
 * the node's agent last reported. Nodes the `local` executors know are
 * theirs. Any other node is taken to have an agent: an operation no agent
 * takes within the delivery timeout fails BACKEND_UNAVAILABLE.
 */
export function createAgentExecutors(options: AgentExecutorsOptions): Executors {
  const { inventory, clock } = options;
  const call = createAgentOperationCaller({
    store: options.store,
    operations: options.operations,
    clock,
    logger: options.logger,
    requestedBy: EXECUTOR_PRINCIPAL,
    deliveryTimeoutMs: options.deliveryTimeoutMs ?? 30_000,
    cancelGraceMs: options.cancelGraceMs ?? 10_000,
    closing: options.closing,
  });
  type AgentDriver = RecoveringDriver &
    QuiescingDriver &
    JobAbortingDriver &
    StaleCopyRemovingDriver;
  const drivers = new Map<string, AgentDriver>();
  const downGraceMs = options.downGraceMs ?? 60_000;
  const reportWaitMs = options.reportWaitMs ?? 30_000;

  function agentDriver(nodeId: string): AgentDriver {
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
      async migrate(vmId, to, { live, signal, onProgress }) {
        const uri = to.uri !== "" ? to.uri : await migrationUri(to.nodeId, signal);
        // A source that went down with the job may never say how it ended (dead, or cut off
        // for good): past downGraceMs its outcome is left to settling, which decides from
        // what the nodes report. Waiting for it held the VM's lock for good, and failover
        // never restarted an HA VM whose node died mid-migration (an adversarial review).
        const done = new AbortController();
        const following = call({
          nodeId,
          kind: OperationKind.MIGRATE_OUT,
          vmId,
          params: { destination: to.nodeId, uri, live: String(live) },
          signal: AbortSignal.any([signal, done.signal]),
          onProgress: (p) =>
            onProgress?.({
              phase: phaseOf(p.phase),
              percent: p.percent,
              ...parseTransfer(p.message),
            }),
        });
        try {
          // Watched until the call ends, whatever ends it (a cancel included): only a
          // node down with the job wins the race against the agent's answer.
          const lost = downWithJob(nodeId, done.signal);
          if (await Promise.race([following.then(() => false), lost])) {
            following.catch(() => undefined);
            throw new RpcError("OPERATION_INTERRUPTED", {
              message: `${nodeId} went down during the migration of ${vmId}; settled from what the nodes report`,
            });
          }
        } finally {
          done.abort();
        }
      },
      async recover(vmId, fromNodeId, signal, recoverOptions) {
        // The control plane's last view of the vm: the target defines it from this where it can.
        const vm = await inventory.findVm(vmId, signal);
        await call({
          nodeId,
          kind: OperationKind.RECOVER,
          vmId,
          params: { ...(vm === undefined ? {} : vmDefinitionParams(vm)), from: fromNodeId },
          generation: recoverOptions?.generation ?? 0n,
          signal,
        });
      },
      // Conflicts: the node removes its copy only if it is older than `generation` (the VM's current one).
      removeStaleCopy: (vmId, generation, signal) =>
        call({ nodeId, kind: OperationKind.REMOVE_STALE_COPY, vmId, generation, signal }),
      async abortJob(vmId, signal) {
        // The node's migration of the vm is an operation: cancelling it aborts the hypervisor's
        // job (rolled back before its switchover), whoever submitted it.
        for (const r of await options.operations.open(nodeId, signal))
          if (r.dispatch?.vmId === vmId && r.dispatch.kind === OperationKind.MIGRATE_OUT)
            await options.operations.requestCancel(nodeId, r.dispatch.operationId, signal);
      },
      async quiesce(vmId, signal) {
        // Wait for the node's jobs on the vm to end, then for a report made after. A node
        // that is down with such a job answers nothing yet (the caller tries again), until
        // it has been down for longer than downGraceMs: then it is presumed dead, job and all.
        for (;;) {
          const node = await inventory.getNode(nodeId, signal);
          if (node === undefined) return;
          const open = await options.operations.open(nodeId, signal);
          const busy = open.some((r) => r.dispatch?.vmId === vmId);
          if (node.summary.readiness !== NodeReadiness.READY) {
            if (busy && Number(node.summary.notReadyForMs) <= downGraceMs)
              throw new RpcError("BACKEND_UNAVAILABLE", {
                message: `${nodeId} has not reported how its job on ${vmId} ended`,
              });
            return;
          }
          if (!busy) break;
          await sleep(250, undefined, { signal }).catch(rethrowAborted(signal));
        }
        // Made after: received after now, and its content newer than the report stored now.
        // A report stamped before the stored one (the node's clock stepped back) renews the
        // node but its content is ignored: the stored list, from before the job, stays.
        const since = clock.now();
        const stamp = msFromTimestamp(
          (await inventory.getNode(nodeId, signal))?.summary.health?.timestamp,
        );
        // Bounded: a node whose clock stays ahead has every report refused, and one whose
        // clock went back has them ignored until its stamps pass the stored one; its list
        // is no answer meanwhile, and the caller (settling) looks again on a later pass.
        for (;;) {
          const node = await inventory.getNode(nodeId, signal);
          if (node === undefined || node.summary.readiness !== NodeReadiness.READY) return;
          if (
            msFromTimestamp(node.summary.lastHeartbeat) > since &&
            msFromTimestamp(node.summary.health?.timestamp) > stamp
          )
            return;
          if (clock.now() - since > reportWaitMs)
            throw new RpcError("BACKEND_UNAVAILABLE", {
              message: `${nodeId} has sent no report whose content is newer than its job on ${vmId}`,
            });
          await sleep(250, undefined, { signal }).catch(rethrowAborted(signal));
        }
      },
    };
  }

  /**
   * Resolves true once `nodeId` has been NOT_READY for longer than
   * downGraceMs (looked at every second), false once `signal` aborts.
   */
  async function downWithJob(nodeId: string, signal: AbortSignal): Promise<boolean> {
    while (!signal.aborted) {
      const node = await inventory.getNode(nodeId, signal).catch(() => undefined);
      if (
        node !== undefined &&
        node.summary.readiness !== NodeReadiness.READY &&
        Number(node.summary.notReadyForMs) > downGraceMs
      )
        return true;
      await sleep(1000, undefined, { signal }).catch(() => undefined);
    }
    return false;
  }

  /** How the destination's hypervisor is reached: what its agent reported. */
  async function migrationUri(nodeId: string, signal: AbortSignal): Promise<string> {
    const node = await inventory.getNode(nodeId, signal);
    const uri = node?.summary.info?.labels[MIGRATION_URI_LABEL] ?? "";
    if (uri === "")
      throw new RpcError("BACKEND_UNAVAILABLE", {
        message: `${nodeId} has not said how to reach it for a migration (no agent?)`,
      });
    // What a node reports is not sent to another as it is: the source's libvirt acts on it.
    const problem = migrationUriProblem(uri);
    if (problem !== undefined)
      throw new RpcError("MIGRATION_NOT_ALLOWED", {
        message: `${nodeId} reported a migration URI that no source may connect to: ${problem}`,
      });
    return uri;
  }

  return {
    forNode(nodeId) {
      const local = options.local?.forNode(nodeId);
      if (local !== undefined) return local;
      let d = drivers.get(nodeId);
      if (d === undefined) {
        d = agentDriver(nodeId);
        drivers.set(nodeId, d);
      }
      return d;
    },
    destination(nodeId) {
      if (options.local?.forNode(nodeId) !== undefined) return options.local.destination(nodeId);
      return { nodeId, uri: "" };
    },
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

/**
 * A migration's phase from the agent's progress: its own phases as they
 * are; "started" (every operation's first word, before the driver says
 * anything) is still preparing; anything else is a transfer's detail.
 */
function phaseOf(phase: string): MigrationPhase {
  if (phase === "started") return "preparing";
  return phase === "preparing" || phase === "switchover" || phase === "completed"
    ? phase
    : "transferring";
}
