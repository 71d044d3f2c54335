import { create } from "@bufbuild/protobuf";
import { type Clock, RpcError } from "../core/index.js";
import { type NodeRecord, NodeRecordSchema } from "../gen/debvisor/store/v1/records_pb.js";
import {
  type Health,
  type NodeInfo,
  NodeReadiness,
  type NodeSummary,
  NodeSummarySchema,
} from "../gen/debvisor/v1/node_pb.js";
import type { VmInfo } from "../gen/debvisor/v1/vm_pb.js";
import {
  decodeMessage,
  encodeMessage,
  getMessage,
  type KvStore,
  rangeAll,
} from "../store/index.js";
import { msFromTimestamp, timestampFromMs } from "./timestamp.js";

/** Options of {@link createInventory}. */
export interface InventoryOptions {
  readonly store: KvStore;
  readonly clock: Clock;
  /** A node is READY while its last heartbeat is younger than this (default 30 s: 3 intervals of 10 s). */
  readonly heartbeatTtlMs?: number;
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
  /** Every VM the nodes last reported, sorted by id. */
  listVms(signal?: AbortSignal): Promise<VmInfo[]>;
}

const PREFIX = "nodes/";
/** Compare-and-swap attempts before a contended update gives up with CONFLICT. */
const MAX_ATTEMPTS = 8;

/** Creates a store-backed {@link Inventory}. */
export function createInventory(options: InventoryOptions): Inventory {
  const ttl = options.heartbeatTtlMs ?? 30_000;
  const { clock, store } = options;

  function summarize(rec: NodeRecord, now: number): NodeSummary {
    const heard = rec.health !== undefined;
    const age = heard ? Math.max(0, now - Number(rec.receivedAtMs)) : undefined;
    return create(NodeSummarySchema, {
      info: rec.info,
      health: rec.health,
      readiness: age !== undefined && age <= ttl ? NodeReadiness.READY : NodeReadiness.NOT_READY,
      lastHeartbeat: heard ? timestampFromMs(Number(rec.receivedAtMs)) : undefined,
      heartbeatAgeMs: BigInt(age ?? 0),
      cordoned: rec.cordoned,
    });
  }

  /** Read-modify-write of one node under compare-and-swap, retried when another writer got there first. */
  async function update<T>(
    id: string,
    signal: AbortSignal | undefined,
    change: (current: NodeRecord | undefined) => { next: NodeRecord | undefined; result: T },
  ): Promise<T> {
    const key = PREFIX + id;
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      const current = await getMessage(store, NodeRecordSchema, key, { signal });
      const { next, result } = change(current?.message);
      if (next === undefined) return result;
      const txn = await store.txn(
        {
          compares: [{ key, modRevision: current?.modRevision ?? 0 }],
          success: [{ type: "put", key, value: encodeMessage(NodeRecordSchema, next) }],
        },
        { signal },
      );
      if (txn.succeeded) return result;
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
        if (
          current.health !== undefined &&
          msFromTimestamp(health.timestamp) < msFromTimestamp(current.health.timestamp)
        ) {
          return { next: undefined, result: false };
        }
        return {
          next: create(NodeRecordSchema, { ...current, health, receivedAtMs: BigInt(clock.now()) }),
          result: true,
        };
      });
    },
    async listNodes(signal) {
      const now = clock.now();
      const out: NodeSummary[] = [];
      for await (const kv of rangeAll(store, PREFIX, { signal }))
        out.push(summarize(decodeMessage(NodeRecordSchema, kv), now));
      return out;
    },
    async getNode(id, signal) {
      const rec = await getMessage(store, NodeRecordSchema, PREFIX + id, { signal });
      if (rec === undefined) return undefined;
      return {
        summary: summarize(rec.message, clock.now()),
        vms: [...(rec.message.health?.vms ?? [])],
      };
    },
    async listVms(signal) {
      const all: VmInfo[] = [];
      for await (const kv of rangeAll(store, PREFIX, { signal }))
        all.push(...(decodeMessage(NodeRecordSchema, kv).health?.vms ?? []));
      return all.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    },
  };
}
