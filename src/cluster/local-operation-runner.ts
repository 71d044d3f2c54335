import { create } from "@bufbuild/protobuf";
import type { Clock, Logger } from "../core/index.js";
import {
  createMemoryJournal,
  createOperationExecutor,
  type HypervisorDriver,
  type OperationExecutor,
} from "../drivers/index.js";
import { OperationPhase, type OperationRecord } from "../gen/debvisor/store/v1/agent_records_pb.js";
import { type AgentMessage, AgentMessageSchema } from "../gen/debvisor/v1/agent_pb.js";
import type { KvStore } from "../store/index.js";
import { watchOperationsWithSweep } from "./agent-operation-watch.js";
import { createAgentOperations } from "./agent-operations.js";
import { createLocalOperationAdopt } from "./local-operation-adopt.js";
import { createLocalOperationClaim } from "./local-operation-claim.js";

/** Options of {@link startLocalOperationRunner}. */
export interface LocalOperationRunnerOptions {
  readonly store: KvStore;
  readonly clock: Clock;
  readonly logger: Logger;
  /** The nodes this process drives with its own drivers (simulation, libvirt.nodes). */
  readonly nodes: () => readonly string[];
  readonly driver: (nodeId: string) => HypervisorDriver | undefined;
  /** True while an agent's stream on this process serves the node instead. */
  readonly servedByAgent: (nodeId: string) => boolean;
  /** This process, as recorded on the operations it claims (its id in the runner registry). */
  readonly runnerId: string;
  /**
   * Whether the process that claimed an operation is alive (the runner
   * registry: a key under a lease). One that is not, and whose claim is a
   * registry id, lost its operation to a crash: this process adopts it.
   */
  readonly isRunnerAlive: (runnerId: string, signal?: AbortSignal) => Promise<boolean>;
  /** How often operations claimed by dead processes are looked for (default 5 s). */
  readonly adoptEveryMs?: number;
  /** Told after each operation a node finished (to report the node's new state at once). */
  readonly onFinished?: (nodeId: string) => void;
  readonly signal: AbortSignal;
}

/**
 * Runs the operations of nodes this daemon drives itself, as an agent runs
 * its node's: the same executor (drivers' operation-executor.ts), the
 * same records. An operation is claimed by a compare-and-swap from PENDING
 * to DELIVERED, so of several control-plane processes sharing a store only
 * one runs it; progress and the result go into the record.
 */
export function startLocalOperationRunner(options: LocalOperationRunnerOptions): {
  ready: Promise<void>;
} {
  const { store, clock, logger, signal } = options;
  const operations = createAgentOperations(store, clock);
  const executors = new Map<string, OperationExecutor>();

  /** Records an executor's progress or result. */
  function write(nodeId: string, kind: AgentMessage["kind"]): void {
    const done =
      kind.case === "progress"
        ? operations.progress(nodeId, kind.value)
        : kind.case === "result"
          ? operations.finish(nodeId, kind.value).then(() => options.onFinished?.(nodeId))
          : Promise.resolve();
    done.catch((err: unknown) =>
      logger.warn({ err, node: nodeId }, "local operation not recorded"),
    );
  }

  function executorFor(nodeId: string, driver: HypervisorDriver): OperationExecutor {
    let ex = executors.get(nodeId);
    if (ex === undefined) {
      ex = createOperationExecutor({
        driver,
        journal: createMemoryJournal(),
        logger: logger.child({ node: nodeId, runner: "local" }),
        signal,
        send: (m) => write(nodeId, create(AgentMessageSchema, m).kind),
      });
      executors.set(nodeId, ex);
    }
    return ex;
  }

  const claim = createLocalOperationClaim({
    store,
    clock,
    runnerId: options.runnerId,
    signal,
  });

  async function consider(record: OperationRecord): Promise<void> {
    const node = record.nodeId;
    const dispatch = record.dispatch;
    // Only nodes this process drives itself: an agent's node is its agent's to run.
    if (dispatch === undefined || !options.nodes().includes(node) || options.servedByAgent(node))
      return;
    const driver = options.driver(node);
    if (driver === undefined) return;
    if (record.phase === OperationPhase.PENDING) {
      if (!(await claim(record))) return;
      executorFor(node, driver).dispatch(dispatch);
    } else if (record.cancelRequested && record.deliveredBy === options.runnerId) {
      executors.get(node)?.cancel(dispatch.operationId);
    }
  }

  const adopt = createLocalOperationAdopt({
    logger,
    signal,
    nodes: options.nodes,
    driver: options.driver,
    servedByAgent: options.servedByAgent,
    runnerId: options.runnerId,
    isRunnerAlive: options.isRunnerAlive,
    claim,
    write,
  });
  const run = (record: OperationRecord) =>
    consider(record).catch((err: unknown) => {
      if (!signal.aborted) logger.warn({ err, node: record.nodeId }, "local operation not started");
    });
  /** Operations written while the watch was not running. */
  async function sweep(): Promise<void> {
    for (const node of options.nodes())
      for (const r of await operations.open(node, signal)) await run(r);
  }

  /** Operations left by dead processes: looked for now and then (a lease expiring writes no operation). */
  async function adoptLeft(): Promise<void> {
    for (const node of options.nodes())
      for (const r of await operations.open(node, signal)) await adopt(r);
  }
  const adopting = setInterval(() => {
    adoptLeft().catch((err: unknown) => {
      if (!signal.aborted) logger.warn({ err }, "looking for left operations failed");
    });
  }, options.adoptEveryMs ?? 5000);
  adopting.unref();
  signal.addEventListener("abort", () => clearInterval(adopting), { once: true });

  return watchOperationsWithSweep({
    store,
    signal,
    logger,
    onRecord: (r) => void run(r),
    sweep: async () => {
      await sweep();
      await adoptLeft();
    },
  });
}
