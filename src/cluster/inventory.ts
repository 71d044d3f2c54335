import { create } from "@bufbuild/protobuf";
import { type Clock, RpcError } from "../core/index.js";
import {
  type Health,
  type NodeInfo,
  NodeReadiness,
  type NodeSummary,
  NodeSummarySchema,
} from "../gen/debvisor/v1/node_pb.js";
import type { VmInfo } from "../gen/debvisor/v1/vm_pb.js";
import { msFromTimestamp, timestampFromMs } from "./timestamp.js";

/** Options of {@link createInventory}. */
export interface InventoryOptions {
  readonly clock: Clock;
  /** A node is READY while its last heartbeat is younger than this (default 30 s: 3 intervals of 10 s). */
  readonly heartbeatTtlMs?: number;
}

/** Outcome of a registration. */
export interface RegisterResult {
  /** False when an existing node was updated by its own identity. */
  readonly created: boolean;
}

/**
 * The cluster's last-known view of nodes and the VMs they run. Held in memory
 * until the state store lands; the interface is what the store-backed
 * implementation will keep.
 */
export interface Inventory {
  /**
   * Creates or updates a node. Re-registration by the identity that first
   * registered it is an update; any other identity gets NODE_ID_TAKEN.
   */
  register(info: NodeInfo, owner: string): RegisterResult;
  /**
   * Records a heartbeat. Unknown nodes are NODE_NOT_FOUND. A report older than
   * the newest one recorded is ignored (returns false) so reordering on the
   * network never rolls state back.
   */
  heartbeat(health: Health): boolean;
  /** Every node with readiness computed now, sorted by id. */
  listNodes(): NodeSummary[];
  /** One node and its VMs, or undefined. */
  getNode(id: string): { summary: NodeSummary; vms: VmInfo[] } | undefined;
  /** Every VM the nodes last reported, sorted by id. */
  listVms(): VmInfo[];
}

interface NodeRecord {
  info: NodeInfo;
  owner: string;
  health: Health | undefined;
  receivedAt: number;
  cordoned: boolean;
}

/** Creates an in-memory {@link Inventory}. */
export function createInventory(options: InventoryOptions): Inventory {
  const ttl = options.heartbeatTtlMs ?? 30_000;
  const { clock } = options;
  const nodes = new Map<string, NodeRecord>();

  function summarize(rec: NodeRecord, now: number): NodeSummary {
    const age = rec.health === undefined ? undefined : Math.max(0, now - rec.receivedAt);
    return create(NodeSummarySchema, {
      info: rec.info,
      health: rec.health,
      readiness: age !== undefined && age <= ttl ? NodeReadiness.READY : NodeReadiness.NOT_READY,
      lastHeartbeat: rec.health === undefined ? undefined : timestampFromMs(rec.receivedAt),
      heartbeatAgeMs: BigInt(age ?? 0),
      cordoned: rec.cordoned,
    });
  }

  return {
    register(info, owner) {
      const id = info.id?.id ?? "";
      const existing = nodes.get(id);
      if (existing !== undefined && existing.owner !== owner) throw new RpcError("NODE_ID_TAKEN");
      if (existing !== undefined) {
        existing.info = info;
        return { created: false };
      }
      nodes.set(id, { info, owner, health: undefined, receivedAt: 0, cordoned: false });
      return { created: true };
    },
    heartbeat(health) {
      const rec = nodes.get(health.nodeId?.id ?? "");
      if (rec === undefined) throw new RpcError("NODE_NOT_FOUND");
      if (
        rec.health !== undefined &&
        msFromTimestamp(health.timestamp) < msFromTimestamp(rec.health.timestamp)
      ) {
        return false;
      }
      rec.health = health;
      rec.receivedAt = clock.now();
      return true;
    },
    listNodes() {
      const now = clock.now();
      return [...nodes.keys()].sort().map((id) => summarize(nodes.get(id) as NodeRecord, now));
    },
    getNode(id) {
      const rec = nodes.get(id);
      if (rec === undefined) return undefined;
      return { summary: summarize(rec, clock.now()), vms: [...(rec.health?.vms ?? [])] };
    },
    listVms() {
      const all: VmInfo[] = [];
      for (const rec of nodes.values()) all.push(...(rec.health?.vms ?? []));
      return all.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    },
  };
}
