/**
 * The inventory's node records (`nodes/`): read from a watch-fed copy in
 * memory that shows this process's own writes at once, and changed by
 * compare-and-swap. Every part of the inventory reads and writes nodes
 * through one {@link NodeRecords}.
 */
import { type Logger, nodeKey, silentLogger } from "../core/index.js";
import {
  type NodeRecord,
  NodeRecordSchema,
  type VmRecord,
} from "../gen/debvisor/store/v1/records_pb.js";
import {
  decodeMessage,
  encodeMessage,
  getMessage,
  type KeyValue,
  type KvStore,
  LOST,
  mirrorPrefix,
  type PrefixMirror,
  retryWhileLost,
} from "../store/index.js";
import type { FacedRecords } from "./faced-records.js";
import { MIGRATION_LOCKS } from "./migration-record-keys.js";
import { followNodeRemovals } from "./node-removals.js";
import type { VmRecords } from "./vm-records.js";

/** Where node records are kept, under the node's key. */
export const NODE_PREFIX = "nodes/";
/** Compare-and-swap attempts before a contended update gives up with CONFLICT. */
export const MAX_ATTEMPTS = 8;

/** A node record with the store revision it was written at. */
export interface Versioned {
  readonly rev: number;
  readonly rec: NodeRecord;
}

/** What a change of one node record writes: `next` undefined writes nothing and answers `result`. */
export interface NodeRecordChange<T> {
  next: NodeRecord | undefined;
  result: T;
  /**
   * VM records written in the same transaction, each while still at `rev`; one `unmoved`
   * also only while no migration or failover holds the VM.
   */
  vms?: readonly { rec: VmRecord; rev: number; unmoved?: boolean }[];
}

/** The node records as this process knows them, and the one way it changes them. */
export interface NodeRecords {
  /** The mirror, loaded on first use; a failed load is retried by the next read. */
  follow(): Promise<PrefixMirror<Versioned>>;
  /** A node's record and revision from the mirror (usually current), or undefined. */
  cachedVersion(id: string): Promise<{ message: NodeRecord; modRevision: number } | undefined>;
  /** Notes a write (`rec` undefined: a delete) of this process at `rev`, shown at once. */
  remember(id: string, rev: number, rec: NodeRecord | undefined): void;
  /** Every node record as stored, VM tenants replaced by the control plane's. */
  records(): Promise<Map<string, NodeRecord>>;
  /** Read-modify-write of one node under compare-and-swap, retried when another writer got there first. */
  update<T>(
    id: string,
    signal: AbortSignal | undefined,
    change: (current: NodeRecord | undefined) => NodeRecordChange<T>,
  ): Promise<T>;
  /**
   * Calls `listener` with the id of each node whose record is deleted, by
   * this process or (seen by the watch) another, from the copy's first load
   * on; returns the function that stops it.
   */
  onRemoved(listener: (id: string) => void): () => void;
  /** Stops following the store. */
  close(): void;
}

/** What {@link createNodeRecords} works with. */
export interface NodeRecordsDeps {
  readonly store: KvStore;
  readonly vmRecords: VmRecords;
  readonly withFacts: FacedRecords["withFacts"];
  readonly logger?: Logger;
}

const decodeVersioned = (kv: KeyValue): Versioned => ({
  rev: kv.modRevision,
  rec: decodeMessage(NodeRecordSchema, kv),
});

/** Creates the {@link NodeRecords} of `deps.store`. */
export function createNodeRecords(deps: NodeRecordsDeps): NodeRecords {
  const { store, vmRecords, withFacts } = deps;
  /**
   * Reads are served from memory: a mirror of nodes/ kept by watch (other
   * daemons' writes) that shows this daemon's own writes at once, newest
   * revision wins. An own write is kept as the copy written, never decoded
   * again: one copy, shared with the stream that reported it (agent-session.ts).
   * With thousands of nodes of 20 VMs each, a second copy was a third of the
   * heap per agent stream.
   */
  let mirror: Promise<PrefixMirror<Versioned>> | undefined;
  let followed: PrefixMirror<Versioned> | undefined;
  const removedListeners: ((id: string) => void)[] = [];
  function follow(): Promise<PrefixMirror<Versioned>> {
    if (mirror === undefined) {
      const loading = mirrorPrefix(
        store,
        NODE_PREFIX,
        decodeVersioned,
        deps.logger ?? silentLogger,
        {
          revisionOf: (v) => v.rev,
        },
      );
      mirror = loading;
      loading.then(
        (m) => {
          followed = m;
          followNodeRemovals(m, (id) => {
            for (const l of removedListeners) l(id);
          });
        },
        () => {
          if (mirror === loading) mirror = undefined;
        },
      );
    }
    return mirror;
  }
  async function cachedVersion(id: string) {
    const best = (await follow()).values().get(id);
    return best === undefined ? undefined : { message: best.rec, modRevision: best.rev };
  }
  function remember(id: string, rev: number, rec: NodeRecord | undefined) {
    const value = rec === undefined ? undefined : { rev, rec };
    if (followed !== undefined) followed.wrote(id, rev, value);
    else
      follow().then(
        (m) => m.wrote(id, rev, value),
        () => undefined,
      );
  }
  return {
    follow,
    cachedVersion,
    remember,
    onRemoved(listener) {
      removedListeners.push(listener);
      return () => {
        const i = removedListeners.indexOf(listener);
        if (i >= 0) removedListeners.splice(i, 1);
      };
    },
    async records() {
      const seen = (await follow()).values();
      const facts = await vmRecords.all();
      const out = new Map<string, NodeRecord>();
      forStored(seen, (id, rec) => out.set(id, withFacts(rec, facts)));
      return out;
    },
    update(id, signal, change) {
      const key = NODE_PREFIX + id;
      return retryWhileLost(MAX_ATTEMPTS, async (attempt) => {
        // First try the copy in memory (usually current: this process wrote it or
        // the watch brought it); the compare-and-swap catches a stale one.
        const cached = attempt === 0 ? await cachedVersion(id) : undefined;
        const current = cached ?? (await getMessage(store, NodeRecordSchema, key, { signal }));
        const { next, result, vms = [] } = change(current?.message);
        if (next === undefined) return result;
        const writes = vms.map((v) => vmRecords.write(v.rec, v.rev));
        const txn = await store.txn(
          {
            compares: [
              { key, modRevision: current?.modRevision ?? 0 },
              ...writes.map((w) => w.compare),
              ...vms
                .filter((v) => v.unmoved === true)
                .map((v) => ({ key: MIGRATION_LOCKS + v.rec.id, modRevision: 0 })),
            ],
            success: [
              { type: "put", key, value: encodeMessage(NodeRecordSchema, next) },
              ...writes.map((w) => w.op),
            ],
          },
          { signal },
        );
        if (!txn.succeeded) return LOST;
        remember(id, txn.revision, next);
        for (const v of vms) vmRecords.remember(v.rec, txn.revision);
        return result;
      });
    },
    close() {
      void mirror?.then((m) => m.close());
    },
  };
}

/** Calls `each` with every node record as stored, in the watch's order. */
export function forStored(
  seen: ReadonlyMap<string, Versioned>,
  each: (id: string, rec: NodeRecord) => void,
): void {
  for (const [id, v] of seen) each(id, v.rec);
}

/** The node's id as its record names it. */
export function idOf(rec: NodeRecord): string {
  return nodeKey(rec.info?.id?.id ?? "");
}

/** Orders ids as the inventory's lists are sorted (by UTF-16 code unit). */
export function compareIds(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
