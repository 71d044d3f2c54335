import { type Logger, RpcError, toRpcError } from "../core/index.js";
import { canRecover, type RecoveringDriver } from "../drivers/index.js";
import type { Migration } from "../gen/debvisor/v1/migration_pb.js";
import { NodeReadiness } from "../gen/debvisor/v1/node_pb.js";
import { type VmInfo, VmState } from "../gen/debvisor/v1/vm_pb.js";
import { type Compare, type KvStore, LOST, retryWhileLost } from "../store/index.js";
import type { EventSink } from "./event-recorder.js";
import type { Executors } from "./executors.js";
import type { Inventory } from "./inventory.js";
import type { MigrationEngine } from "./migration-engine.js";
import { jobFinished, jobRunning, type MigrationJob } from "./migration-job.js";
import type { MigrationJournal } from "./migration-journal.js";
import { movePlacement } from "./migration-move.js";
import { migrationOf } from "./migration-wire.js";
import { visibleTo } from "./tenancy.js";
import { placementChange, readPlacement } from "./vm-placement.js";
import { askedToStop } from "./vm-records.js";

/** What a failover needs. */
export interface FailoverDeps {
  readonly engine: MigrationEngine;
  readonly inventory: Inventory;
  readonly executors: Executors;
  /** Where the failover's record is written, as a migration's (kind FAILOVER). */
  readonly journal: MigrationJournal;
  readonly store: KvStore;
  readonly logger: Logger;
  /**
   * How long a node must have been NOT_READY before its VMs may start
   * elsewhere: longer than the node's own watchdog takes to stop them.
   */
  readonly fenceDelayMs: number;
  /** Where refusals, decisions and restarts are told (default: nowhere). */
  readonly events?: EventSink;
  /** How long the target's restart may take before the failover fails (default {@link RECOVER_TIMEOUT_MS}). */
  readonly recoverTimeoutMs?: number;
}

/**
 * How long a failover waits for its target to restart the VM. A target that
 * stays ready and never answers (a stolen node certificate, a hung agent)
 * held the failover, its pass and so every later pass for good: no other
 * HA VM was restarted. Generous: the target's agent may first wait for a
 * confirmed lease, and then define and start the VM.
 */
export const RECOVER_TIMEOUT_MS = 120_000;

/** Options of one failover. */
export interface FailoverOptions {
  /**
   * Conditions the failover's record is written under, besides the node's:
   * the controller's election key, so a leader that lost its election (a
   * stalled process) decides nothing.
   */
  readonly compares?: readonly Compare[];
  /** Nodes (keys) not to restart it on, with the reason (the controller's: a recent failed restart). */
  readonly avoid?: ReadonlyMap<string, string>;
  /** Told of the target whose restart failed after the failover began (not one `signal` cut short). */
  readonly onRecoverFailed?: (target: string) => void;
  /**
   * The controller's: the record is marked untold from its begin, and the
   * caller tells the restart's end and clears the mark (`engine.told`); a
   * process dying first leaves it to a reconcile pass (migration-settle-tell.ts).
   */
  readonly untold?: boolean;
}

/**
 * Restarts a VM of a failed node on a healthy one. Refused with
 * FAILOVER_NOT_ALLOWED while the node is ready or has not been NOT_READY
 * for longer than the fence delay, because until then it may still be
 * running the VM. The VM's lock makes it one failover (or migration) at a
 * time; the record is kept like a migration's (kind FAILOVER). The record,
 * the lock and the VM's new placement with its generation bumped (the
 * fencing token of the restart) are written in one txn, only while the
 * node is still down as read and `options.compares` hold.
 */
export async function failoverVm(
  deps: FailoverDeps,
  vmId: string,
  requestedBy: string,
  tenant: string | undefined,
  signal: AbortSignal,
  options: FailoverOptions = {},
): Promise<Migration> {
  const vm = await deps.inventory.findVm(vmId, signal);
  if (vm === undefined || !visibleTo(vm, tenant)) throw new RpcError("VM_NOT_FOUND");
  const tell = (type: string, message: string, reason?: string, warning = false) =>
    deps.events?.emit({
      kind: "vm",
      id: vm.id,
      tenant: vm.tenant,
      type,
      reason,
      message,
      warning,
      source: requestedBy === FAILOVER_PRINCIPAL ? "failover-controller" : "failover",
    });
  try {
    const m = await failoverOnce(deps, vm, requestedBy, tenant, signal, options, (message) =>
      tell("FailoverDecided", message),
    );
    tell("Restarted", `${m.message}; failover ${m.migrationId}`);
    return m;
  } catch (err) {
    const rpc = toRpcError(err);
    if (REFUSALS.has(rpc.reason)) tell("FailoverRefused", rpc.clientMessage, rpc.reason, true);
    else tell("FailoverFailed", rpc.clientMessage, rpc.reason, true);
    throw err;
  }
}

/** The principal the failover controller acts as, in migration records and the audit trail. */
export const FAILOVER_PRINCIPAL = "system:failover-controller";
/** Reasons that mean "not now, and why", as opposed to a restart that went wrong. */
const REFUSALS = new Set([
  "FAILOVER_NOT_ALLOWED",
  "NO_TARGET",
  "MIGRATION_IN_PROGRESS",
  "NODE_NOT_FOUND",
]);

/** Plan-and-begin rounds of one failover before it gives up (the controller's restarts race for a target's room). */
const BEGIN_ATTEMPTS = 8;

async function failoverOnce(
  deps: FailoverDeps,
  vm: VmInfo,
  requestedBy: string,
  tenant: string | undefined,
  signal: AbortSignal,
  options: FailoverOptions,
  decided: (message: string) => void,
): Promise<Migration> {
  const { inventory, journal, logger, fenceDelayMs } = deps;
  // Looked at again from the store when another write won the race for the node's record or
  // the target's reservations (the controller's concurrent restarts, another VM of the same
  // node): every round re-reads and re-checks all, and its transaction compares it.
  const begun = await retryWhileLost(
    BEGIN_ATTEMPTS,
    async () => (await beginFailover({ deps, vm, requestedBy, tenant, signal, options })) ?? LOST,
    // A race lost every round, not another job holding the VM (the plan says that one):
    // ABORTED, try again, rather than a refusal.
    () => {
      throw new RpcError("CONFLICT", {
        message: `${vm.nodeId?.id ?? ""} or the vm changed while failing over; look again`,
      });
    },
  );
  const { plan, placed, driver, source, down } = begun;
  let { job } = begun;
  decided(
    `${source} has been not ready for ${Math.round(down / 1000)} s (fence delay ${Math.round(fenceDelayMs / 1000)} s): restarting on ${plan.target} (${plan.targetReason})`,
  );
  try {
    try {
      job = jobRunning(job, `restarting on ${plan.target}`);
      await journal.publish(job, { force: true });
      logger.info(
        { vm: vm.id, target: plan.target, generation: placed.generation },
        "failing over",
      );
      const timeoutMs = deps.recoverTimeoutMs ?? RECOVER_TIMEOUT_MS;
      const bound = AbortSignal.timeout(timeoutMs);
      // Cut short, the target is told to cancel; should it start the VM all the same, a
      // restart elsewhere holds a newer generation (its disks fenced) and its copy is stale.
      await driver
        .recover(vm.id, source, AbortSignal.any([signal, bound]), { generation: placed.generation })
        .catch((err: unknown) => {
          if (bound.aborted && !signal.aborted)
            throw new RpcError("BACKEND_TIMEOUT", {
              message: `${plan.target} did not restart ${vm.id} within ${Math.round(timeoutMs / 1000)} s`,
            });
          throw err;
        });
      job = jobFinished(
        job,
        { state: "succeeded", phase: "completed" },
        `restarted on ${plan.target} (${plan.targetReason})`,
      );
    } catch (err) {
      const rpc = toRpcError(err);
      job = jobFinished(
        job,
        { state: "failed", phase: "rolled-back" },
        `${rpc.message}; the vm was not restarted`,
      );
      logger.warn({ err, vm: vm.id }, "failover failed");
      // Cut short by the caller's own signal, it is not the target's failure; by its reason it
      // cannot be told (a node may answer CANCELLED to every restart, and be picked each pass).
      if (!signal.aborted) options.onRecoverFailed?.(plan.target);
      await journal.publish(job, { final: true });
      throw rpc;
    }
    // The vm runs there now; the view follows, best effort (heartbeats correct it).
    await movePlacement(
      inventory,
      journal,
      job,
      { ...vm, state: VmState.RUNNING },
      logger,
      AbortSignal.timeout(30_000),
    );
    return migrationOf(await publishRestarted(journal, job, logger));
  } finally {
    journal.disown(job.id);
  }
}

/**
 * The restarted VM's record, finished. A write that fails here (the store
 * restarting) does not undo the restart: the VM runs on the target under its
 * new generation, so the failover answers as restarted (told, counted) and the
 * record, still running and disowned, is settled by a reconcile pass from what
 * the nodes report.
 */
async function publishRestarted(
  journal: MigrationJournal,
  job: MigrationJob,
  logger: Logger,
): Promise<MigrationJob> {
  try {
    return await journal.publish(job, { final: true });
  } catch (err) {
    logger.warn(
      { err, vm: job.vmId, migration: job.id },
      "vm restarted; its record not finished, left to a reconcile pass",
    );
    return job;
  }
}

/** A failover whose record, lock and new placement are written: what its restart needs. */
interface Begun {
  readonly job: MigrationJob;
  readonly plan: { readonly target: string; readonly targetReason: string };
  readonly placed: { readonly generation: bigint };
  readonly driver: RecoveringDriver;
  readonly source: string;
  /** How long the source had been NOT_READY, as read. */
  readonly down: number;
}

/**
 * One round of deciding a failover: the source read from the store and found
 * down past the fence delay, a target planned, and the record, the lock and
 * the VM's new placement (its generation bumped) written in one txn under
 * what was read. Undefined when that txn lost (something it compares changed).
 */
async function beginFailover(call: {
  readonly deps: FailoverDeps;
  readonly vm: VmInfo;
  readonly requestedBy: string;
  readonly tenant: string | undefined;
  readonly signal: AbortSignal;
  readonly options: FailoverOptions;
}): Promise<Begun | undefined> {
  const { deps, vm, requestedBy, tenant, signal, options } = call;
  const { engine, inventory, executors, journal, fenceDelayMs } = deps;
  const vmId = vm.id;
  const source = vm.nodeId?.id ?? "";
  // From the store, not a cache: "down long enough" must not rest on a stale
  // view, and the record is written below only if this node record is unchanged.
  const node = await inventory.readNode(source, signal);
  if (node === undefined) throw new RpcError("NODE_NOT_FOUND");
  const down = Number(node.summary.notReadyForMs);
  if (node.summary.readiness === NodeReadiness.READY || !node.liveness.pastFenceDelay) {
    throw new RpcError("FAILOVER_NOT_ALLOWED", {
      message:
        node.summary.readiness === NodeReadiness.READY
          ? `failover not allowed: ${source} is ready; migrate the vm instead`
          : `failover not allowed: ${source} has been not ready for ${Math.round(down / 1000)} s; the fence delay is ${Math.round(fenceDelayMs / 1000)} s`,
    });
  }
  // A node cut off stops its HA VMs itself (self-fencing), not the others: one without HA
  // may still run there until the operator says the node is off.
  if (!vm.ha && !node.summary.outOfService)
    throw new RpcError("FAILOVER_NOT_ALLOWED", {
      message: `failover not allowed: ${vmId} has no HA, so ${source} does not stop it when cut off and may still run it; once ${source} is off, say so: hvctl node cordon ${source} --out-of-service`,
    });
  const plan = await engine.plan({ vmId, tenant, allowDowntime: true, target: undefined }, signal, {
    failover: true,
    avoid: options.avoid,
  });
  if (!plan.allowed) {
    const failed = plan.checks.find((c) => !c.passed);
    if (failed?.name === "no_migration_in_flight") throw new RpcError("MIGRATION_IN_PROGRESS");
    throw new RpcError("NO_TARGET", {
      message: `no node can take this vm now: ${failed?.reason ?? "a check failed"}`,
    });
  }
  const driver = executors.forNode(plan.target);
  if (driver === undefined || !canRecover(driver)) {
    throw new RpcError("NO_TARGET", {
      message: `no node can take this vm now: ${driver?.kind ?? "no driver"} on ${plan.target} cannot restart vms of failed nodes`,
    });
  }
  const job = journal.newJob({
    vm,
    source,
    target: plan.target,
    live: false,
    allowDowntime: true,
    kind: "failover",
    requestedBy,
  });
  const marked = options.untold === true ? { ...job, untold: "failover" as const } : job;
  const reserved = plan.revisions.get(plan.target) ?? 0;
  const read = await readPlacement(deps.store, vm.id, signal);
  // No record: the VM was deleted (its node's last report still lists it). A failover
  // would bring it back to life, or leave a record placing it where nothing runs it.
  if (read.rec === undefined) throw new RpcError("VM_NOT_FOUND");
  // The controller restarts what should run: a VM asked to stop stays stopped (read in the
  // record the transaction below compares, so a stop written meanwhile fails it).
  if (requestedBy === FAILOVER_PRINCIPAL && askedToStop(read.rec))
    throw new RpcError("FAILOVER_NOT_ALLOWED", {
      message: `failover not allowed: ${vmId} was asked to stop`,
    });
  const placed = placementChange(vm.id, read, plan.target);
  // With the node's compares: a heartbeat since it was read means no failover.
  const compares = [
    node.unchanged,
    ...node.liveness.compares,
    placed.compare,
    ...(options.compares ?? []),
  ];
  if (!(await journal.begin(marked, reserved, signal, compares, [placed.op]))) return undefined;
  return { job: marked, plan, placed, driver, source, down };
}
