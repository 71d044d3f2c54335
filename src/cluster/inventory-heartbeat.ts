/**
 * The inventory's heartbeat: every agent heartbeat and unary Heartbeat call
 * goes through it. It renews the node's liveness, refuses reports from the
 * future, ignores reordered ones, stores the report with the placements it
 * claims, and skips writing one that repeats the stored report.
 */
import { create } from "@bufbuild/protobuf";
import {
  type Clock,
  type Logger,
  msFromTimestamp,
  nodeKey,
  RpcError,
  sameFieldsExcept,
} from "../core/index.js";
import { type NodeRecord, NodeRecordSchema } from "../gen/debvisor/store/v1/records_pb.js";
import type { VmInfo } from "../gen/debvisor/v1/vm_pb.js";
import { getMessage, type KvStore } from "../store/index.js";
import type { EventSink } from "./event-recorder.js";
import { createFirstClaims } from "./first-claims.js";
import type { Inventory } from "./inventory.js";
import { MIGRATION_LOCKS } from "./migration-record-keys.js";
import type { NodeLiveness } from "./node-liveness.js";
import { NODE_PREFIX, type NodeRecords } from "./node-records.js";
import {
  type Placement,
  placeReported,
  takeoverCandidates,
  tellPlacement,
} from "./report-placement.js";
import type { StaleCopies } from "./stale-copies.js";
import { applyPins } from "./vm-pins.js";
import { generationFloor } from "./vm-placement.js";
import { type VmRecords, withTenants } from "./vm-records.js";

/** What {@link createInventoryHeartbeat} works with. */
export interface InventoryHeartbeatDeps {
  readonly store: KvStore;
  readonly clock: Clock;
  /** The clock liveness is measured on: when a report arrived. */
  readonly liveClock: Clock;
  readonly liveness: NodeLiveness;
  readonly vmRecords: VmRecords;
  readonly nodeRecords: NodeRecords;
  readonly staleCopies: StaleCopies;
  /** Nodes back after a lapse whose first report is not stored yet (see inventory.ts). */
  readonly backFromLapse: Set<string>;
  /** How far a report's timestamp may be ahead of the clock. */
  readonly skewMs: number;
  /** How long a repeated report waits to be written (liveness from leases only). */
  readonly refreshMs: number;
  readonly events?: EventSink;
  readonly logger?: Logger;
}

/** Creates the inventory's {@link Inventory.heartbeat}. */
export function createInventoryHeartbeat(
  deps: InventoryHeartbeatDeps,
): Pick<Inventory, "heartbeat"> {
  const { store, clock, liveClock, liveness, vmRecords, nodeRecords, staleCopies } = deps;
  const { backFromLapse, refreshMs } = deps;
  const skew = deps.skewMs;
  const firstClaims = createFirstClaims(clock, deps.logger);
  return {
    async heartbeat(health, signal, reporter) {
      const nodeId = nodeKey(health.nodeId?.id ?? "");
      const known =
        (await nodeRecords.cachedVersion(nodeId)) ??
        (await getMessage(store, NodeRecordSchema, NODE_PREFIX + nodeId, { signal }));
      if (known === undefined) throw new RpcError("NODE_NOT_FOUND");
      checkReporter(known.message, nodeId, reporter);
      // The node was heard from: that is liveness, whatever the report's stamp says.
      if (await liveness.renew(nodeId, signal)) backFromLapse.add(nodeId);
      const skewMs = BigInt(msFromTimestamp(health.timestamp) - clock.now());
      // A report from the future would make every genuine one look older: its
      // content is refused, not stored; how far ahead it was is kept, to be shown.
      if (skewMs > BigInt(skew)) {
        await nodeRecords.update(nodeId, signal, (current) => {
          if (current === undefined) throw new RpcError("NODE_NOT_FOUND");
          // Checked again on the record written, as a report's store is (the cached one may be old).
          checkReporter(current, nodeId, reporter);
          const next = create(NodeRecordSchema, {
            ...current,
            reportSkewMs: skewMs,
            receivedAtMs: BigInt(liveClock.now()),
          });
          return { next, result: undefined };
        });
        throw new RpcError("REPORT_FROM_FUTURE");
      }
      const facts = await vmRecords.all();
      const seen = (await nodeRecords.follow()).values();
      /** A node's record as last known here (its report decides whether it still holds a VM). */
      const nodes = (id: string) => seen.get(id)?.rec;
      // A VM no record holds is claimed under a first generation: read the revision for it.
      const revision = health.vms.some((vm) => facts.get(vm.id) === undefined)
        ? await generationFloor(store, signal)
        : 0;
      // Which VMs it would take from their node are held by a migration or failover: read
      // from the store (not a cache) before the report is placed; each claim compares it too.
      // Claimed on the first try only: a try that failed may have met a lock taken since
      // the read, and retried on the same read it failed every time (CONFLICT; seen by review).
      const pinned = known.message.pins.filter((p) => Number(p.untilMs) > clock.now());
      let moving = await movingNow(
        store,
        takeoverCandidates(nodeId, applyPins(health.vms, pinned), facts, nodes),
        signal,
      );
      const taken = firstClaims.take(nodeId, applyPins(health.vms, pinned), facts);
      let placement: Placement | undefined;
      let stored = false;
      // Placements its node confirms (from the report itself, not from pins) are written on
      // the first try only: a try that failed may have met a VM record newer than this
      // process had seen, and the report must not fail for them (the next one writes them).
      let confirmFrom: readonly VmInfo[] | undefined = health.vms;
      const recorded = await nodeRecords.update(nodeId, signal, (current) => {
        placement = undefined;
        stored = false;
        if (current === undefined) throw new RpcError("NODE_NOT_FOUND");
        checkReporter(current, nodeId, reporter);
        const now = clock.now();
        const heardAt = BigInt(liveClock.now());
        if (
          current.health !== undefined &&
          msFromTimestamp(health.timestamp) < msFromTimestamp(current.health.timestamp)
        ) {
          // Older than the last report (reordered, or the node's clock went
          // back): its content is ignored, but the node is alive: it counts
          // for liveness, or a node with a stepped-back clock would go
          // NOT_READY while running its VMs, and be failed over.
          return {
            next: create(NodeRecordSchema, {
              ...current,
              receivedAtMs: heardAt,
              reportSkewMs: skewMs,
            }),
            result: false,
          };
        }
        const pins = current.pins.filter((p) => Number(p.untilMs) > now);
        const placed = placeReported(nodeId, applyPins(health.vms, pins), facts, nodes, {
          revision,
          confirmFrom,
          moving,
          newAllowed: taken.allowed,
        });
        confirmFrom = undefined;
        moving = new Map();
        placement = placed;
        const vms = withTenants(placed.vms, facts);
        const next = create(NodeRecordSchema, {
          ...current,
          health: vms === health.vms ? health : { ...health, vms },
          receivedAtMs: heardAt,
          reportSkewMs: skewMs,
          pins,
        });
        // The lease was renewed above: a report that repeats the stored one waits for the
        // refresh. Not the first one after a lapse: the stored report predates the node's
        // absence, and HA decides on a report made since (ha-restore.ts).
        if (
          !backFromLapse.has(nodeId) &&
          placed.claims.length === 0 &&
          liveness.source === "lease" &&
          heardAt - current.receivedAtMs < BigInt(refreshMs) &&
          repeatsStored(current, next)
        )
          return { next: undefined, result: true };
        stored = true;
        return { next, result: true, vms: placed.claims };
      });
      if (stored) backFromLapse.delete(nodeId);
      const written = stored ? placement : undefined;
      firstClaims.settle(
        nodeId,
        taken,
        // The VMs no record held that it placed (the facts may show their records by now).
        new Set(written?.placed.filter((p) => taken.allowed.has(p.vmId)).map((p) => p.vmId)),
      );
      if (placement !== undefined && deps.events !== undefined)
        tellPlacement(deps.events, nodeId, placement, facts);
      if (recorded && placement !== undefined)
        await staleCopies.note(nodeId, placement.stale, signal).catch((err: unknown) => {
          deps.logger?.warn(
            { err, node: nodeId },
            "stale copies not recorded; the next report will",
          );
        });
      return recorded;
    },
  };
}

/** Whether a migration or failover holds each of `vmIds` now, read from the store. */
async function movingNow(
  store: KvStore,
  vmIds: readonly string[],
  signal: AbortSignal | undefined,
): Promise<Map<string, boolean>> {
  const held = await Promise.all(
    vmIds.map(async (id) => (await store.get(MIGRATION_LOCKS + id, { signal })) !== undefined),
  );
  return new Map(vmIds.map((id, i) => [id, held[i] === true]));
}

/**
 * Only the node itself or the identity that registered it may report for it
 * (PERMISSION_DENIED); `reporter` undefined: the caller is trusted (the
 * agent hub has authorized the stream already).
 */
function checkReporter(rec: NodeRecord, nodeId: string, reporter: string | undefined): void {
  if (reporter !== undefined && nodeKey(reporter) !== nodeId && reporter !== rec.owner)
    throw new RpcError("PERMISSION_DENIED", {
      cause: new Error(
        `${reporter} reports for node ${nodeId}, which it neither is nor registered`,
      ),
    });
}

/** What a heartbeat always changes: of the record (its health is compared apart), of its health. */
const RECORD_FIGURES: ReadonlySet<string> = new Set(["receivedAtMs", "reportSkewMs", "health"]);
const HEALTH_FIGURES: ReadonlySet<string> = new Set([
  "timestamp",
  "cpuLoad",
  "memUsedPct",
  "diskUsedPct",
  "netRttMs",
]);

/**
 * Whether `next` differs from the stored `current` only in what a heartbeat
 * always changes: its time, when it arrived, the clock skew and the load
 * figures (CPU, memory, disk, round trip). Its VMs, their states and
 * placements, the overall status, pins and everything else must be equal:
 * any change there is written at once. (Structural comparison: it never
 * calls a changed report a repeat; reflective `equals` cost five times as
 * much, the largest part of a heartbeat after decoding it.)
 */
function repeatsStored(current: NodeRecord, next: NodeRecord): boolean {
  return (
    sameFieldsExcept(current, next, RECORD_FIGURES) &&
    sameFieldsExcept(current.health, next.health, HEALTH_FIGURES)
  );
}
