/**
 * The control plane's executors when nodes run agents: the composition
 * that hands out, per node, either the local executors' driver or an agent
 * driver (`createAgentDriver`), built once per node and kept until the
 * node is removed.
 */
import { type Clock, type Logger, nodeKey } from "../core/index.js";
import type { KvStore } from "../store/index.js";
import { type AgentDriver, type AgentDriverDeps, createAgentDriver } from "./agent-driver.js";
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
  const deps: AgentDriverDeps = {
    inventory: options.inventory,
    operations: options.operations,
    clock: options.clock,
    call: createAgentOperationCaller({
      store: options.store,
      operations: options.operations,
      clock: options.clock,
      logger: options.logger,
      requestedBy: EXECUTOR_PRINCIPAL,
      deliveryTimeoutMs: options.deliveryTimeoutMs ?? 30_000,
      cancelGraceMs: options.cancelGraceMs ?? 10_000,
      closing: options.closing,
    }),
    downGraceMs: options.downGraceMs ?? 60_000,
    reportWaitMs: options.reportWaitMs ?? 30_000,
  };
  const drivers = new Map<string, AgentDriver>();
  // A removed node's driver goes with it (ids taken in any case); one that reports again gets a new one.
  options.inventory.onNodeRemoved((removed) => {
    for (const id of drivers.keys()) if (nodeKey(id) === removed) drivers.delete(id);
  });

  return {
    forNode(nodeId) {
      const local = options.local?.forNode(nodeId);
      if (local !== undefined) return local;
      let d = drivers.get(nodeId);
      if (d === undefined) {
        d = createAgentDriver(nodeId, deps);
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
