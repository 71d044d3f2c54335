import { create } from "@bufbuild/protobuf";
import {
  type Clock,
  type Logger,
  msFromTimestamp,
  nodeKey,
  RpcError,
  sameFieldsExcept,
} from "../core/index.js";
import {
  type NodeRecord,
  NodeRecordSchema,
  VmPinSchema,
  type VmRecord,
  VmRecordSchema,
} from "../gen/debvisor/store/v1/records_pb.js";
import { NodeIdSchema } from "../gen/debvisor/v1/common_pb.js";
import type { Health, NodeInfo, NodeSummary } from "../gen/debvisor/v1/node_pb.js";
import type { DatasetRef } from "../gen/debvisor/v1/storage_pb.js";
import { type VmInfo, VmInfoSchema, VmState } from "../gen/debvisor/v1/vm_pb.js";
import { type Compare, encodeMessage, getMessage, type KvStore } from "../store/index.js";
import type { EventSink } from "./event-recorder.js";
import { createFacedRecords, withVms } from "./faced-records.js";
import { createNodeLiveness, type LivenessCheck, type LivenessSource } from "./node-liveness.js";
import {
  compareIds,
  createNodeRecords,
  forStored,
  idOf,
  MAX_ATTEMPTS,
  NODE_PREFIX,
  type Versioned,
} from "./node-records.js";
import { summarizeNode } from "./node-summary.js";
import { placedAmong, placedVms } from "./placed-vms.js";
import { MAX_CLAIMS, type Placement, placeReported, tellPlacement } from "./report-placement.js";
import { createStaleCopies } from "./stale-copies.js";
import { applyPins, pinned } from "./vm-pins.js";
import { generationFloor } from "./vm-placement.js";
import { createVmRecords, type VmRecords, vmRecord, withTenants } from "./vm-records.js";
import { specOfReported } from "./vm-spec.js";
import { createVmStateCounts, type VmStateCounts } from "./vm-state-counts.js";

/** Options of {@link createInventory}. */
export interface InventoryOptions {
  readonly store: KvStore;
  readonly clock: Clock;
  /** A node is READY while its last heartbeat is younger than this (default 30 s: 3 intervals of 10 s). */
  readonly heartbeatTtlMs?: number;
  /** How far a report's timestamp may be ahead of the server's clock (default 5 s); later ones are refused. */
  readonly reportClockSkewMs?: number;
  /**
   * With liveness from store leases: a heartbeat whose report repeats the
   * stored one but for its time, load figures and skew renews the node's
   * lease and is written only once this long has passed since the record's
   * last write (default 0: every heartbeat is written). See {@link repeatsStored}.
   */
  readonly reportRefreshMs?: number;
  /**
   * The clock liveness is measured on (arrival of heartbeats, readiness):
   * a monotonic one in the daemon, so a wall-clock step never makes nodes
   * look down. Default: `clock`.
   */
  readonly livenessClock?: Clock;
  /** NOT_READY this long (default 60 s), a node's VMs may restart elsewhere. */
  readonly fenceDelayMs?: number;
  /**
   * What decides liveness (see node-liveness.ts): default `lease` on etcd
   * (the store's TTL; daemons' clocks are never compared), `clock` on SQLite
   * (the one daemon's clock).
   */
  readonly liveness?: LivenessSource;
  readonly logger?: Logger;
  /** Where VMs placed by a report, and reports that conflict with a placement, are told. */
  readonly events?: EventSink;
}

/** Outcome of a registration. */
export interface RegisterResult {
  /** False when an existing node was updated by its own identity. */
  readonly created: boolean;
}

/** The cluster's last-known view of nodes and the VMs they run, kept in the state store. */
export interface Inventory {
  /**
   * Creates or updates a node. Re-registration by the identity that first
   * registered it is an update; any other identity gets NODE_ID_TAKEN.
   */
  register(info: NodeInfo, owner: string, signal?: AbortSignal): Promise<RegisterResult>;
  /**
   * Records a heartbeat. Unknown nodes are NODE_NOT_FOUND. Every accepted
   * message renews the node's liveness first, whatever its timestamp says.
   * A report older than the newest one recorded is ignored (resolves false)
   * so reordering on the network never rolls state back; one stamped later
   * than the clock plus the allowed skew is REPORT_FROM_FUTURE and stores
   * nothing of its content (the node is alive all the same, and its skew is
   * recorded to be shown). With `reporter`
   * (a caller's principal), only the node itself or the identity that
   * registered it may report (PERMISSION_DENIED). A report's VM tenants are
   * ignored, and VMs placed on another node are left out of it. The record
   * stored keeps the report's objects (its VMs where nothing rewrote them):
   * a caller must not change them afterwards.
   */
  heartbeat(health: Health, signal?: AbortSignal, reporter?: string): Promise<boolean>;
  /** Every node with readiness computed now, sorted by id. */
  listNodes(signal?: AbortSignal): Promise<NodeSummary[]>;
  /** One node and its VMs, or undefined. */
  getNode(
    id: string,
    signal?: AbortSignal,
  ): Promise<{ summary: NodeSummary; vms: VmInfo[] } | undefined>;
  /**
   * One node read from the store itself, not the cache, with a compare that
   * holds only while the record is unchanged: for decisions that must not
   * rest on a stale view (failover's "down long enough").
   */
  readNode(
    id: string,
    signal?: AbortSignal,
  ): Promise<
    { summary: NodeSummary; vms: VmInfo[]; unchanged: Compare; liveness: LivenessCheck } | undefined
  >;
  /**
   * Every VM the nodes last reported, sorted by id. A VM two nodes report
   * is listed once: the copy of the node it is placed on (its record in the
   * store), never the latest report; `stale_copy_nodes` names the others.
   */
  listVms(signal?: AbortSignal): Promise<VmInfo[]>;
  /**
   * VMs by state (states with none left out): what counting {@link listVms}
   * by state gives, kept as reports are stored and placements change once
   * first asked for, so it costs nothing to read (the /metrics scrape).
   */
  vmsByState(signal?: AbortSignal): Promise<ReadonlyMap<VmState, number>>;
  /** VM records naming stale copies (conflicts: nodes reporting a VM placed elsewhere), by id. */
  conflicts(signal?: AbortSignal): Promise<VmRecord[]>;
  /** One VM and the node that reports it, or undefined. */
  findVm(vmId: string, signal?: AbortSignal): Promise<VmInfo | undefined>;
  /**
   * The VMs {@link listVms} lists with a disk `matches` accepts, without
   * merging the others (a dataset's owners, asked by every storage call).
   */
  vmsWithDisk(matches: (disk: DatasetRef) => boolean, signal?: AbortSignal): Promise<VmInfo[]>;
  /**
   * Marks a node (un)schedulable; NODE_NOT_FOUND when unknown. With
   * `outOfService` (cordon only) the operator says the node is off; a later
   * cordon keeps that, an uncordon clears it.
   */
  cordon(
    id: string,
    cordoned: boolean,
    signal?: AbortSignal,
    outOfService?: boolean,
  ): Promise<NodeSummary>;
  /**
   * Deletes a node's record while `unchanged` (from readNode) still holds;
   * false when the record changed meanwhile. Reads stop showing it at once.
   */
  remove(id: string, unchanged: Compare, signal?: AbortSignal): Promise<boolean>;
  /**
   * Moves a VM's entry from one node's last report to another's in one
   * transaction, so the view never shows it twice or nowhere after a
   * migration or failover; the nodes' next heartbeats confirm it. Written
   * only while every one of `guards` holds (the caller still owns the
   * migration that moved it): CONFLICT otherwise, and nothing written.
   */
  moveVm(
    vm: VmInfo,
    from: string,
    to: string,
    signal?: AbortSignal,
    guards?: readonly Compare[],
  ): Promise<void>;
  /**
   * Assigns a VM to a tenant ("" for none), kept in the store; VM_NOT_FOUND
   * for a VM neither reported nor recorded. Answers the VM as now listed.
   */
  assignTenant(vmId: string, tenant: string, by: string, signal?: AbortSignal): Promise<VmInfo>;
  /**
   * Removes the `remove` labels of a VM, then sets `set` (the rest stay), kept in
   * the store like its tenant; VM_NOT_FOUND as for assignTenant. Answers the VM as now listed.
   */
  setLabels(
    vmId: string,
    set: Readonly<Record<string, string>>,
    remove: readonly string[],
    signal?: AbortSignal,
  ): Promise<VmInfo>;
  /**
   * Gives each VM the tenant named unless one was ever assigned to it (dev
   * mode's seeding); a full VmInfo also becomes managed, its shape its spec,
   * as if the control plane had created it.
   */
  seedTenants(vms: readonly ({ id: string; tenant: string } | VmInfo)[], by: string): Promise<void>;
  /** The control plane's VM records (tenant, placement, spec), shared with the VM lifecycle. */
  readonly vmRecords: VmRecords;
  /** Stops following the store. */
  close(): void;
}

const VMS = "vms/";
/** Labels one VM may carry. */
const MAX_LABELS = 64;

/** Creates a store-backed {@link Inventory}. */
export function createInventory(options: InventoryOptions): Inventory {
  const ttl = options.heartbeatTtlMs ?? 30_000;
  const skew = options.reportClockSkewMs ?? 5_000;
  const refreshMs = options.reportRefreshMs ?? 0;
  /**
   * Nodes back after a lapse whose first report is not stored yet: it is
   * stored even if it repeats the last (the heartbeat that renewed the lease
   * anew may have failed to write it). Bounded by the nodes.
   */
  const backFromLapse = new Set<string>();
  const { clock, store } = options;
  const liveClock = options.livenessClock ?? clock;
  const liveness = createNodeLiveness({
    source: options.liveness ?? (store.backend === "etcd" ? "lease" : "clock"),
    store,
    clock: liveClock,
    ttlMs: ttl,
    fenceDelayMs: options.fenceDelayMs ?? 60_000,
    logger: options.logger,
  });
  const vmRecords = createVmRecords(store, options.logger);
  const staleCopies = createStaleCopies(store, vmRecords);
  /** Records with the control plane's tenants applied, kept while their VMs' records are unchanged. */
  const { withFacts } = createFacedRecords(vmRecords);
  const nodeRecords = createNodeRecords({ store, vmRecords, withFacts, logger: options.logger });
  const { follow, cachedVersion, remember, records, update } = nodeRecords;
  /** VMs by state, kept as node records and placements change once first asked for. */
  let byState: VmStateCounts | undefined;
  /** A node's record as stored (newest of the watch's and this process's own), or none. */
  const current = (seen: ReadonlyMap<string, Versioned>, id: string) => seen.get(id)?.rec;
  /**
   * One VM as {@link placedVms} lists it, merging no other: every VM call
   * finds its VM (tenancy, planning, failover), and merging every report for
   * it cost as much as listing them all (20 ms at 1,000 nodes of 20 VMs).
   * It still passes over every reported copy's id, without allocating.
   */
  async function placedVm(vmId: string): Promise<VmInfo | undefined> {
    return placedAmong(
      (await follow()).values(),
      await vmRecords.all(),
      new Set([vmId]),
      withFacts,
    ).get(vmId);
  }

  function summarize(rec: NodeRecord, now: number, live = liveness.view(idOf(rec), rec, now)) {
    return summarizeNode(rec, now, live);
  }

  /**
   * Changes what the control plane holds of a VM (tenant, labels) under
   * compare-and-swap; VM_NOT_FOUND for a VM neither reported nor recorded.
   * Answers the VM as now listed.
   */
  async function updateFacts(
    vmId: string,
    change: (prev: VmRecord | undefined) => Parameters<typeof vmRecord>[2],
    signal: AbortSignal | undefined,
  ): Promise<VmInfo> {
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      const got = await getMessage(store, VmRecordSchema, VMS + vmId, { signal });
      const reported = await placedVm(vmId);
      if (got === undefined && reported === undefined) throw new RpcError("VM_NOT_FOUND");
      const prev = got === undefined ? undefined : { rec: got.message, rev: got.modRevision };
      const rec = vmRecord(vmId, prev, {
        ...change(prev?.rec),
        nodeId: prev?.rec.nodeId || nodeKey(reported?.nodeId?.id ?? ""),
      });
      const w = vmRecords.write(rec, prev?.rev ?? 0);
      const txn = await store.txn({ compares: [w.compare], success: [w.op] }, { signal });
      if (txn.succeeded) {
        vmRecords.remember(rec, txn.revision);
        const facts = { tenant: rec.tenant, labels: { ...rec.labels } };
        if (reported !== undefined) return { ...reported, ...facts };
        return create(VmInfoSchema, {
          id: vmId,
          ...facts,
          nodeId: rec.nodeId === "" ? undefined : { id: rec.nodeId },
        });
      }
    }
    throw new RpcError("CONFLICT");
  }

  let moves: Promise<unknown> = Promise.resolve();

  /** Moves a VM's placement and both nodes' lists in one transaction (see `moveVm`). */
  async function moveOnce(
    vm: VmInfo,
    fromId: string,
    toId: string,
    signal: AbortSignal | undefined,
    guards: readonly Compare[],
  ): Promise<void> {
    const from = nodeKey(fromId);
    const to = nodeKey(toId);
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      const src = await getMessage(store, NodeRecordSchema, NODE_PREFIX + from, { signal });
      const dst = await getMessage(store, NodeRecordSchema, NODE_PREFIX + to, { signal });
      if (dst === undefined) throw new RpcError("NODE_NOT_FOUND");
      const fact = await getMessage(store, VmRecordSchema, VMS + vm.id, { signal });
      const prev = fact === undefined ? undefined : { rec: fact.message, rev: fact.modRevision };
      const record = vmRecord(vm.id, prev, { nodeId: to, awaitingReport: true });
      const placement = vmRecords.write(record, prev?.rev ?? 0);
      const moved = {
        ...vm,
        nodeId: create(NodeIdSchema, { id: dst.message.info?.id?.id ?? toId }),
      };
      const until = BigInt(clock.now() + ttl);
      const nextDst = pinned(
        withVms(dst.message, [
          ...(dst.message.health?.vms ?? []).filter((v) => v.id !== vm.id),
          moved,
        ]),
        create(VmPinSchema, { vm: moved, present: true, untilMs: until }),
      );
      const nextSrc =
        src === undefined
          ? undefined
          : pinned(
              withVms(
                src.message,
                (src.message.health?.vms ?? []).filter((v) => v.id !== vm.id),
              ),
              create(VmPinSchema, { vm, present: false, untilMs: until }),
            );
      const txn = await store.txn(
        {
          compares: [
            ...guards,
            placement.compare,
            { key: NODE_PREFIX + to, modRevision: dst.modRevision },
            ...(src === undefined
              ? []
              : [{ key: NODE_PREFIX + from, modRevision: src.modRevision }]),
          ],
          success: [
            placement.op,
            { type: "put", key: NODE_PREFIX + to, value: encodeMessage(NodeRecordSchema, nextDst) },
            ...(nextSrc === undefined
              ? []
              : [
                  {
                    type: "put" as const,
                    key: NODE_PREFIX + from,
                    value: encodeMessage(NodeRecordSchema, nextSrc),
                  },
                ]),
          ],
        },
        { signal },
      );
      if (txn.succeeded) {
        remember(to, txn.revision, nextDst);
        if (nextSrc !== undefined) remember(from, txn.revision, nextSrc);
        vmRecords.remember(record, txn.revision);
        return;
      }
    }
    throw new RpcError("CONFLICT");
  }

  return {
    register(info, owner, signal) {
      const id = nodeKey(info.id?.id ?? "");
      return update(id, signal, (current) => {
        if (current !== undefined && current.owner !== owner) throw new RpcError("NODE_ID_TAKEN");
        const next = create(NodeRecordSchema, {
          ...(current ?? { registeredAtMs: BigInt(clock.now()) }),
          info,
          owner,
        });
        return { next, result: { created: current === undefined } };
      });
    },
    async heartbeat(health, signal, reporter) {
      const nodeId = nodeKey(health.nodeId?.id ?? "");
      const known =
        (await cachedVersion(nodeId)) ??
        (await getMessage(store, NodeRecordSchema, NODE_PREFIX + nodeId, { signal }));
      if (known === undefined) throw new RpcError("NODE_NOT_FOUND");
      checkReporter(known.message, nodeId, reporter);
      // The node was heard from: that is liveness, whatever the report's stamp says.
      if (await liveness.renew(nodeId, signal)) backFromLapse.add(nodeId);
      const skewMs = BigInt(msFromTimestamp(health.timestamp) - clock.now());
      // A report from the future would make every genuine one look older: its
      // content is refused, not stored; how far ahead it was is kept, to be shown.
      if (skewMs > BigInt(skew)) {
        await update(nodeId, signal, (current) => {
          if (current === undefined) throw new RpcError("NODE_NOT_FOUND");
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
      const seen = (await follow()).values();
      /** A node's record as last known here (its report decides whether it still holds a VM). */
      const nodes = (id: string) => seen.get(id)?.rec;
      // A VM no record holds is claimed under a first generation: read the revision for it.
      const revision = health.vms.some((vm) => facts.get(vm.id) === undefined)
        ? await generationFloor(store, signal)
        : 0;
      let placement: Placement | undefined;
      let stored = false;
      // Placements its node confirms (from the report itself, not from pins) are written on
      // the first try only: a try that failed may have met a VM record newer than this
      // process had seen, and the report must not fail for them (the next one writes them).
      let confirmFrom: readonly VmInfo[] | undefined = health.vms;
      const recorded = await update(nodeId, signal, (current) => {
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
        });
        confirmFrom = undefined;
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
      if (placement !== undefined && options.events !== undefined)
        tellPlacement(options.events, nodeId, placement, facts);
      if (recorded && placement !== undefined)
        await staleCopies.note(nodeId, placement.stale, signal).catch((err: unknown) => {
          options.logger?.warn(
            { err, node: nodeId },
            "stale copies not recorded; the next report will",
          );
        });
      return recorded;
    },
    async listNodes(signal) {
      signal?.throwIfAborted();
      await liveness.ready();
      const now = liveClock.now();
      const out: NodeSummary[] = [];
      for (const rec of (await records()).values()) out.push(summarize(rec, now));
      return out.sort((a, b) => compareIds(a.info?.id?.id ?? "", b.info?.id?.id ?? ""));
    },
    async getNode(id, signal) {
      signal?.throwIfAborted();
      const stored = current((await follow()).values(), nodeKey(id));
      if (stored === undefined) return undefined;
      const rec = withFacts(stored, await vmRecords.all());
      await liveness.ready();
      return { summary: summarize(rec, liveClock.now()), vms: [...(rec.health?.vms ?? [])] };
    },
    async readNode(given, signal) {
      const id = nodeKey(given);
      const got = await getMessage(store, NodeRecordSchema, NODE_PREFIX + id, { signal });
      if (got === undefined) return undefined;
      remember(id, got.modRevision, got.message);
      const rec = withFacts(got.message, await vmRecords.all());
      const now = liveClock.now();
      const live = await liveness.check(id, rec, now, signal);
      return {
        summary: summarize(rec, now, live),
        vms: [...(rec.health?.vms ?? [])],
        unchanged: { key: NODE_PREFIX + id, modRevision: got.modRevision },
        liveness: live,
      };
    },
    async listVms(signal) {
      signal?.throwIfAborted();
      const facts = await vmRecords.all();
      return [...placedVms(await records(), facts).values()].sort((a, b) => compareIds(a.id, b.id));
    },
    async vmsByState(signal) {
      signal?.throwIfAborted();
      const m = await follow();
      const facts = await vmRecords.all();
      if (byState === undefined) {
        const counts = createVmStateCounts({
          record: (key) => m.values().get(key)?.rec,
          placed: (vmId, rec) => facts.get(vmId)?.rec.nodeId === idOf(rec),
        });
        counts.reset(m.values().keys());
        m.onChange((key) =>
          key === undefined ? counts.reset(m.values().keys()) : counts.nodeChanged(key),
        );
        vmRecords.onChange((id) =>
          id === undefined ? counts.reset(m.values().keys()) : counts.placementChanged(id),
        );
        byState = counts;
      }
      return byState.totals();
    },
    async conflicts(signal) {
      signal?.throwIfAborted();
      const out = (await vmRecords.withStaleCopies()).map((v) => v.rec);
      return out.sort((a, b) => compareIds(a.id, b.id));
    },
    async findVm(vmId, signal) {
      signal?.throwIfAborted();
      return placedVm(vmId);
    },
    async vmsWithDisk(matches, signal) {
      signal?.throwIfAborted();
      // Disks are the nodes' to report (the control plane's facts never change them):
      // a VM is listed with such a disk only if one of its reported copies has one.
      const seen = (await follow()).values();
      const facts = await vmRecords.all();
      const ids = new Set<string>();
      forStored(seen, (_, rec) => {
        for (const vm of rec.health?.vms ?? []) if (vm.disks.some(matches)) ids.add(vm.id);
      });
      const out = [...placedAmong(seen, facts, ids, withFacts).values()].filter((vm) =>
        vm.disks.some(matches),
      );
      return out.sort((a, b) => compareIds(a.id, b.id));
    },
    cordon(id, cordoned, signal, outOfService = false) {
      return update(nodeKey(id), signal, (current) => {
        if (current === undefined) throw new RpcError("NODE_NOT_FOUND");
        const next = create(NodeRecordSchema, {
          ...current,
          cordoned,
          // A cordon keeps the operator's word; only an uncordon takes it back.
          outOfService: cordoned && (outOfService || current.outOfService),
        });
        return { next, result: summarize(next, liveClock.now()) };
      });
    },
    moveVm(vm, fromId, toId, signal, guards = []) {
      // This process's moves go one at a time: a drain finishes many at once
      // off one node, and as rivals in the compare-and-swap below all but one
      // would retry, the last of n after n attempts. Other processes' writes
      // are still caught by the compare-and-swap.
      const run = moves.then(() => moveOnce(vm, fromId, toId, signal, guards));
      moves = run.catch(() => {});
      return run;
    },
    assignTenant(vmId, tenant, by, signal) {
      return updateFacts(
        vmId,
        () => ({ tenant, tenantSetBy: by, tenantSetAtMs: BigInt(clock.now()) }),
        signal,
      );
    },
    setLabels(vmId, set, remove, signal) {
      return updateFacts(
        vmId,
        (prev) => {
          const labels = { ...(prev?.labels ?? {}) };
          for (const key of remove) delete labels[key];
          Object.assign(labels, set);
          if (Object.keys(labels).length > MAX_LABELS)
            throw new RpcError("INVALID_ARGUMENT", {
              message: `labels: a VM has at most ${MAX_LABELS}`,
            });
          return { labels };
        },
        signal,
      );
    },
    async seedTenants(vms, by) {
      const known = await vmRecords.all();
      const fresh = vms
        .filter((vm) => (known.get(vm.id)?.rec.tenantSetBy ?? "") === "")
        .map((vm) => {
          const prev = known.get(vm.id);
          const full = "$typeName" in vm ? vm : undefined;
          const rec = vmRecord(vm.id, prev, {
            tenant: vm.tenant,
            tenantSetBy: by,
            tenantSetAtMs: BigInt(clock.now()),
            ...(full === undefined
              ? {}
              : {
                  managed: true,
                  managedBy: by,
                  managedAtMs: BigInt(clock.now()),
                  spec: specOfReported(full),
                  desiredState: full.state === VmState.RUNNING ? VmState.RUNNING : VmState.STOPPED,
                }),
          });
          return { rec, rev: prev?.rev ?? 0 };
        });
      // Only where no tenant was ever assigned, in batches; a batch that meets a change made
      // meanwhile goes one by one (and a VM assigned meanwhile keeps its assignment).
      for (let i = 0; i < fresh.length; i += MAX_CLAIMS) {
        const batch = fresh.slice(i, i + MAX_CLAIMS);
        for (const group of [batch, ...batch.map((r) => [r])]) {
          const w = group.map((r) => vmRecords.write(r.rec, r.rev));
          const txn = await store.txn({
            compares: w.map((x) => x.compare),
            success: w.map((x) => x.op),
          });
          if (txn.succeeded) for (const r of group) vmRecords.remember(r.rec, txn.revision);
          if (txn.succeeded && group === batch) break;
        }
      }
    },
    async remove(given, unchanged, signal) {
      const id = nodeKey(given);
      const txn = await store.txn(
        { compares: [unchanged], success: [{ type: "delete", key: NODE_PREFIX + id }] },
        { signal },
      );
      if (!txn.succeeded) return false;
      remember(id, txn.revision, undefined);
      backFromLapse.delete(id);
      return true;
    },
    vmRecords,
    close() {
      nodeRecords.close();
      vmRecords.close();
      liveness.close();
    },
  };
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
