import { create } from "@bufbuild/protobuf";
import { type Clock, type Logger, msFromTimestamp, toRpcError } from "../core/index.js";
import { FailoverRecordSchema } from "../gen/debvisor/store/v1/records_pb.js";
import { NodeReadiness } from "../gen/debvisor/v1/node_pb.js";
import { VmState } from "../gen/debvisor/v1/vm_pb.js";
import { encodeMessage, getMessage, type KvStore, type Lease } from "../store/index.js";
import { FAILOVER_PRINCIPAL, type FailoverDeps, failoverVm } from "./failover.js";
import { createHaRestore, FAILOVER_RECORDS, lostReportOf } from "./ha-restore.js";
import { createPlacementReconciler } from "./placement-from-truth.js";
import { reportedHolding, reportedReady } from "./stale-copies.js";
import { createStaleCopyRemover, type StaleCopyDecision } from "./stale-copy-removal.js";
import { readPlacement } from "./vm-placement.js";
import { askedToStop } from "./vm-records.js";

const LEADER_KEY = "controllers/failover";
const RECORDS = FAILOVER_RECORDS;

/** One decision of the controller, for logs and the audit trail. */
export interface FailoverDecision {
  readonly vmId: string;
  readonly node: string;
  /** adopted: its placement moved to the only node holding it (placement-from-truth.ts). */
  readonly action: "restarted" | "skipped" | "failed" | "adopted";
  readonly detail: string;
  readonly migrationId?: string;
  /** The VM's tenant, for its events. */
  readonly tenant?: string;
}

/** Options of {@link startFailoverController}. */
export interface FailoverControllerOptions extends FailoverDeps {
  readonly store: KvStore;
  readonly clock: Clock;
  readonly logger: Logger;
  /** This process's runner id: the leader key's value. */
  readonly runnerId: string;
  /** How often the controller looks (default 2000 ms). */
  readonly intervalMs?: number;
  /** Automatic restarts of one VM within the window before it is left alone (default 3). */
  readonly restartLimit?: number;
  readonly restartWindowMs?: number;
  /** TTL of the leadership lease (default 10 000 ms). */
  readonly leaseTtlMs?: number;
  readonly onDecision?: (decision: FailoverDecision) => void;
  /** Told of each stale copy of a VM the controller had removed (for the audit trail). */
  readonly onStaleCopy?: (decision: StaleCopyDecision) => void;
}

/** The automatic failover loop of the daemon. */
export interface FailoverController {
  /** Whether this process holds the leadership now. */
  isLeader(): boolean;
  /** One pass: take or keep the leadership, then restart what must be. */
  tick(): Promise<void>;
  close(): Promise<void>;
}

/**
 * Starts the controller. Only the holder of the `controllers/failover` key,
 * attached to a lease it keeps alive, acts; it is taken with a
 * create-if-absent transaction, so two daemons sharing one store never both
 * act. HA VMs of nodes NOT_READY for longer than the fence delay restart on
 * the best node with room; HA VMs a node stopped while cut off and came
 * back with start again there (ha-restore.ts); either at most
 * `restartLimit` times per window each.
 */
export function startFailoverController(options: FailoverControllerOptions): FailoverController {
  const { store, clock, logger, runnerId } = options;
  const intervalMs = options.intervalMs ?? 2000;
  const limit = options.restartLimit ?? 3;
  const windowMs = options.restartWindowMs ?? 3_600_000;
  const ttl = options.leaseTtlMs ?? 10_000;
  let lease: Lease | undefined;
  let leader = false;
  /** Revision of this process's election key: its decisions hold only while the key is unchanged. */
  let elected = 0;
  let busy = false;
  const stop = new AbortController();
  const lastDecision = new Map<string, string>();

  async function lead(): Promise<boolean> {
    try {
      if (lease !== undefined && leader) {
        await lease.keepAlive({ signal: stop.signal });
        return true;
      }
      lease ??= await store.grantLease(ttl, { signal: stop.signal });
      const txn = await store.txn(
        {
          compares: [{ key: LEADER_KEY, modRevision: 0 }],
          success: [
            {
              type: "put",
              key: LEADER_KEY,
              value: new TextEncoder().encode(runnerId),
              lease: lease.id,
            },
          ],
        },
        { signal: stop.signal },
      );
      if (txn.succeeded) {
        elected = txn.revision;
        logger.info({ runner: runnerId }, "failover controller: leading");
      }
      return txn.succeeded;
    } catch (err) {
      if (leader) logger.warn({ err }, "failover controller: leadership lost");
      lease = undefined;
      return false;
    }
  }

  function decide(d: FailoverDecision) {
    const key = `${d.action}:${d.detail}`;
    if (lastDecision.get(d.vmId) === key) return;
    lastDecision.set(d.vmId, key);
    logger.info({ ...d }, "failover decision");
    options.onDecision?.(d);
    // Restarts and failures are told by failoverVm itself, with the VM's tenant.
    if (d.action === "skipped")
      options.events?.emit({
        kind: "vm",
        id: d.vmId,
        tenant: d.tenant,
        type: "FailoverSkipped",
        message: `${d.node} is down; not restarting: ${d.detail}`,
        warning: true,
        source: "failover-controller",
      });
  }

  const ha = createHaRestore({
    store,
    executors: options.executors,
    elected: () => ({ key: LEADER_KEY, modRevision: elected }),
    leading: async () => {
      leader = await lead();
      return leader;
    },
    restartLimit: limit,
    restartWindowMs: windowMs,
    logger,
    decide,
  });

  const staleCopies = createStaleCopyRemover({
    store,
    clock,
    conflicts: (s) => options.inventory.conflicts(s),
    executors: options.executors,
    elected: () => ({ key: LEADER_KEY, modRevision: elected }),
    holds: reportedHolding(options.inventory),
    ready: reportedReady(options.inventory),
    // A removal can outlast the lease: keep it while one is under way. Only the lease
    // the election was won on, and never taking the election (a failure is the next
    // lead()'s to find): a renewal that took it mid-pass would move `elected` under the pass.
    renew: async () => {
      const held = lease;
      if (leader && held !== undefined) await held.keepAlive({ signal: stop.signal });
    },
    renewEveryMs: Math.max(100, Math.floor(ttl / 3)),
    decide: (d) => {
      logger.info({ ...d, generation: String(d.generation) }, "stale copy of a vm");
      options.onStaleCopy?.(d);
      options.events?.emit({
        kind: "vm",
        id: d.vmId,
        type: d.action === "removed" ? "StaleCopyRemoved" : "StaleCopyNotRemoved",
        message: d.detail,
        warning: d.action !== "removed",
        source: "failover-controller",
      });
    },
  });

  const placements = createPlacementReconciler({
    store,
    inventory: options.inventory,
    elected: () => ({ key: LEADER_KEY, modRevision: elected }),
    decide: (d) => {
      const detail = `placed on ${d.to} (generation ${d.generation}), the only node holding it: ${d.from} no longer does${d.marked ? "; to start again if HA" : ""}`;
      decide({ vmId: d.vmId, node: d.to, tenant: d.tenant, action: "adopted", detail });
      options.events?.emit({
        kind: "vm",
        id: d.vmId,
        tenant: d.tenant,
        type: "PlacementAdopted",
        message: detail,
        warning: true,
        source: "failover-controller",
      });
    },
  });

  async function pass(signal: AbortSignal) {
    const now = clock.now();
    // Conflicts first: a stale copy must never be what a restart below brings
    // back. A failure here is logged and must not hold up failovers.
    await staleCopies
      .pass(signal)
      .catch((err: unknown) => logger.warn({ err }, "stale copies not removed; next pass"));
    // Then placements naming a node that no longer holds the VM, moved to its only copy.
    await placements
      .pass(signal)
      .catch((err: unknown) => logger.warn({ err }, "placements not reconciled; next pass"));
    for (const node of await options.inventory.listNodes(signal)) {
      const nodeId = node.info?.id?.id ?? "";
      const ready = node.readiness === NodeReadiness.READY;
      const past = !ready && Number(node.notReadyForMs) > options.fenceDelayMs;
      const report = { nodeId, reportMs: msFromTimestamp(node.health?.timestamp) };
      const confirmLost = lostReportOf(options.inventory, nodeId, signal);
      for (const vm of node.health?.vms ?? []) {
        if (!vm.ha) continue;
        if (ready) {
          await ha.restore(report, vm, now, signal);
          continue;
        }
        if (vm.state === VmState.STOPPED) continue;
        await ha.noteLost(confirmLost, vm, signal);
        if (!past) continue;
        // Asked to stop (its stop waits on the dead node): not restarted elsewhere either.
        // Nor one the store holds no record of: deleted, the dead node's last report not yet
        // without it.
        const placed = await readPlacement(store, vm.id, signal);
        if (placed.rec === undefined) continue;
        if (askedToStop(placed.rec)) continue;
        const key = RECORDS + vm.id;
        const got = await getMessage(store, FailoverRecordSchema, key, { signal });
        const rec = got?.message ?? create(FailoverRecordSchema, { vmId: vm.id });
        const recent = now - Number(rec.lastRestartMs) < windowMs ? rec.restarts : 0;
        // Still the leader? A long pass must not outlive the lease that allows it.
        if (!(await lead())) {
          leader = false;
          return;
        }
        if (recent >= limit) {
          decide({
            vmId: vm.id,
            node: nodeId,
            tenant: vm.tenant,
            action: "skipped",
            detail: `restart limit reached (${limit} in ${Math.round(windowMs / 60_000)} min)`,
          });
          continue;
        }
        try {
          // Conditional on still holding the election (its key's revision, not a clock).
          const m = await failoverVm(options, vm.id, FAILOVER_PRINCIPAL, undefined, signal, {
            compares: [{ key: LEADER_KEY, modRevision: elected }],
          });
          const target = m.target?.nodeId?.id ?? "";
          const next = create(FailoverRecordSchema, {
            vmId: vm.id,
            restarts: recent + 1,
            lastRestartMs: BigInt(now),
            lastDecision: `restarted on ${target}`,
          });
          await store.put(key, encodeMessage(FailoverRecordSchema, next), { signal });
          decide({
            vmId: vm.id,
            node: nodeId,
            action: "restarted",
            detail: `restarted on ${target}`,
            migrationId: m.migrationId,
          });
        } catch (err) {
          const rpc = toRpcError(err);
          decide({ vmId: vm.id, node: nodeId, action: "failed", detail: rpc.message });
        }
      }
    }
    // Last: another removal for one stale copy still listed, after the failovers.
    await staleCopies
      .retry(signal)
      .catch((err: unknown) => logger.warn({ err }, "stale copy not removed again; next pass"));
  }

  async function tick() {
    if (busy || stop.signal.aborted) return;
    busy = true;
    try {
      leader = await lead();
      if (leader) await pass(stop.signal);
    } catch (err) {
      if (!stop.signal.aborted) logger.warn({ err }, "failover controller pass failed");
    } finally {
      busy = false;
    }
  }

  const timer = setInterval(() => void tick(), intervalMs);
  timer.unref();
  return {
    isLeader: () => leader,
    tick,
    async close() {
      clearInterval(timer);
      stop.abort();
      ha.close();
      if (leader) await lease?.revoke().catch(() => undefined);
      leader = false;
    },
  };
}
