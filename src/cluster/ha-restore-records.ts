/**
 * The failover controller's per-VM records (failover/<vm>) as the HA restore
 * reads and writes them: which VMs are marked lost running (from a watched
 * copy, so the store is read only for those), a record as read, and writes
 * conditional on the controller's election and on the record as read.
 */
import { create, equals } from "@bufbuild/protobuf";
import { type Logger, silentLogger, timeoutSignal } from "../core/index.js";
import { type FailoverRecord, FailoverRecordSchema } from "../gen/debvisor/store/v1/records_pb.js";
import {
  type Compare,
  decodeMessage,
  encodeMessage,
  getMessage,
  type KvStore,
  mirrorPrefix,
  type PrefixMirror,
  settleWrite,
  type TxnOp,
} from "../store/index.js";

/** Key family of the controller's per-VM records: failover/<vm>. */
export const FAILOVER_RECORDS = "failover/";

/** Dependencies of {@link createHaRestoreRecords}. */
export interface HaRestoreRecordsDeps {
  readonly store: KvStore;
  /** The controller's election key as it was when this process was elected. */
  readonly elected: () => Compare;
  readonly logger?: Logger;
}

/** How long the read-back of a write that threw may take. */
const READ_BACK_TIMEOUT_MS = 10_000;

/**
 * What a write that threw does once its record is read back not as written:
 * leave it (etcd may still apply it), settle it (settleWrite: it never lands)
 * or send it once more.
 */
type IfLost = "leave" | "settle" | "again";

/** The failover records of the HA restore. */
export interface HaRestoreRecords {
  /** Whether the VM is marked lost running, from the watched copy (loaded on first use). */
  marked(vmId: string): Promise<boolean>;
  /** The VM's record (a new one when there is none) and its revision (0: none). */
  read(vmId: string, signal: AbortSignal): Promise<{ rec: FailoverRecord; rev: number }>;
  /**
   * Writes `next` while the election and the record as read hold; the new
   * revision, or 0. A mark or its clearing: one etcd still held when its
   * error came may land later, as it would have.
   */
  write(next: FailoverRecord, rev: number, signal: AbortSignal): Promise<number>;
  /**
   * Writes a decision to start (`next`, with `ops`) while the election, the
   * record as read and `also` hold; the new revision, or 0. One that threw
   * is settled (settleWrite): it either shows as written, and the start may
   * go, or it never lands, and the mark stays for a later pass. Landing after
   * its error was answered, it cleared the mark of a VM nothing started.
   */
  decide(
    next: FailoverRecord,
    rev: number,
    signal: AbortSignal,
    also: Compare[],
    ops: TxnOp[],
  ): Promise<number>;
  /**
   * Writes `next` while the record is still as this process's own decision
   * wrote it (`rev`), whoever leads now: a mark put back after a start that
   * did not happen. Under the election, a leader deposed while the start ran
   * (its lease out during a stall) had its put-back refused, and the next
   * leader, finding the mark cleared, never started the VM again. Another
   * write since (the next leader's) fails it; otherwise the record is as the
   * decision left it, and the mark is what any leader should find. One that
   * threw and is read back not yet written is sent once more: settled, a put-back
   * etcd still held would be made never to land, and the VM left down for good.
   */
  putBack(next: FailoverRecord, rev: number, signal: AbortSignal): Promise<number>;
  /** Stops the watched copy. */
  close(): void;
}

/** Creates the {@link HaRestoreRecords} over the store. */
export function createHaRestoreRecords(deps: HaRestoreRecordsDeps): HaRestoreRecords {
  const { store } = deps;
  /** Which VMs are marked, from a watched copy: the store is read only for those. */
  let mirror: Promise<PrefixMirror<boolean>> | undefined;
  const marked = async (vmId: string) => {
    if (mirror === undefined) {
      const loading = mirrorPrefix(
        store,
        FAILOVER_RECORDS,
        (kv) => decodeMessage(FailoverRecordSchema, kv).lostRunning,
        deps.logger ?? silentLogger,
      );
      mirror = loading;
      loading.catch(() => {
        if (mirror === loading) mirror = undefined;
      });
    }
    return (await mirror).values().get(vmId) === true;
  };
  async function read(vmId: string, signal: AbortSignal) {
    const got = await getMessage(store, FailoverRecordSchema, FAILOVER_RECORDS + vmId, { signal });
    return {
      rec: got?.message ?? create(FailoverRecordSchema, { vmId }),
      rev: got?.modRevision ?? 0,
    };
  }
  async function writeIf(
    next: FailoverRecord,
    rev: number,
    compares: Compare[],
    signal: AbortSignal,
    ifLost: IfLost,
    ops: TxnOp[] = [],
  ): Promise<number> {
    const key = FAILOVER_RECORDS + next.vmId;
    for (let attempt = 1; ; attempt++) {
      try {
        const txn = await store.txn(
          {
            compares: [{ key, modRevision: rev }, ...compares],
            success: [
              { type: "put", key, value: encodeMessage(FailoverRecordSchema, next) },
              ...ops,
            ],
          },
          { signal },
        );
        return txn.succeeded ? txn.revision : 0;
      } catch (err) {
        // An error after the commit (the reply lost, etcd restarting): what it wrote is there.
        // Taken as not written, a decision to start that committed (the mark cleared, the
        // start counted) started nothing, and no later pass would: the vm stayed down.
        // Not under the caller's signal: a controller stopping must still learn it wrote.
        const bound = { signal: timeoutSignal(READ_BACK_TIMEOUT_MS) };
        const now = await (ifLost === "settle"
          ? settleWrite(store, key, rev, bound)
          : store.get(key, bound)
        ).catch(() => undefined);
        if (
          now !== undefined &&
          equals(FailoverRecordSchema, decodeMessage(FailoverRecordSchema, now), next)
        )
          return now.modRevision;
        // Not written yet: once more (one etcd still holds, landing first, fails this one).
        if (ifLost === "again" && attempt === 1 && now?.modRevision === rev) continue;
        throw err;
      }
    }
  }
  return {
    marked,
    read,
    write: (next, rev, signal) => writeIf(next, rev, [deps.elected()], signal, "leave"),
    decide: (next, rev, signal, also, ops) =>
      writeIf(next, rev, [deps.elected(), ...also], signal, "settle", ops),
    putBack: (next, rev, signal) => writeIf(next, rev, [], signal, "again"),
    close() {
      void mirror?.then((m) => m.close());
    },
  };
}
