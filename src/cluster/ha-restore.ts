import { create } from "@bufbuild/protobuf";
import { type Clock, type Logger, msFromTimestamp, nodeKey, sameNode } from "../core/index.js";
import { FailoverRecordSchema, VmRecordSchema } from "../gen/debvisor/store/v1/records_pb.js";
import { NodeReadiness } from "../gen/debvisor/v1/node_pb.js";
import { type VmInfo, VmState } from "../gen/debvisor/v1/vm_pb.js";
import { type Compare, getMessage, type KvStore, updateMessage } from "../store/index.js";
import type { AuditIntents } from "./audit-intents.js";
import type { Executors } from "./executors.js";
import { createFailedTargets, type FailedTargets } from "./failed-targets.js";
import { createHaRestoreRecords, FAILOVER_RECORDS } from "./ha-restore-records.js";
import { type HaDecide, startDecided } from "./ha-restore-start.js";
import type { Inventory } from "./inventory.js";
import { MIGRATION_LOCKS } from "./migration-record-keys.js";
import { askedToStop } from "./vm-records.js";

export { FAILOVER_RECORDS } from "./ha-restore-records.js";

/** What {@link createHaRestore} needs from the failover controller. */
export interface HaRestoreOptions {
  readonly store: KvStore;
  readonly executors: Executors;
  /** The controller's election key as it was when this process was elected. */
  readonly elected: () => Compare;
  /** Keeps (or retakes) the election before a decision: a pass of many starts outlasts a short lease. */
  readonly leading?: () => Promise<boolean>;
  readonly restartLimit: number;
  readonly restartWindowMs: number;
  /** How long one start is waited for before the pass goes on (default 15 s; not counted). */
  readonly startTimeoutMs?: number;
  /**
   * The nodes that failed to start or restart each VM, shared with the
   * failover pass: a node whose start failed is not asked again for a while
   * (default: a memory of this restore's own).
   */
  readonly failedTargets?: FailedTargets;
  readonly logger?: Logger;
  /** Dates a failed start when it failed (default: the pass's time, which `restore` is given). */
  readonly clock?: Clock;
  readonly decide: HaDecide;
  /** Where each start is kept as an intent until the trail took its outcome (given only with a trail). */
  readonly intents?: AuditIntents;
}

/**
 * A node's report as the controller's pass sees it: which node, and its
 * report's stamp (the node's own clock).
 */
export interface NodeReport {
  readonly nodeId: string;
  readonly reportMs: number;
}

/**
 * HA as desired state, for VMs whose node comes back: an HA VM reported
 * running when its node went NOT_READY is remembered (`lost_running`); if
 * the node is READY again with the VM stopped (it fenced itself and came
 * back before the fence delay let the VM restart elsewhere), the VM is
 * started there once, counted against the restart limit. Every write is
 * conditional on the controller's election and on the record as read, so
 * two controllers, or a deposed one, never start it twice.
 */
export interface HaRestore {
  /**
   * Notes an HA VM of a NOT_READY node that was running in its last report.
   * `confirm` is asked only when the VM is not marked yet: the node's report
   * as the store holds it while the node is still NOT_READY there, or
   * undefined if it is READY again. The view the pass looked at may pair a
   * lagging NOT_READY with the node's first report since its return; stamped
   * with that report, the mark could never see the VM survive.
   */
  noteLost(
    confirm: () => Promise<NodeReport | undefined>,
    vm: VmInfo,
    signal: AbortSignal,
  ): Promise<void>;
  /**
   * An HA VM of a READY node: starts it again if it was lost running and is
   * reported stopped. It survived (the mark is cleared) only if it runs in a
   * report made after the loss was noted: the node is READY again before its
   * new report is stored, and running in the old one, the VM was taken for a
   * survivor and never started again (seen in the V6 test). A stopped VM
   * needs no newer report: a fenced node starts none by itself, so stopped
   * then is stopped now, and waiting for a newer one would hold HA restarts
   * up to the report refresh (cluster.reportRefreshMs) where repeated
   * reports are not stored.
   */
  restore(report: NodeReport, vm: VmInfo, now: number, signal: AbortSignal): Promise<void>;
  close(): void;
}

/**
 * A node's agent says it hard-stopped `vmId` on its own clock (self-fenced,
 * its control plane away): marks the VM lost running, so the controller's
 * leader starts it again (once, under its restart limit) when its node is
 * READY with it stopped. Marked only while the VM is placed on that node
 * (a copy elsewhere, or a node speaking for another's VM, marks nothing).
 * This is what brings HA VMs back after a control-plane outage, when no
 * controller ran to see their nodes go NOT_READY. Resolves with whether the
 * VM is marked now.
 *
 * `reportMs` is the stamp of the node's report stored when the event is
 * handled (the node's stream is read in order, so every report it sent
 * before the event is in): those reports predate the fence, and only a
 * later one says whether the VM runs.
 */
export async function noteSelfFenced(
  store: KvStore,
  nodeId: string,
  vmId: string,
  reportMs: number,
  signal?: AbortSignal,
): Promise<boolean> {
  const placed = await getMessage(store, VmRecordSchema, `vms/${vmId}`, { signal });
  // Whatever the case either names the node in (a reported VM's record names it lowered).
  if (placed === undefined || !sameNode(placed.message.nodeId, nodeId)) return false;
  // A VM someone asked to stop stays stopped, whatever a node says (a stolen node
  // certificate must not restart what a tenant stopped).
  if (askedToStop(placed.message)) return false;
  await updateMessage(
    store,
    FailoverRecordSchema,
    FAILOVER_RECORDS + vmId,
    (rec) => {
      const stamp = lostStamp(nodeId, reportMs);
      if (
        rec?.lostRunning === true &&
        sameNode(rec.lostReportNode, nodeId) &&
        rec.lostReportMs >= stamp.lostReportMs
      )
        return undefined;
      return create(FailoverRecordSchema, { ...(rec ?? { vmId }), lostRunning: true, ...stamp });
    },
    { signal },
  );
  return true;
}

/**
 * The `confirm` of {@link HaRestore.noteLost} for `nodeId`: its report as
 * the store holds it while it is NOT_READY there (undefined once READY
 * again), read at most once.
 */
export function lostReportOf(
  inventory: Pick<Inventory, "readNode">,
  nodeId: string,
  signal: AbortSignal,
): () => Promise<NodeReport | undefined> {
  let read: Promise<NodeReport | undefined> | undefined;
  return () => {
    read ??= inventory
      .readNode(nodeId, signal)
      .then((got) =>
        got === undefined || got.summary.readiness === NodeReadiness.READY
          ? undefined
          : { nodeId, reportMs: msFromTimestamp(got.summary.health?.timestamp) },
      );
    return read;
  };
}

/** The fields of a failover record that say which of a node's reports predate its loss. */
function lostStamp(nodeId: string, reportMs: number) {
  return { lostReportNode: nodeId, lostReportMs: BigInt(reportMs) };
}

/** Creates the {@link HaRestore} of the failover controller. */
export function createHaRestore(options: HaRestoreOptions): HaRestore {
  const { store } = options;
  const records = createHaRestoreRecords({
    store,
    elected: options.elected,
    logger: options.logger,
  });
  const { marked, read, write, putBack } = records;
  const { executors, decide, startTimeoutMs, clock, intents } = options;
  const failedTargets = options.failedTargets ?? createFailedTargets(nodeKey);
  const starts = { executors, putBack, decide, startTimeoutMs, failedTargets, clock, intents };
  return {
    async noteLost(confirm, vm, signal) {
      if (vm.state === VmState.STOPPED || (await marked(vm.id))) return;
      const { rec, rev } = await read(vm.id, signal);
      if (!rec.lostRunning) {
        const report = await confirm();
        if (report === undefined) return;
        const stamp = lostStamp(report.nodeId, report.reportMs);
        await write(
          create(FailoverRecordSchema, { ...rec, lostRunning: true, ...stamp }),
          rev,
          signal,
        );
      }
    },
    async restore(report, vm, now, signal) {
      const { nodeId } = report;
      if (!(await marked(vm.id))) return;
      const { rec, rev } = await read(vm.id, signal);
      if (!rec.lostRunning) return;
      if (vm.state === VmState.RUNNING || vm.state === VmState.MIGRATING) {
        // Running in a report made before the loss was noted says nothing: wait for the next.
        if (sameNode(rec.lostReportNode, nodeId) && BigInt(report.reportMs) <= rec.lostReportMs)
          return;
        // It survived (a control-plane outage, a short cut): nothing to do.
        await write(create(FailoverRecordSchema, { ...rec, lostRunning: false }), rev, signal);
        return;
      }
      if (vm.state !== VmState.STOPPED && vm.state !== VmState.CRASHED) return;
      // Someone asked it to stop since it was lost (an acknowledged stop is never undone),
      // and it is still placed here: decided on the VM's record as read, in the txn below.
      const placed = await getMessage(store, VmRecordSchema, `vms/${vm.id}`, { signal });
      if (placed !== undefined && !sameNode(placed.message.nodeId, nodeId)) return;
      if (askedToStop(placed?.message)) {
        await write(create(FailoverRecordSchema, { ...rec, lostRunning: false }), rev, signal);
        return;
      }
      const unchanged: Compare = { key: `vms/${vm.id}`, modRevision: placed?.modRevision ?? 0 };
      const recent = now - Number(rec.lastRestartMs) < options.restartWindowMs ? rec.restarts : 0;
      if (recent >= options.restartLimit) {
        options.decide({
          vmId: vm.id,
          node: nodeId,
          tenant: vm.tenant,
          action: "skipped",
          detail: `restart limit reached (${options.restartLimit} in ${Math.round(options.restartWindowMs / 60_000)} min)`,
        });
        return;
      }
      // Nothing is started while a migration holds the VM (the txn below compares it), and
      // the wait is told as the failover pass tells it: untold, an HA VM stayed down for as
      // long as the migration ran (a stuck job: up to 30 min) with nothing saying why.
      const lock = await store.get(MIGRATION_LOCKS + vm.id, { signal });
      if (lock !== undefined) {
        options.decide({
          vmId: vm.id,
          node: nodeId,
          tenant: vm.tenant,
          action: "failed",
          detail: `not started on ${nodeId} (MIGRATION_IN_PROGRESS): migration ${new TextDecoder().decode(lock.value)} holds it; tried again once it ends`,
          reason: "MIGRATION_IN_PROGRESS",
        });
        return;
      }
      // Its start failed here a short while ago (told then): asked again once the node's time
      // is up (failed-targets.ts), not at every pass, and never given up on for it.
      if (failedTargets.avoid(vm.id, now)?.has(nodeKey(nodeId)) === true) return;
      if (options.leading !== undefined && !(await options.leading())) return;
      const detail = `started again on ${nodeId}, which had stopped it while cut off`;
      const next = create(FailoverRecordSchema, {
        vmId: vm.id,
        restarts: recent + 1,
        lastRestartMs: BigInt(now),
        lastDecision: detail,
        lostRunning: false,
        // Kept for the mark put back if the start fails: without it, a report from before
        // the loss would again count as "it survived".
        lostReportNode: rec.lostReportNode,
        lostReportMs: rec.lostReportMs,
      });
      // Counted and cleared first: whatever happens next, this decision is taken once. Not
      // while a migration holds the VM (an operator moving it meanwhile): started here, it
      // would run where the migration takes it from; the mark stays for a later pass.
      const unlocked: Compare = { key: MIGRATION_LOCKS + vm.id, modRevision: 0 };
      // With the start's intent: audited at least once, even if this process dies next.
      const intent = intents?.intend({
        kind: "haStart",
        vmId: vm.id,
        node: nodeId,
        tenant: vm.tenant,
        detail,
      });
      const ops = intent === undefined ? [] : [intent.op];
      const written = await records.decide(next, rev, signal, [unchanged, unlocked], ops);
      if (written === 0) return;
      const generation = placed?.message.generation ?? 0n;
      await startDecided(
        starts,
        { vm, nodeId, rec, next, written, now, generation, detail, intent: intent?.key },
        signal,
      );
    },
    close() {
      records.close();
    },
  };
}
