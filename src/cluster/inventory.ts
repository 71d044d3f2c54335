/**
 * The inventory: the cluster's last-known view of nodes and the VMs they
 * run, kept in the state store. This file holds its contract and
 * `createInventory`, which composes it from its parts: the node records
 * (node-records.ts), nodes (inventory-nodes.ts), heartbeats
 * (inventory-heartbeat.ts), VM reads (inventory-vms.ts), VM facts
 * (inventory-vm-facts.ts) and moves (inventory-moves.ts).
 */
import type { Clock, Logger } from "../core/index.js";
import type { VmRecord } from "../gen/debvisor/store/v1/records_pb.js";
import type { Health, NodeInfo, NodeSummary } from "../gen/debvisor/v1/node_pb.js";
import type { DatasetRef } from "../gen/debvisor/v1/storage_pb.js";
import type { VmInfo, VmState } from "../gen/debvisor/v1/vm_pb.js";
import type { Compare, KvStore } from "../store/index.js";
import type { EventSink } from "./event-recorder.js";
import { createFacedRecords } from "./faced-records.js";
import { createInventoryHeartbeat } from "./inventory-heartbeat.js";
import { createInventoryMoves } from "./inventory-moves.js";
import { createInventoryNodes } from "./inventory-nodes.js";
import { createInventoryVmFacts } from "./inventory-vm-facts.js";
import { createInventoryVms } from "./inventory-vms.js";
import { createNodeLiveness, type LivenessCheck, type LivenessSource } from "./node-liveness.js";
import { createNodeRecords } from "./node-records.js";
import { createStaleCopies } from "./stale-copies.js";
import { createVmRecords, type VmRecords } from "./vm-records.js";

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
   * last write (default 0: every heartbeat is written). See `repeatsStored`
   * in inventory-heartbeat.ts.
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
   * Calls `listener` with the id of each node whose record is deleted, here
   * or by another process (once the records are followed: the first read or
   * heartbeat), so per-node state elsewhere can be dropped with it; returns
   * the function that stops it.
   */
  onNodeRemoved(listener: (nodeId: string) => void): () => void;
  /** How many nodes the liveness keeps bookkeeping for (tests and metrics): none left of removed ones. */
  livenessTracked(): number;
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

/** Creates a store-backed {@link Inventory}. */
export function createInventory(options: InventoryOptions): Inventory {
  const ttl = options.heartbeatTtlMs ?? 30_000;
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
  // What is kept per node goes with its record, whichever process removed it.
  nodeRecords.onRemoved((id) => {
    backFromLapse.delete(id);
    liveness.forget(id);
  });
  const nodes = createInventoryNodes({
    store,
    clock,
    liveClock,
    liveness,
    vmRecords,
    withFacts,
    nodeRecords,
    backFromLapse,
    logger: options.logger,
  });
  const { heartbeat } = createInventoryHeartbeat({
    store,
    clock,
    liveClock,
    liveness,
    vmRecords,
    nodeRecords,
    staleCopies,
    backFromLapse,
    skewMs: options.reportClockSkewMs ?? 5_000,
    refreshMs: options.reportRefreshMs ?? 0,
    events: options.events,
    logger: options.logger,
  });
  const vms = createInventoryVms({ vmRecords, withFacts, nodeRecords });
  const facts = createInventoryVmFacts({ store, clock, vmRecords, placedVm: vms.placedVm });
  const { moveVm } = createInventoryMoves({ store, clock, ttlMs: ttl, vmRecords, nodeRecords });
  return {
    register: nodes.register,
    heartbeat,
    listNodes: nodes.listNodes,
    getNode: nodes.getNode,
    readNode: nodes.readNode,
    listVms: vms.listVms,
    vmsByState: vms.vmsByState,
    conflicts: vms.conflicts,
    findVm: vms.findVm,
    vmsWithDisk: vms.vmsWithDisk,
    cordon: nodes.cordon,
    remove: nodes.remove,
    onNodeRemoved: (listener) => nodeRecords.onRemoved(listener),
    livenessTracked: () => liveness.tracked(),
    moveVm,
    assignTenant: facts.assignTenant,
    setLabels: facts.setLabels,
    seedTenants: facts.seedTenants,
    vmRecords,
    close() {
      nodeRecords.close();
      vmRecords.close();
      liveness.close();
    },
  };
}
