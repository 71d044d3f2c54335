/**
 * The last step of the HA restore (ha-restore.ts): once the decision to
 * start a lost HA VM on its node again is written (counted, the mark
 * cleared), the start itself, bounded, under the generation it was decided
 * under; if it does not happen, the mark put back as it was (not counted
 * against the restart limit) so a later pass looks again, and the node not
 * asked again for a while unless it refused before anything ran.
 */
import { create } from "@bufbuild/protobuf";
import { type Clock, RpcError, timeoutSignal, toRpcError } from "../core/index.js";
import { type FailoverRecord, FailoverRecordSchema } from "../gen/debvisor/store/v1/records_pb.js";
import type { VmInfo } from "../gen/debvisor/v1/vm_pb.js";
import { type AuditIntents, actIdOf } from "./audit-intents.js";
import type { Executors } from "./executors.js";
import type { FailedTargets } from "./failed-targets.js";
import type { HaRestoreRecords } from "./ha-restore-records.js";

/** How long the controller waits for one HA VM's start before it goes on. */
export const START_TIMEOUT_MS = 15_000;

/** How long the write putting a mark back after a start that did not happen may take. */
const PUT_BACK_TIMEOUT_MS = 10_000;

/** The longest a decided start takes until its outcome is told (by default). */
export const START_BOUND_MS = START_TIMEOUT_MS + PUT_BACK_TIMEOUT_MS;

/** Reasons of a start refused before anything ran: tried again at the next pass, the node not avoided. */
const REFUSED_BEFORE_START: readonly string[] = [
  "FENCED",
  "STALE_GENERATION",
  "BACKEND_UNAVAILABLE",
];

/** A decision of the HA restore, as the failover controller tells it; a promise resolves once the trail took it. */
export type HaDecide = (d: {
  vmId: string;
  node: string;
  tenant: string;
  /** unknown: a start sent and not answered (a timeout, the controller's stop): it may still run. */
  action: "restarted" | "skipped" | "failed" | "unknown";
  detail: string;
  reason?: string;
  /** The start's id (its audit intent's), the audit record's request id. */
  requestId?: string;
}) => unknown;

/** One decided start: what was written, and what the start runs under. */
export interface DecidedStart {
  readonly vm: VmInfo;
  readonly nodeId: string;
  /** The record as read before the decision (put back, marked, if the start fails). */
  readonly rec: FailoverRecord;
  /** The record written by the decision (counted, mark cleared) and its revision. */
  readonly next: FailoverRecord;
  readonly written: number;
  /** The pass's time (a failed start is dated then, when the restore has no clock). */
  readonly now: number;
  /** The placement's generation the start was decided under. */
  readonly generation: bigint;
  readonly detail: string;
  /** The start's audit intent, written with the decision: deleted once its outcome is told. */
  readonly intent?: string;
}

/** Starts a VM whose start was decided and written; tells the outcome, puts the mark back on failure. */
export async function startDecided(
  deps: {
    readonly executors: Executors;
    readonly putBack: HaRestoreRecords["putBack"];
    readonly decide: HaDecide;
    readonly startTimeoutMs?: number;
    readonly failedTargets: FailedTargets;
    readonly clock?: Clock | undefined;
    readonly intents?: AuditIntents | undefined;
  },
  d: DecidedStart,
  signal: AbortSignal,
): Promise<void> {
  const { vm, nodeId, rec, next, written } = d;
  /**
   * Tells the outcome; its intent goes once told. A start that ran and whose
   * decision was not told, a repeat of the one before (a node failing each
   * start alike), is left for the next pass to tell: it is an act of its
   * own. One refused before anything ran is no act: its intent goes.
   */
  const tell = (decided: Parameters<HaDecide>[0], nothingRan = false) => {
    const outcome = d.intent === undefined ? decided : { ...decided, requestId: actIdOf(d.intent) };
    // A throw is a refusal too.
    const telling = (async () => deps.decide(outcome))();
    if (d.intent === undefined || deps.intents === undefined) telling.catch(() => {});
    else void deps.intents.told(d.intent, nothingRan ? telling.then(() => true) : telling, outcome);
  };
  let timedOut = false;
  try {
    const driver = deps.executors.forNode(nodeId);
    if (driver === undefined) throw new RpcError("BACKEND_UNAVAILABLE");
    // Bounded: a start its node takes and never answers must not hold up the HA VMs of
    // the nodes after it in the pass (given up, it is tried again on a later pass).
    const timeoutMs = deps.startTimeoutMs ?? START_TIMEOUT_MS;
    const bound = AbortSignal.timeout(timeoutMs);
    // Under the generation it was decided under: a start that lands after the VM was
    // placed elsewhere must not carry the new placement's token.
    const fence = { generation: d.generation };
    await driver.start(vm.id, AbortSignal.any([signal, bound]), fence).catch((err: unknown) => {
      if (bound.aborted && !signal.aborted) {
        timedOut = true;
        throw new RpcError("BACKEND_UNAVAILABLE", {
          message: `${nodeId} did not start ${vm.id} within ${Math.round(timeoutMs / 1000)} s; it may still start`,
        });
      }
      // A refusal is tried again at every pass for as long as the node answers it: told
      // by its reason, the same each time (a decision repeated is not told again). In the
      // node's words, a node that words each anew (a stolen node certificate) had every
      // pass logged and audited as a new decision, without end.
      const rpc = toRpcError(err);
      if (REFUSED_BEFORE_START.includes(rpc.reason))
        throw new RpcError(rpc.reason, {
          message: `not started on ${nodeId} (${rpc.reason}); tried again at a later pass`,
          cause: err,
        });
      throw err;
    });
    deps.failedTargets.restarted(vm.id);
    tell({
      vmId: vm.id,
      node: nodeId,
      tenant: vm.tenant,
      action: "restarted",
      detail: d.detail,
    });
  } catch (err) {
    // Not started: look again on a later pass, not counted against the limit (which
    // stops crash loops: starts that ran). A refusal before anything started (the node not
    // leased again yet, FENCED; its agent not connected; a newer placement holding the
    // disks, STALE_GENERATION: the next pass reads where, and starts nothing here unless
    // it is placed here again) is asked again at the next pass; counted, a slow node's
    // refusals used up the limit and its HA VMs stayed down (seen in the V6 test). Any
    // other failure keeps the node from being asked for a while (10 s, doubling up to
    // 5 min): counted, a storage outage failing every node for half a minute used up the
    // limit, and the VM stayed down for the limit's window after it ended
    // (test/failover-failed-restart.test.ts).
    const rpc = toRpcError(err);
    // Nor is a start the controller's stop cut short (its signal, not the node's answer, says so).
    if (!REFUSED_BEFORE_START.includes(rpc.reason ?? "") && !signal.aborted)
      // Dated when it failed: a start that took most of its bound was otherwise past the
      // first avoidance as it failed.
      deps.failedTargets.failed(vm.id, nodeId, deps.clock?.now() ?? d.now);
    // Told first: a put back that fails must not leave the outcome untold. Sent and not
    // answered (a timeout, the controller's stop), its outcome is not known: told as such,
    // each time (only failures and skips repeated go untold).
    // A daemon stopping ends the call at once (SHUTTING_DOWN) and leaves the agent's job going.
    const unanswered = timedOut || signal.aborted || rpc.reason === "SHUTTING_DOWN";
    tell(
      {
        vmId: vm.id,
        node: nodeId,
        tenant: vm.tenant,
        action: unanswered ? "unknown" : "failed",
        detail:
          signal.aborted || rpc.reason === "SHUTTING_DOWN"
            ? `start sent to ${nodeId}, cut short by the controller's stop; it may still run`
            : rpc.message,
        reason: rpc.reason,
      },
      !unanswered && REFUSED_BEFORE_START.includes(rpc.reason ?? ""),
    );
    // Not under the pass's signal: a start cut short by the controller's stop must still
    // put the mark back, or no leader ever starts the VM again (an adversarial review). Nor
    // under the election: this process may have been deposed while the start ran.
    await deps.putBack(
      create(FailoverRecordSchema, {
        ...next,
        restarts: rec.restarts,
        lastRestartMs: rec.lastRestartMs,
        lastDecision: rec.lastDecision,
        lostRunning: true,
      }),
      written,
      timeoutSignal(PUT_BACK_TIMEOUT_MS),
    );
  }
}
