// The SQLite backend's leases: granting, keeping alive and revoking them
// through the write queue, and a timer that ends the ones that expired.

import { randomBytes } from "node:crypto";
import type { Clock, Logger } from "../core/index.js";
import { RpcError } from "../core/index.js";
import type { Lease, StoreCallOptions, WatchEvent } from "./kv-store.js";
import { deleteLeaseKeys } from "./sqlite-apply.js";
import type { SqliteStatements } from "./sqlite-database.js";
import type { SqliteStoreState, SqliteWriteQueue } from "./sqlite-write-queue.js";

/** What {@link createSqliteLeases} needs from the store. */
export interface SqliteLeasesDeps {
  readonly stmt: SqliteStatements;
  readonly clock: Clock;
  readonly log: Logger;
  readonly state: SqliteStoreState;
  readonly writes: SqliteWriteQueue;
  /** How often expired leases are collected. */
  readonly sweepMs: number;
}

/** The lease part of the SQLite store. */
export interface SqliteLeases {
  /** See {@link KvStore.grantLease}. */
  grantLease(ttlMs: number, opts: StoreCallOptions | undefined): Promise<Lease>;
  /** A handle on lease `id`; see {@link KvStore.lease}. */
  lease(id: string, ttlMs: number): Lease;
  /** Stops the expiry timer. */
  stopSweep(): void;
}

/** Creates the lease part and starts its (unref'd) expiry timer. */
export function createSqliteLeases(deps: SqliteLeasesDeps): SqliteLeases {
  const { stmt, clock, log, state, writes } = deps;
  const enqueue = writes.enqueue;

  const sweep = setInterval(() => {
    if (state.closed) return;
    const expired = stmt.expired.all(clock.now()) as string[];
    for (const id of expired) {
      enqueue(
        (rev) =>
          stmt.leaseGet.get(id) === undefined
            ? { result: undefined, events: [], consumedRevision: false }
            : deleteLeaseKeys(stmt, id, rev),
        undefined,
      ).catch((err: unknown) => log.error({ err, lease: id }, "lease expiry failed"));
    }
  }, deps.sweepMs);
  sweep.unref();

  const makeLease = (id: string, ttlMs: number): Lease => ({
    id,
    ttlMs,
    keepAlive: async (opts) =>
      enqueue((): { result: undefined; events: WatchEvent[]; consumedRevision: boolean } => {
        if (stmt.leaseTouch.run({ now: clock.now(), id }).changes === 0)
          throw new RpcError("LEASE_NOT_FOUND");
        return { result: undefined, events: [], consumedRevision: false };
      }, opts),
    revoke: async (opts) =>
      enqueue((rev) => {
        if (stmt.leaseGet.get(id) === undefined) throw new RpcError("LEASE_NOT_FOUND");
        return deleteLeaseKeys(stmt, id, rev);
      }, opts),
  });

  return {
    async grantLease(ttlMs, opts) {
      if (!Number.isInteger(ttlMs) || ttlMs < 1)
        throw new TypeError("lease ttlMs must be a positive integer");
      const id = randomBytes(8).toString("hex");
      return enqueue<Lease>(() => {
        stmt.leaseInsert.run(id, ttlMs, clock.now() + ttlMs);
        return { result: makeLease(id, ttlMs), events: [], consumedRevision: false };
      }, opts);
    },
    lease: makeLease,
    stopSweep() {
      clearInterval(sweep);
    },
  };
}
