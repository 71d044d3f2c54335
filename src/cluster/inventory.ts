import { create } from "@bufbuild/protobuf";
import { type Clock, type Logger, RpcError, silentLogger } from "../core/index.js";
import {
  type NodeRecord,
  NodeRecordSchema,
  type VmPin,
  VmPinSchema,
} from "../gen/debvisor/store/v1/records_pb.js";
import { NodeIdSchema } from "../gen/debvisor/v1/common_pb.js";
import {
  type Health,
  type NodeInfo,
  NodeReadiness,
  type NodeSummary,
  NodeSummarySchema,
} from "../gen/debvisor/v1/node_pb.js";
import type { VmInfo } from "../gen/debvisor/v1/vm_pb.js";
import {
  type Compare,
  decodeMessage,
  encodeMessage,
  getMessage,
  type KeyValue,
  type KvStore,
  mirrorPrefix,
  type PrefixMirror,
} from "../store/index.js";
import { msFromTimestamp, timestampFromMs } from "./timestamp.js";

/** Options of {@link createInventory}. */
export interface InventoryOptions {
  readonly store: KvStore;
  readonly clock: Clock;
  /** A node is READY while its last heartbeat is younger than this (default 30 s: 3 intervals of 10 s). */
  readonly heartbeatTtlMs?: number;
  readonly logger?: Logger;
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
   * Records a heartbeat. Unknown nodes are NODE_NOT_FOUND. A report older than
   * the newest one recorded is ignored (resolves false) so reordering on the
   * network never rolls state back.
   */
  heartbeat(health: Health, signal?: AbortSignal): Promise<boolean>;
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
  ): Promise<{ summary: NodeSummary; vms: VmInfo[]; unchanged: Compare } | undefined>;
  /**
   * Every VM the nodes last reported, sorted by id. A VM two nodes report
   * (a stale heartbeat racing a migration) is listed once: the copy of the
   * node that reported it last.
   */
  listVms(signal?: AbortSignal): Promise<VmInfo[]>;
  /** One VM and the node that reports it, or undefined. */
  findVm(vmId: string, signal?: AbortSignal): Promise<VmInfo | undefined>;
  /** Marks a node (un)schedulable; NODE_NOT_FOUND when unknown. */
  cordon(id: string, cordoned: boolean, signal?: AbortSignal): Promise<NodeSummary>;
  /**
   * Deletes a node's record while `unchanged` (from readNode) still holds;
   * false when the record changed meanwhile. Reads stop showing it at once.
   */
  remove(id: string, unchanged: Compare, signal?: AbortSignal): Promise<boolean>;
  /**
   * Moves a VM's entry from one node's last report to another's in one
   * transaction, so the view never shows it twice or nowhere after a
   * migration or failover; the nodes' next heartbeats confirm it.
   */
  moveVm(vm: VmInfo, from: string, to: string, signal?: AbortSignal): Promise<void>;
  /** Stops following the store. */
  close(): void;
}

const PREFIX = "nodes/";
/** Compare-and-swap attempts before a contended update gives up with CONFLICT. */
const MAX_ATTEMPTS = 8;

/** Creates a store-backed {@link Inventory}. */
export function createInventory(options: InventoryOptions): Inventory {
  const ttl = options.heartbeatTtlMs ?? 30_000;
  const { clock, store } = options;
  /**
   * Reads are served from memory: a mirror of nodes/ kept by watch (other
   * daemons' writes) and this daemon's own writes, newest revision wins.
   */
  const written = new Map<string, Versioned>();
  let mirror: Promise<PrefixMirror<Versioned>> | undefined;
  const decodeVersioned = (kv: KeyValue): Versioned => ({
    rev: kv.modRevision,
    rec: decodeMessage(NodeRecordSchema, kv),
  });
  /** The mirror, loaded on first use; a failed load is retried by the next read. */
  function follow(): Promise<PrefixMirror<Versioned>> {
    if (mirror === undefined) {
      const loading = mirrorPrefix(store, PREFIX, decodeVersioned, options.logger ?? silentLogger);
      mirror = loading;
      loading.catch(() => {
        if (mirror === loading) mirror = undefined;
      });
    }
    return mirror;
  }
  /** Nodes this daemon removed, with the revision of the delete: older copies are not shown. */
  const removed = new Map<string, number>();
  const gone = (id: string, rev: number) => (removed.get(id) ?? 0) > rev;
  async function records(): Promise<Map<string, NodeRecord>> {
    const seen = (await follow()).values();
    const out = new Map<string, NodeRecord>();
    for (const [id, v] of seen) {
      if (gone(id, v.rev)) continue;
      const mine = written.get(id);
      out.set(id, mine !== undefined && mine.rev > v.rev ? mine.rec : v.rec);
    }
    for (const [id, v] of written) if (!out.has(id) && !gone(id, v.rev)) out.set(id, v.rec);
    return out;
  }
  async function cachedVersion(id: string) {
    const seen = (await follow()).values().get(id);
    const mine = written.get(id);
    const best = mine !== undefined && (seen === undefined || mine.rev > seen.rev) ? mine : seen;
    return best === undefined ? undefined : { message: best.rec, modRevision: best.rev };
  }
  function remember(id: string, rev: number, rec: NodeRecord) {
    const prev = written.get(id);
    if (prev === undefined || prev.rev < rev) written.set(id, { rev, rec });
  }

  function summarize(rec: NodeRecord, now: number): NodeSummary {
    const heard = rec.health !== undefined;
    const age = heard ? Math.max(0, now - Number(rec.receivedAtMs)) : undefined;
    const ready = age !== undefined && age <= ttl;
    const since = heard ? Number(rec.receivedAtMs) + ttl : Number(rec.registeredAtMs);
    let vcpus = 0;
    let memory = 0n;
    const vms = rec.health?.vms ?? [];
    for (const vm of vms) {
      vcpus += vm.vcpus;
      memory += vm.memoryBytes;
    }
    // A literal rather than create(): proto3 messages are plain objects, and
    // ListNodes builds one per node per call. The record's info and health
    // objects are shared, as create() would share them.
    return {
      $typeName: NodeSummarySchema.typeName,
      info: rec.info,
      health: rec.health,
      readiness: ready ? NodeReadiness.READY : NodeReadiness.NOT_READY,
      lastHeartbeat: heard ? timestampFromMs(Number(rec.receivedAtMs)) : undefined,
      heartbeatAgeMs: BigInt(age ?? 0),
      cordoned: rec.cordoned,
      vmCount: vms.length,
      vcpusAllocated: vcpus,
      memoryAllocatedBytes: memory,
      notReadyForMs: ready ? 0n : BigInt(Math.max(0, now - since)),
    } satisfies NodeSummary;
  }

  /** Read-modify-write of one node under compare-and-swap, retried when another writer got there first. */
  async function update<T>(
    id: string,
    signal: AbortSignal | undefined,
    change: (current: NodeRecord | undefined) => { next: NodeRecord | undefined; result: T },
  ): Promise<T> {
    const key = PREFIX + id;
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      // First try the copy in memory (usually current: this process wrote it or
      // the watch brought it); the compare-and-swap catches a stale one.
      const cached = attempt === 0 ? await cachedVersion(id) : undefined;
      const current = cached ?? (await getMessage(store, NodeRecordSchema, key, { signal }));
      const { next, result } = change(current?.message);
      if (next === undefined) return result;
      const txn = await store.txn(
        {
          compares: [{ key, modRevision: current?.modRevision ?? 0 }],
          success: [{ type: "put", key, value: encodeMessage(NodeRecordSchema, next) }],
        },
        { signal },
      );
      if (txn.succeeded) {
        remember(id, txn.revision, next);
        return result;
      }
    }
    throw new RpcError("CONFLICT");
  }

  return {
    register(info, owner, signal) {
      const id = info.id?.id ?? "";
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
    heartbeat(health, signal) {
      return update(health.nodeId?.id ?? "", signal, (current) => {
        if (current === undefined) throw new RpcError("NODE_NOT_FOUND");
        const now = clock.now();
        if (
          current.health !== undefined &&
          msFromTimestamp(health.timestamp) < msFromTimestamp(current.health.timestamp)
        ) {
          // Older than the last report (reordered, or the node's clock went
          // back): its content is ignored, but the node is alive: it counts
          // for liveness, or a node with a stepped-back clock would go
          // NOT_READY while running its VMs, and be failed over.
          return {
            next: create(NodeRecordSchema, { ...current, receivedAtMs: BigInt(now) }),
            result: false,
          };
        }
        const pins = current.pins.filter((p) => Number(p.untilMs) > now);
        const vms = applyPins(health.vms, pins);
        return {
          next: create(NodeRecordSchema, {
            ...current,
            health: vms === health.vms ? health : { ...health, vms },
            receivedAtMs: BigInt(now),
            pins,
          }),
          result: true,
        };
      });
    },
    async listNodes(signal) {
      signal?.throwIfAborted();
      const now = clock.now();
      const out: NodeSummary[] = [];
      for (const rec of (await records()).values()) out.push(summarize(rec, now));
      return out.sort((a, b) => compareIds(a.info?.id?.id ?? "", b.info?.id?.id ?? ""));
    },
    async getNode(id, signal) {
      signal?.throwIfAborted();
      const rec = (await records()).get(id);
      if (rec === undefined) return undefined;
      return { summary: summarize(rec, clock.now()), vms: [...(rec.health?.vms ?? [])] };
    },
    async readNode(id, signal) {
      const got = await getMessage(store, NodeRecordSchema, PREFIX + id, { signal });
      if (got === undefined) return undefined;
      remember(id, got.modRevision, got.message);
      return {
        summary: summarize(got.message, clock.now()),
        vms: [...(got.message.health?.vms ?? [])],
        unchanged: { key: PREFIX + id, modRevision: got.modRevision },
      };
    },
    async listVms(signal) {
      signal?.throwIfAborted();
      return [...latestVms(await records()).values()].sort((a, b) => compareIds(a.id, b.id));
    },
    async findVm(vmId, signal) {
      signal?.throwIfAborted();
      return latestVms(await records()).get(vmId);
    },
    cordon(id, cordoned, signal) {
      return update(id, signal, (current) => {
        if (current === undefined) throw new RpcError("NODE_NOT_FOUND");
        const next = create(NodeRecordSchema, { ...current, cordoned });
        return { next, result: summarize(next, clock.now()) };
      });
    },
    async moveVm(vm, from, to, signal) {
      for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
        const src = await getMessage(store, NodeRecordSchema, PREFIX + from, { signal });
        const dst = await getMessage(store, NodeRecordSchema, PREFIX + to, { signal });
        if (dst === undefined) throw new RpcError("NODE_NOT_FOUND");
        const moved = { ...vm, nodeId: create(NodeIdSchema, { id: to }) };
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
              { key: PREFIX + to, modRevision: dst.modRevision },
              ...(src === undefined ? [] : [{ key: PREFIX + from, modRevision: src.modRevision }]),
            ],
            success: [
              { type: "put", key: PREFIX + to, value: encodeMessage(NodeRecordSchema, nextDst) },
              ...(nextSrc === undefined
                ? []
                : [
                    {
                      type: "put" as const,
                      key: PREFIX + from,
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
          return;
        }
      }
      throw new RpcError("CONFLICT");
    },
    async remove(id, unchanged, signal) {
      const txn = await store.txn(
        { compares: [unchanged], success: [{ type: "delete", key: PREFIX + id }] },
        { signal },
      );
      if (!txn.succeeded) return false;
      written.delete(id);
      removed.set(id, txn.revision);
      return true;
    },
    close() {
      void mirror?.then((m) => m.close());
    },
  };
}

interface Versioned {
  readonly rev: number;
  readonly rec: NodeRecord;
}

/** The record with `pin` replacing any earlier pin of the same VM. */
function pinned(rec: NodeRecord, pin: VmPin): NodeRecord {
  const id = pin.vm?.id ?? "";
  return create(NodeRecordSchema, {
    ...rec,
    pins: [...rec.pins.filter((p) => p.vm?.id !== id), pin],
  });
}

/** A heartbeat's VM list corrected by the pins still in force (the same array when none apply). */
function applyPins(vms: VmInfo[], pins: readonly VmPin[]): VmInfo[] {
  let out = vms;
  for (const pin of pins) {
    const id = pin.vm?.id ?? "";
    const has = out.some((v) => v.id === id);
    if (pin.present && !has && pin.vm !== undefined) out = [...out, pin.vm];
    else if (!pin.present && has) out = out.filter((v) => v.id !== id);
  }
  return out;
}

function withVms(rec: NodeRecord, vms: VmInfo[]): NodeRecord {
  if (rec.health === undefined) return rec;
  return create(NodeRecordSchema, { ...rec, health: { ...rec.health, vms } });
}

/** Each VM once: the copy from the node that reported most recently. */
function latestVms(records: Map<string, NodeRecord>): Map<string, VmInfo> {
  const best = new Map<string, { vm: VmInfo; at: bigint }>();
  for (const rec of records.values()) {
    for (const vm of rec.health?.vms ?? []) {
      const prev = best.get(vm.id);
      if (prev === undefined || prev.at < rec.receivedAtMs)
        best.set(vm.id, { vm, at: rec.receivedAtMs });
    }
  }
  const out = new Map<string, VmInfo>();
  for (const [id, v] of best) out.set(id, v.vm);
  return out;
}

function compareIds(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
