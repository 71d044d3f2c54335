import { setImmediate, setTimeout as sleep } from "node:timers/promises";
import type { Clock, Logger } from "../core/index.js";
import {
  OperationPhase,
  OperationRecordSchema,
} from "../gen/debvisor/store/v1/agent_records_pb.js";
import { VmOperationIndexSchema } from "../gen/debvisor/store/v1/vm_operation_records_pb.js";
import {
  type Compare,
  decodeMessage,
  getMessage,
  type KeyValue,
  type KvStore,
  MAX_TXN_OPS,
  rangeAll,
} from "../store/index.js";
import { OPERATIONS_PREFIX, parseOperationKey } from "./agent-operations.js";
import { VM_OPERATIONS_PREFIX } from "./vm-operations.js";

/** One finished operation to remove: its keys, each as it was read. */
interface Removal {
  readonly compares: Compare[];
  readonly keys: string[];
}

/** Operations removed in one transaction at most (two compares and two deletes each). */
const PER_TXN = Math.max(1, Math.floor(MAX_TXN_OPS / 4));
/** Records read per page; each page's removals are made, and the event loop let go, before the next. */
const PAGE = 500;

/**
 * Removes operations that ended more than `retentionMs` ago by this
 * control plane's clock (`updated_at_ms`, written with the result): the
 * record under `operations/<node>/<id>` and, for a lifecycle operation, its
 * index `vm-operations/<id>` once the settler has audited it (an unsettled
 * one is kept: its outcome is not audited yet). Every delete is compared
 * with the version read, so a record changed meanwhile stays; other
 * processes may sweep at the same time. An operation without an outcome is
 * never removed, nor one whose record or index cannot be decoded. A page at
 * a time: the removals of each page are made before the next is read, and
 * the event loop is let go between pages (SQLite reads block it). Resolves
 * with how many were removed.
 */
export async function pruneOperations(options: {
  readonly store: KvStore;
  readonly clock: Clock;
  readonly retentionMs: number;
  readonly signal?: AbortSignal;
}): Promise<number> {
  const { store, signal } = options;
  const before = options.clock.now() - options.retentionMs;
  let removed = 0;
  let page: Removal[] = [];
  let read = 0;
  const flush = async () => {
    for (let i = 0; i < page.length; i += PER_TXN)
      removed += await removeAll(store, page.slice(i, i + PER_TXN), signal);
    page = [];
    await setImmediate(undefined, { signal });
  };
  for await (const kv of rangeAll(store, OPERATIONS_PREFIX, { signal, pageSize: PAGE })) {
    const removal = await removalOf(store, kv, before, signal);
    if (removal !== undefined) page.push(removal);
    if (++read % PAGE === 0) await flush();
  }
  await flush();
  return removed;
}

/** What removing the operation stored as `kv` takes, or undefined when it stays. */
async function removalOf(
  store: KvStore,
  kv: KeyValue,
  before: number,
  signal: AbortSignal | undefined,
): Promise<Removal | undefined> {
  const parsed = parseOperationKey(kv.key);
  if (parsed === undefined) return undefined;
  try {
    const rec = decodeMessage(OperationRecordSchema, kv);
    if (rec.phase !== OperationPhase.DONE || Number(rec.updatedAtMs) > before) return undefined;
    const removal: Removal = {
      compares: [{ key: kv.key, modRevision: kv.modRevision }],
      keys: [kv.key],
    };
    const indexKey = VM_OPERATIONS_PREFIX + parsed.operationId;
    const index = await getMessage(store, VmOperationIndexSchema, indexKey, { signal });
    if (index === undefined) return removal;
    // Not before its outcome is in the audit trail: telling it needs both (vm-operation-tell.ts).
    const told = index.message.settled && !index.message.telling;
    if (!told || index.message.nodeId !== parsed.nodeId) return undefined;
    removal.compares.push({ key: indexKey, modRevision: index.modRevision });
    removal.keys.push(indexKey);
    return removal;
  } catch (err) {
    if (signal?.aborted === true) throw err;
    return undefined; // undecodable record or index: left for an operator to look at
  }
}

/**
 * Removes `batch` in one transaction. When a compare fails (another process
 * swept or wrote meanwhile), the keys are read again and the unchanged
 * removals tried once more together; only if that fails too is the batch
 * halved until the changed one is alone (kept).
 */
async function removeAll(
  store: KvStore,
  batch: readonly Removal[],
  signal: AbortSignal | undefined,
  again = true,
): Promise<number> {
  if (batch.length === 0) return 0;
  const txn = await store.txn(
    {
      compares: batch.flatMap((r) => r.compares),
      success: batch.flatMap((r) => r.keys.map((key) => ({ type: "delete" as const, key }))),
    },
    { signal },
  );
  if (txn.succeeded) return batch.length;
  if (batch.length === 1) return 0;
  if (again) {
    const unchanged: Removal[] = [];
    for (const r of batch) {
      const now = await Promise.all(r.compares.map((c) => store.get(c.key, { signal })));
      if (r.compares.every((c, i) => now[i]?.modRevision === c.modRevision)) unchanged.push(r);
    }
    return removeAll(store, unchanged, signal, false);
  }
  const half = Math.ceil(batch.length / 2);
  return (
    (await removeAll(store, batch.slice(0, half), signal, false)) +
    (await removeAll(store, batch.slice(half), signal, false))
  );
}

/**
 * Runs {@link pruneOperations} now and every `intervalMs` (default: a
 * quarter of the retention, at most an hour) until `signal` aborts; a
 * failed sweep is logged and tried again at the next.
 */
export function startOperationRetention(options: {
  readonly store: KvStore;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly retentionMs: number;
  readonly intervalMs?: number;
  readonly signal: AbortSignal;
}): void {
  const { logger, signal } = options;
  const intervalMs = options.intervalMs ?? Math.min(3_600_000, Math.floor(options.retentionMs / 4));
  const loop = async () => {
    while (!signal.aborted) {
      try {
        const removed = await pruneOperations(options);
        if (removed > 0)
          logger.info({ removed }, "finished operations past their retention removed");
      } catch (err) {
        if (!signal.aborted) logger.warn({ err }, "finished operations not pruned; next sweep");
      }
      // Spread a little, so that processes started together do not sweep in step.
      const jittered = intervalMs * (0.9 + 0.2 * Math.random());
      await sleep(jittered, undefined, { signal, ref: false }).catch(() => {});
    }
  };
  void loop();
}
