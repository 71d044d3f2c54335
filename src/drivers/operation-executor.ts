import { create, equals, type MessageInitShape } from "@bufbuild/protobuf";
import { type Logger, RpcError, toRpcError } from "../core/index.js";
import {
  type AgentMessageSchema,
  type OperationDispatch,
  OperationKind,
  OperationOutcome,
  type OperationResult,
  OperationResultSchema,
} from "../gen/debvisor/v1/agent_pb.js";
import { TimestampSchema } from "../gen/debvisor/v1/common_pb.js";
import type { VmInfo } from "../gen/debvisor/v1/vm_pb.js";
import type { CopyGenerations } from "./copy-generations.js";
import {
  canDefine,
  canRecover,
  canTellDiskHolder,
  type HypervisorDriver,
  type MigrationProgress,
} from "./hypervisor-driver.js";
import {
  type ActionProgress,
  createDomain,
  deleteDomain,
  stopGracefully,
} from "./lifecycle-actions.js";
import type { OperationJournal } from "./operation-journal.js";
import { formatTransfer, vmFromDefinitionParams } from "./operation-params.js";
import { isStorageOperation } from "./storage-params.js";
import { createVmLanes } from "./vm-lanes.js";

/** A message for the control plane; dropped while the stream is down (the server redelivers). */
export type Send = (message: MessageInitShape<typeof AgentMessageSchema>) => void;

/** Runs operations on the node's hypervisor, each at most once. */
export interface OperationExecutor {
  /**
   * Takes a dispatched operation. One already finished answers its recorded
   * result (replayed); one running is not started again.
   */
  dispatch(dispatch: OperationDispatch): void;
  cancel(operationId: string): void;
  /**
   * After a restart: settles operations the journal says were started and
   * not finished, from what the hypervisor shows (a start whose VM runs is
   * done; a start whose VM does not run has not acted and runs now; a
   * reboot or a migration cannot be told apart: a migration whose VM is
   * gone from here has finished, any other is reported OPERATION_INTERRUPTED;
   * a recover whose VM runs here is done, else it runs again).
   */
  recover(): Promise<void>;
  /** Operations running now. */
  running(): number;
}

/** The operation kinds this agent runs, as Hello capabilities. */
export const OPERATION_CAPABILITIES = [
  "op:start-vm",
  "op:stop-vm",
  "op:reboot-vm",
  "op:create-vm",
  "op:delete-vm",
  "op:migrate-out",
  "op:recover",
  "op:remove-stale-copy",
];

/** Creates the executor over a driver and a journal. */
export function createOperationExecutor(options: {
  driver: HypervisorDriver;
  /** Defines a VM from the control plane's view, where the backend can (RECOVER). */
  define?: (info: VmInfo) => void;
  /** The clock results are stamped with (a clock-offset fault shifts it). Default Date.now. */
  now?: () => number;
  journal: OperationJournal;
  send: Send;
  logger: Logger;
  /** Aborted at shutdown: running operations are left to recover() of the next start. */
  signal: AbortSignal;
  /** The generation each copy here was started under (REMOVE_STALE_COPY compares with it). */
  copies?: CopyGenerations;
  /** Runs storage operations (OperationKind 20-29), when the agent has storage. */
  storage?: (dispatch: OperationDispatch, signal: AbortSignal) => Promise<void>;
  /**
   * Awaited before a VM operation's result is sent: the agent reports its
   * domains first, so that when the control plane answers the operation's
   * caller, what it shows of the VM is already what the operation did.
   */
  beforeResult?: () => Promise<void>;
}): OperationExecutor {
  const { driver, journal, send, logger } = options;
  const inflight = new Map<string, AbortController>();
  const lanes = createVmLanes();

  const stamp = () => {
    const ms = (options.now ?? Date.now)();
    return create(TimestampSchema, {
      seconds: BigInt(Math.floor(ms / 1000)),
      nanos: (ms % 1000) * 1_000_000,
    });
  };
  /** The result answering `d` (named by its id and its time of writing). */
  const result = (
    d: OperationDispatch,
    outcome: OperationOutcome,
    err?: RpcError,
    replayed = false,
  ): OperationResult =>
    create(OperationResultSchema, {
      operationId: d.operationId,
      dispatchCreatedAt: d.createdAt,
      outcome,
      reason: err?.reason ?? "",
      message: err?.clientMessage ?? "",
      finishedAt: stamp(),
      replayed,
    });

  async function act(
    d: OperationDispatch,
    signal: AbortSignal,
    progress: ActionProgress,
  ): Promise<void> {
    if (isStorageOperation(d.kind) && options.storage !== undefined)
      return options.storage(d, signal);
    // The fencing token goes to the driver, which checks it as the VM starts.
    const fence = { generation: d.generation };
    switch (d.kind) {
      case OperationKind.START_VM:
        return driver.start(d.vmId, signal, fence);
      case OperationKind.STOP_VM:
        return stopGracefully(driver, d.vmId, d.params, signal, progress);
      case OperationKind.REBOOT_VM:
        await stopGracefully(driver, d.vmId, d.params, signal, progress);
        progress(70, "starting");
        return driver.start(d.vmId, signal, fence);
      case OperationKind.CREATE_VM:
        return createDomain(driver, d.vmId, d.params, signal, progress, fence);
      case OperationKind.DELETE_VM:
        return deleteDomain(driver, d.vmId, d.params, signal, progress, fence);
      case OperationKind.MIGRATE_OUT:
        return driver.migrate(
          d.vmId,
          { nodeId: d.params.destination ?? "", uri: d.params.uri ?? "" },
          {
            live: d.params.live === "true",
            signal,
            onProgress: (p) => report(d, p),
          },
        );
      case OperationKind.RECOVER:
        return recoverHere(d, signal);
      case OperationKind.REMOVE_STALE_COPY:
        return removeStaleCopy(d, signal);
      default:
        throw new RpcError("INVALID_ARGUMENT", { message: "unknown operation kind" });
    }
  }

  /** Migration progress as operation progress; the figures ride in the message. */
  function report(d: OperationDispatch, p: MigrationProgress): void {
    send({
      kind: {
        case: "progress",
        value: {
          operationId: d.operationId,
          dispatchCreatedAt: d.createdAt,
          percent: Math.max(0, Math.min(100, Math.round(p.percent))),
          phase: p.phase,
          message: formatTransfer(p),
        },
      },
    });
  }

  /**
   * Failover: starts here a VM of a failed node. Its definition is here
   * already (shared or replicated storage), or defined from the control
   * plane's view where the backend can. The generation it was decided
   * under is in the journal with the dispatch (the fencing work checks it).
   */
  /**
   * Brings up a failed node's VM here, under the operation's generation:
   * started when defined here; else recovered from the shared storage's
   * definition where the driver can; else defined from the control plane's
   * description where the backend can, then started.
   */
  async function recoverHere(d: OperationDispatch, signal: AbortSignal): Promise<void> {
    const fence = { generation: d.generation };
    logger.info(
      { vm: d.vmId, from: d.params.from, generation: String(d.generation) },
      "recovering a vm of a failed node",
    );
    if ((await driver.info(d.vmId, signal)) !== undefined)
      return driver.start(d.vmId, signal, fence);
    const info = vmFromDefinitionParams(d.vmId, d.params);
    if (canRecover(driver))
      try {
        return await driver.recover(d.vmId, d.params.from ?? "", signal, fence);
      } catch (err) {
        // No definition on the shared storage: defined from the control plane's view below.
        if (info === undefined || toRpcError(err).reason !== "VM_NOT_FOUND") throw err;
      }
    if (info === undefined || options.define === undefined)
      throw new RpcError("VM_NOT_FOUND", {
        message: `vm ${d.vmId} is not defined on this node`,
      });
    options.define(info);
    await driver.start(d.vmId, signal, fence);
  }

  /**
   * Conflicts: stops (hard) and undefines this node's copy of a VM placed
   * elsewhere, only if the copy runs under a generation older than the VM's
   * current one, which the dispatch carries; the current copy, or one
   * started after the removal was decided, is never touched.
   */
  async function removeStaleCopy(d: OperationDispatch, signal: AbortSignal): Promise<void> {
    const mine = options.copies?.of(d.vmId) ?? 0n;
    if (d.generation === 0n || mine >= d.generation)
      throw new RpcError("COPY_NOT_STALE", {
        message: `the copy here runs under generation ${mine}, not older than ${d.generation}; not removed`,
      });
    const here = await driver.info(d.vmId, signal);
    if (here === undefined) return;
    // A copy that holds its disks is where the VM is, if no start elsewhere took them since:
    // kept when it runs, or when it is not the copy started here (no generation recorded
    // here, or its locks taken under a newer one than recorded: it migrated in, maybe onto
    // an older copy of its own, and a removal decided before the migration landed after
    // it). A stopped copy started here under an older generation goes, freeing the disks.
    const held = canTellDiskHolder(driver) ? await driver.heldDisks(d.vmId, signal) : undefined;
    if (held !== undefined && (here.state !== "stopped" || mine === 0n || held.generation > mine))
      throw new RpcError("COPY_NOT_STALE", {
        message: "the copy here holds its disks' locks; not removed",
      });
    if (here.state !== "stopped") await driver.stop(d.vmId, { force: true, signal });
    if (canDefine(driver))
      await driver.undefine(d.vmId, { force: true, signal, generation: d.generation });
    options.copies?.forget(d.vmId);
    logger.info(
      { vm: d.vmId, copyGeneration: String(mine), generation: String(d.generation) },
      "stale copy removed",
    );
  }

  /** Remembers the generation a copy was started under, once the start took effect. */
  function noteStarted(d: OperationDispatch): void {
    const starts = [OperationKind.START_VM, OperationKind.REBOOT_VM, OperationKind.RECOVER];
    const createdRunning = d.kind === OperationKind.CREATE_VM && d.params.start === "true";
    if (starts.includes(d.kind) || createdRunning) options.copies?.started(d.vmId, d.generation);
  }

  /** Whether an operation a previous run of the agent started had taken effect, from the hypervisor. */
  async function tookEffect(d: OperationDispatch): Promise<boolean> {
    const starts = d.kind === OperationKind.START_VM || d.kind === OperationKind.RECOVER;
    let state: string | undefined;
    let checked = false;
    try {
      state = (await driver.info(d.vmId, options.signal))?.state;
      checked = true;
    } catch (err) {
      logger.warn({ err, operation: d.operationId }, "cannot check an interrupted operation");
    }
    // A create took effect once the domain is defined, a delete once it is gone.
    if (d.kind === OperationKind.CREATE_VM)
      return state !== undefined && (d.params.start !== "true" || state === "running");
    if (d.kind === OperationKind.DELETE_VM) return checked && state === undefined;
    return state === (starts ? "running" : "stopped");
  }

  /**
   * Runs `d` in its VM's lane (one at a time per VM, in the order
   * dispatched). With `tookEffect` (an operation a previous run of the agent
   * started), that is asked first, in the lane: after the operations ahead
   * of it have run, not before.
   */
  function run(d: OperationDispatch, tookEffect?: () => Promise<boolean>): void {
    const id = d.operationId;
    const controller = new AbortController();
    const onStop = () => controller.abort();
    options.signal.addEventListener("abort", onStop, { once: true });
    inflight.set(id, controller);
    const progress: ActionProgress = (percent, phase) =>
      send({
        kind: {
          case: "progress",
          value: { operationId: id, dispatchCreatedAt: d.createdAt, percent, phase },
        },
      });
    progress(0, "started");
    const lane = isStorageOperation(d.kind) ? "" : d.vmId;
    lanes
      .run(lane, async () => {
        if (controller.signal.aborted) throw new RpcError("CANCELLED");
        if (tookEffect !== undefined && (await tookEffect())) {
          logger.info({ operation: id }, "interrupted operation had taken effect");
          return true;
        }
        if (tookEffect !== undefined)
          logger.info({ operation: id }, "interrupted operation had not acted; running it");
        await act(d, controller.signal, progress);
        return false;
      })
      .then(
        (replayed) => {
          if (!replayed) noteStarted(d);
          finish(d, result(d, OperationOutcome.SUCCEEDED, undefined, replayed));
        },
        (err: unknown) => {
          // Shutting down: the journal keeps it started; the next start settles it.
          if (options.signal.aborted) return;
          const e = toRpcError(err);
          const outcome =
            e.reason === "CANCELLED" ? OperationOutcome.CANCELLED : OperationOutcome.FAILED;
          finish(d, result(d, outcome, e));
        },
      );
    function finish(dd: OperationDispatch, r: OperationResult) {
      options.signal.removeEventListener("abort", onStop);
      inflight.delete(dd.operationId);
      journal.finish(r);
      logger.info(
        { operation: dd.operationId, vm: dd.vmId, outcome: OperationOutcome[r.outcome] },
        "operation finished",
      );
      const told = () => send({ kind: { case: "result", value: r } });
      if (options.beforeResult === undefined || isStorageOperation(dd.kind)) told();
      else void options.beforeResult().then(told, told);
    }
  }

  return {
    dispatch(d) {
      // A redelivery of an operation carries the dispatch as it was written. Another one
      // under a known id is a new operation: the control plane removes finished ones after
      // their retention, and a client's request_id then names a new operation by the same
      // id. Answered from the journal, it would report the old outcome with nothing done.
      const known = journal.get(d.operationId);
      const same = known !== undefined && sameDispatch(known.dispatch, d);
      if (same && known.result !== undefined) {
        send({ kind: { case: "result", value: { ...known.result, replayed: true } } });
        return;
      }
      if (same) return;
      if (inflight.has(d.operationId)) {
        // Another operation under this id still runs here (its record ended and was removed
        // meanwhile): this one is refused rather than answered with that one's outcome.
        send({
          kind: {
            case: "result",
            value: result(
              d,
              OperationOutcome.FAILED,
              new RpcError("CONFLICT", {
                message: `an earlier operation ${d.operationId} still runs on this node; use another request id`,
              }),
            ),
          },
        });
        return;
      }
      journal.begin(d);
      run(d);
    },
    cancel(operationId) {
      inflight.get(operationId)?.abort();
    },
    async recover() {
      for (const { dispatch: d } of journal.unfinished()) {
        if (d.kind === OperationKind.MIGRATE_OUT) {
          let here = true;
          try {
            here = (await driver.info(d.vmId, options.signal)) !== undefined;
          } catch (err) {
            logger.warn({ err, operation: d.operationId }, "cannot check an interrupted migration");
          }
          journal.finish(
            here
              ? result(d, OperationOutcome.FAILED, new RpcError("OPERATION_INTERRUPTED"))
              : result(d, OperationOutcome.SUCCEEDED, undefined, true),
          );
          continue;
        }
        // A storage operation cut short (a send, a snapshot) is not guessed at: the control plane runs it again.
        if (d.kind === OperationKind.REBOOT_VM || isStorageOperation(d.kind)) {
          journal.finish(result(d, OperationOutcome.FAILED, new RpcError("OPERATION_INTERRUPTED")));
          continue;
        }
        run(d, () => tookEffect(d));
      }
    },
    running: () => inflight.size,
  };
}

/**
 * Whether two dispatches are one operation delivered twice: written once,
 * with its time of writing. A journal entry from before dispatches carried
 * it is taken as the same.
 */
function sameDispatch(a: OperationDispatch, b: OperationDispatch): boolean {
  if (a.createdAt === undefined || b.createdAt === undefined) return true;
  return (
    a.kind === b.kind && a.vmId === b.vmId && equals(TimestampSchema, a.createdAt, b.createdAt)
  );
}
