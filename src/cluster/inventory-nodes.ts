/**
 * The inventory's nodes: registering, listing, reading (from memory, or
 * from the store for a decision), cordoning and removing them. Heartbeats
 * are inventory-heartbeat.ts's.
 */
import { create } from "@bufbuild/protobuf";
import { type Clock, type Logger, nodeKey, RpcError } from "../core/index.js";
import { type NodeRecord, NodeRecordSchema } from "../gen/debvisor/store/v1/records_pb.js";
import type { NodeSummary } from "../gen/debvisor/v1/node_pb.js";
import { getMessage, type KvStore } from "../store/index.js";
import { AGENTS_PREFIX } from "./agent-presence.js";
import type { FacedRecords } from "./faced-records.js";
import type { Inventory } from "./inventory.js";
import type { NodeLiveness } from "./node-liveness.js";
import { compareIds, idOf, NODE_PREFIX, type NodeRecords, type Versioned } from "./node-records.js";
import { summarizeNode } from "./node-summary.js";
import { dropVanished, recordsOnWordAlone } from "./vanished-vms.js";
import type { VmRecords } from "./vm-records.js";

/** What {@link createInventoryNodes} works with. */
export interface InventoryNodesDeps {
  readonly store: KvStore;
  readonly clock: Clock;
  /** The clock liveness is measured on. */
  readonly liveClock: Clock;
  readonly liveness: NodeLiveness;
  readonly vmRecords: VmRecords;
  readonly withFacts: FacedRecords["withFacts"];
  readonly nodeRecords: NodeRecords;
  /** Nodes back after a lapse whose first report is not stored yet (see inventory.ts). */
  readonly backFromLapse: Set<string>;
  readonly logger?: Logger;
}

/** The inventory's calls on nodes, but the heartbeat. */
export type InventoryNodes = Pick<
  Inventory,
  "register" | "listNodes" | "getNode" | "readNode" | "cordon" | "remove"
>;

/** Creates the inventory's {@link InventoryNodes}. */
export function createInventoryNodes(deps: InventoryNodesDeps): InventoryNodes {
  const { store, clock, liveClock, liveness, vmRecords, withFacts, nodeRecords } = deps;
  const { backFromLapse } = deps;
  /** A node's record as stored (newest of the watch's and this process's own), or none. */
  const current = (seen: ReadonlyMap<string, Versioned>, id: string) => seen.get(id)?.rec;
  function summarize(rec: NodeRecord, now: number, live = liveness.view(idOf(rec), rec, now)) {
    return summarizeNode(rec, now, live);
  }
  return {
    register(info, owner, signal) {
      const id = nodeKey(info.id?.id ?? "");
      return nodeRecords.update(id, signal, (current) => {
        if (current !== undefined && current.owner !== owner) throw new RpcError("NODE_ID_TAKEN");
        const next = create(NodeRecordSchema, {
          ...(current ?? { registeredAtMs: BigInt(clock.now()) }),
          info,
          owner,
        });
        return { next, result: { created: current === undefined } };
      });
    },
    async listNodes(signal) {
      signal?.throwIfAborted();
      await liveness.ready();
      const now = liveClock.now();
      const out: NodeSummary[] = [];
      for (const rec of (await nodeRecords.records()).values()) out.push(summarize(rec, now));
      return out.sort((a, b) => compareIds(a.info?.id?.id ?? "", b.info?.id?.id ?? ""));
    },
    async getNode(id, signal) {
      signal?.throwIfAborted();
      const stored = current((await nodeRecords.follow()).values(), nodeKey(id));
      if (stored === undefined) return undefined;
      const rec = withFacts(stored, await vmRecords.all());
      await liveness.ready();
      return { summary: summarize(rec, liveClock.now()), vms: [...(rec.health?.vms ?? [])] };
    },
    async readNode(given, signal) {
      const id = nodeKey(given);
      const got = await getMessage(store, NodeRecordSchema, NODE_PREFIX + id, { signal });
      if (got === undefined) return undefined;
      nodeRecords.remember(id, got.modRevision, got.message);
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
    cordon(id, cordoned, signal, outOfService = false) {
      return nodeRecords.update(nodeKey(id), signal, (current) => {
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
    async remove(given, unchanged, signal) {
      const id = nodeKey(given);
      // Its agent's presence too: one a crashed process left would refuse the node's
      // NodeService reports (AGENT_REPORTS_NODE) if it joined again without an agent. Keyed as
      // the agent's certificate spells the node: under each spelling that may name it.
      const registered = (await nodeRecords.cachedVersion(id))?.message.info?.id?.id ?? "";
      const presence = [...new Set([given, id, registered].filter((n) => n !== ""))];
      const txn = await store.txn(
        {
          compares: [unchanged],
          success: [
            { type: "delete", key: NODE_PREFIX + id },
            ...presence.map((n) => ({ type: "delete" as const, key: AGENTS_PREFIX + n })),
          ],
        },
        { signal },
      );
      if (!txn.succeeded) return false;
      nodeRecords.remember(id, txn.revision, undefined);
      // The records its reports wrote on its word alone go with it, while it is not back.
      await dropVanished(
        store,
        vmRecords,
        await recordsOnWordAlone(id, vmRecords),
        { key: NODE_PREFIX + id, modRevision: 0 },
        deps.logger,
        signal,
      );
      backFromLapse.delete(id);
      return true;
    },
  };
}
