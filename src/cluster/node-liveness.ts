/**
 * Node liveness, renewed by heartbeats and read for readiness and
 * failover: from the last heartbeat's arrival on this process's clock, or
 * from store leases (the lease source's parts: `renew-lease-key.ts`,
 * `liveness-mirrors.ts`, `lease-liveness-view.ts`).
 */
import { type Clock, type Logger, silentLogger } from "../core/index.js";
import type { NodeRecord } from "../gen/debvisor/store/v1/records_pb.js";
import type { Compare, KvStore } from "../store/index.js";
import { createLeaseLivenessView } from "./lease-liveness-view.js";
import { createLivenessMirrors, type LivenessMirrorState } from "./liveness-mirrors.js";
import { decodeHeldKey, renewLeaseKey } from "./renew-lease-key.js";

/** A node's liveness as one process sees it. */
export interface LivenessView {
  readonly ready: boolean;
  /** How long the node has been NOT_READY, at least (0 while ready). */
  readonly notReadyForMs: number;
  /** NOT_READY for longer than the fence delay: its VMs may be restarted elsewhere. */
  readonly pastFenceDelay: boolean;
}

/** A liveness read from the store itself, for a decision. */
export interface LivenessCheck extends LivenessView {
  /** Compares that hold only while the node stays as checked (a renewal since fails them). */
  readonly compares: readonly Compare[];
}

/**
 * Which clock decides a node's liveness. `lease`: two store leases per node
 * kept alive by its heartbeats, so with etcd the store's server-side TTL
 * decides and no two processes' clocks are ever compared. `clock`: the time
 * the last heartbeat arrived, on the clock of the one process using the
 * store (the embedded SQLite store has exactly one).
 */
export type LivenessSource = "lease" | "clock";

/** Node liveness: renewed by heartbeats, read for readiness and failover. */
export interface NodeLiveness {
  readonly source: LivenessSource;
  /**
   * The node was heard from now; resolves once the store holds the renewal,
   * with true when its READY key was attached to a new lease rather than
   * kept alive: it had lapsed (the node was NOT_READY), or its lease was
   * revoked. A live lease of another process is kept alive: false.
   */
  renew(nodeId: string, signal?: AbortSignal): Promise<boolean>;
  /** Resolves once views are current (the lease source loads its copy first). */
  ready(): Promise<void>;
  /** The node's liveness now, from this process's copy. */
  view(nodeId: string, rec: NodeRecord, now: number): LivenessView;
  /** The node's liveness from the store itself, with the compares a failover's txn needs. */
  check(nodeId: string, rec: NodeRecord, now: number, signal?: AbortSignal): Promise<LivenessCheck>;
  /** The node was removed: drops what this process kept of it (its keys expire on their own). */
  forget(nodeId: string): void;
  /** How many nodes this process keeps bookkeeping for (tests and metrics). */
  tracked(): number;
  close(): void;
}

/** Options of {@link createNodeLiveness}. */
export interface NodeLivenessOptions {
  readonly source: LivenessSource;
  readonly store: KvStore;
  /** The clock of this process: for the `clock` source, and for how long the lease source has looked. */
  readonly clock: Clock;
  /** A node is READY this long after it was last heard from. */
  readonly ttlMs: number;
  /** NOT_READY this long, its VMs may restart elsewhere. */
  readonly fenceDelayMs: number;
  readonly logger?: Logger;
}

/** Keys of the lease source: READY while present. */
export const READY_PREFIX = "liveness/";
/** Keys of the lease source: present until the fence delay has passed after the node went NOT_READY. */
export const FENCE_PREFIX = "liveness-fence/";

/** Creates the {@link NodeLiveness} of `options.source`. */
export function createNodeLiveness(options: NodeLivenessOptions): NodeLiveness {
  return options.source === "lease" ? leaseLiveness(options) : clockLiveness(options);
}

/** Liveness from the arrival time of the last heartbeat, on this one process's clock. */
function clockLiveness(options: NodeLivenessOptions): NodeLiveness {
  const { ttlMs, fenceDelayMs } = options;
  const view = (_id: string, rec: NodeRecord, now: number): LivenessView => {
    // Any message counts, even a report whose content was refused.
    const heard = rec.receivedAtMs > 0n;
    const age = heard ? Math.max(0, now - Number(rec.receivedAtMs)) : undefined;
    const ready = age !== undefined && age <= ttlMs;
    const since = heard ? Number(rec.receivedAtMs) + ttlMs : Number(rec.registeredAtMs);
    const notReadyForMs = ready ? 0 : Math.max(0, now - since);
    return { ready, notReadyForMs, pastFenceDelay: !ready && notReadyForMs > fenceDelayMs };
  };
  return {
    source: "clock",
    renew: async () => false,
    ready: async () => {},
    view,
    check: async (id, rec, now) => ({ ...view(id, rec, now), compares: [] }),
    forget: () => {},
    tracked: () => 0,
    close: () => {},
  };
}

/**
 * Liveness from two leases per node, renewed by every heartbeat whichever
 * process receives it: `liveness/<node>` (TTL: the heartbeat TTL) says
 * READY; `liveness-fence/<node>` (TTL: heartbeat TTL + fence delay) is gone
 * once the node has been NOT_READY for the fence delay. Expiry is the
 * store's: etcd's leader, on its own clock, which it resets (extending every
 * lease) when leadership changes. For the first TTL + fence delay after
 * this process starts looking, no node is past its fence delay (leases lost
 * with a store, or not yet granted after an upgrade, must not read as a
 * long-dead node).
 */
function leaseLiveness(options: NodeLivenessOptions): NodeLiveness {
  const { store, clock, ttlMs, fenceDelayMs } = options;
  const logger = options.logger ?? silentLogger;
  /**
   * The fence lease is renewed at most once per `fenceEveryMs` by this
   * process, so its TTL is that much longer: it still never expires sooner
   * than TTL + fence delay after the last heartbeat, and at most
   * `fenceEveryMs` later. Half the TTL: with the default 3 heartbeats per
   * TTL, every other heartbeat (a third of the TTL was one heartbeat
   * interval, and heartbeats a few milliseconds late renewed it every time).
   */
  const fenceEveryMs = Math.floor(ttlMs / 2);
  const fenceTtlMs = ttlMs + fenceDelayMs + fenceEveryMs;
  /** When this process last renewed each node's fence lease (its own clock). */
  const fenceRenewed = new Map<string, number>();
  const state: LivenessMirrorState = { loaded: undefined, startedAt: 0, lostAt: new Map() };
  const { follow, close } = createLivenessMirrors(
    state,
    store,
    clock,
    logger,
    READY_PREFIX,
    FENCE_PREFIX,
  );
  const view = createLeaseLivenessView(state, fenceDelayMs, fenceTtlMs);

  return {
    source: "lease",
    async renew(nodeId, signal) {
      const [readyKeys, fenceKeys] = await follow();
      const now = clock.now();
      const fenceKey = fenceKeys.values().get(nodeId);
      const last = fenceRenewed.get(nodeId);
      const fenceDue = fenceKey === undefined || last === undefined || now - last >= fenceEveryMs;
      const [anew] = await Promise.all([
        renewLeaseKey(store, readyKeys, READY_PREFIX, nodeId, ttlMs, signal),
        fenceDue
          ? renewLeaseKey(store, fenceKeys, FENCE_PREFIX, nodeId, fenceTtlMs, signal)
          : undefined,
      ]);
      if (fenceDue) fenceRenewed.set(nodeId, now);
      return anew;
    },
    async ready() {
      await follow();
    },
    view(nodeId, _rec, now) {
      // Before the copy has loaded nothing is known: not ready, never past the fence delay.
      const { loaded } = state;
      if (loaded === undefined) {
        void follow();
        return { ready: false, notReadyForMs: 0, pastFenceDelay: false };
      }
      return view(nodeId, loaded[0].values().get(nodeId), loaded[1].values().get(nodeId), now);
    },
    async check(nodeId, _rec, now, signal) {
      await follow();
      const [readyKv, fenceKv] = await Promise.all([
        store.get(READY_PREFIX + nodeId, { signal }),
        store.get(FENCE_PREFIX + nodeId, { signal }),
      ]);
      const v = view(
        nodeId,
        readyKv === undefined ? undefined : decodeHeldKey(readyKv),
        fenceKv === undefined ? undefined : decodeHeldKey(fenceKv),
        now,
      );
      // The decision holds only while neither key came back (a heartbeat since renews them).
      return {
        ...v,
        compares: [
          { key: READY_PREFIX + nodeId, modRevision: readyKv?.modRevision ?? 0 },
          { key: FENCE_PREFIX + nodeId, modRevision: fenceKv?.modRevision ?? 0 },
        ],
      };
    },
    forget(nodeId) {
      fenceRenewed.delete(nodeId);
      state.lostAt.delete(nodeId);
    },
    tracked() {
      let n = fenceRenewed.size;
      for (const id of state.lostAt.keys()) if (!fenceRenewed.has(id)) n++;
      return n;
    },
    close,
  };
}
