import { create } from "@bufbuild/protobuf";
import type { Clock, Logger } from "../core/index.js";
import {
  createMemoryJournal,
  createOperationExecutor,
  type HypervisorDriver,
  type OperationExecutor,
  type OperationJournal,
} from "../drivers/index.js";
import {
  OperationPhase,
  type OperationRecord,
  OperationRecordSchema,
} from "../gen/debvisor/store/v1/agent_records_pb.js";
import { type AgentMessage, AgentMessageSchema } from "../gen/debvisor/v1/agent_pb.js";
import { type KvStore, updateMessage } from "../store/index.js";
import { watchOperationsWithSweep } from "./agent-operation-watch.js";
import { createAgentOperations, operationKey } from "./agent-operations.js";
import { isRunnerId } from "./runner-registry.js";

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

  /**
   * Claims an operation for this process: a PENDING one, or (`from`) one
   * still claimed by that dead process. True when this process is to run it.
   */
  async function claim(record: OperationRecord, from?: string): Promise<boolean> {
    const id = record.dispatch?.operationId ?? "";
    const { written } = await updateMessage(
      store,
      OperationRecordSchema,
      operationKey(record.nodeId, id),
      (current) => {
        if (current === undefined) return undefined;
        const open =
          from === undefined
            ? current.phase === OperationPhase.PENDING
            : current.deliveredBy === from &&
              (current.phase === OperationPhase.DELIVERED ||
                current.phase === OperationPhase.RUNNING);
        if (!open) return undefined;
        return create(OperationRecordSchema, {
          ...current,
          phase: OperationPhase.DELIVERED,
          deliveries: current.deliveries + 1,
          deliveredBy: options.runnerId,
          updatedAtMs: BigInt(clock.now()),
        });
      },
      { signal },
    );
    return written;
  }

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

  /**
   * Takes over an operation whose claimer died mid-way (its registry key is
   * gone): settled from what the hypervisor shows, as an agent settles its
   * journal after a restart (a start whose VM runs is done, one whose VM
   * does not has not acted and runs now; see the executor's `recover`), so
   * it is neither lost nor run twice. Claims that are not registry ids
   * (older daemons) are left alone: their liveness cannot be told.
   */
  async function adopt(record: OperationRecord): Promise<void> {
    const node = record.nodeId;
    const dispatch = record.dispatch;
    const by = record.deliveredBy;
    if (dispatch === undefined || by === options.runnerId || !isRunnerId(by)) return;
    if (record.phase !== OperationPhase.DELIVERED && record.phase !== OperationPhase.RUNNING)
      return;
    if (!options.nodes().includes(node) || options.servedByAgent(node)) return;
    const driver = options.driver(node);
    if (driver === undefined || (await options.isRunnerAlive(by, signal))) return;
    if (!(await claim(record, by))) return;
    logger.warn(
      { node, operation: dispatch.operationId, from: by },
      "adopting an operation its process left",
    );
    // Its own executor and journal: `recover` settles every unfinished entry of its journal.
    const inner = createMemoryJournal();
    const journal: OperationJournal = {
      ...inner,
      finish(result) {
        inner.finish(result);
        write(node, { case: "result", value: result });
      },
    };
    journal.begin(dispatch);
    await createOperationExecutor({
      driver,
      journal,
      logger: logger.child({ node, runner: "local" }),
      signal,
      send: (m) => write(node, create(AgentMessageSchema, m).kind),
    }).recover();
  }
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
