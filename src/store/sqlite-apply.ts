// The SQLite backend's write operations: applying puts and deletes (and a
// lease's end) to the tables and the event log at one revision. They run
// inside the write batch's transaction, never on their own.

import { RpcError } from "../core/index.js";
import type { TxnOp, WatchEvent } from "./kv-store.js";
import type { SqliteStatements } from "./sqlite-database.js";

/** The value of a delete event. */
export const EMPTY = new Uint8Array(0);

/** Applies one operation at `rev`; returns the event it caused, if any. */
export function applyOp(
  stmt: SqliteStatements,
  op: TxnOp,
  rev: number,
  idx: number,
): WatchEvent | undefined {
  if (op.type === "put") {
    if (op.lease !== undefined && stmt.leaseGet.get(op.lease) === undefined)
      throw new RpcError("LEASE_NOT_FOUND");
    stmt.upsert.run({ key: op.key, value: Buffer.from(op.value), rev, lease: op.lease ?? null });
    stmt.event.run(rev, idx, op.key, 0, Buffer.from(op.value));
    return { type: "put", key: op.key, value: op.value, revision: rev };
  }
  if (stmt.del.run(op.key).changes === 0) return undefined;
  stmt.event.run(rev, idx, op.key, 1, Buffer.alloc(0));
  return { type: "delete", key: op.key, value: EMPTY, revision: rev };
}

/** Applies `ops` in order at `rev`; returns the events they caused. */
export function applyOps(stmt: SqliteStatements, ops: readonly TxnOp[], rev: number): WatchEvent[] {
  const events: WatchEvent[] = [];
  ops.forEach((op, i) => {
    const e = applyOp(stmt, op, rev, i);
    if (e !== undefined) events.push(e);
  });
  return events;
}

/** Ends a lease at `rev`: deletes it and its keys (one revision if it had any). */
export function deleteLeaseKeys(stmt: SqliteStatements, leaseId: string, rev: number) {
  const keys = stmt.leaseKeys.all(leaseId) as string[];
  stmt.leaseDelete.run(leaseId);
  return {
    result: undefined,
    events: applyOps(
      stmt,
      keys.map((key) => ({ type: "delete" as const, key })),
      rev,
    ),
    consumedRevision: keys.length > 0,
  };
}
