// The finished-operations sweep (cluster.operationRetentionMs) on SQLite:
// N finished operation records, then one sweep with none expired (the
// steady state, every quarter of the retention) and one with all expired
// (the first sweep after an upgrade). Reports each sweep's time, the longest
// gap of a 10 ms timer during it (how long the event loop was held: heartbeats
// wait that long), and the heap's growth.
//
//   node dist/bench/operation-sweep.js --operations 200000
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { create } from "@bufbuild/protobuf";
import { operationKey, pruneOperations } from "../src/cluster/index.js";
import { createManualClock, silentLogger } from "../src/core/index.js";
import {
  OperationPhase,
  OperationRecordSchema,
} from "../src/gen/debvisor/store/v1/agent_records_pb.js";
import { OperationKind, OperationOutcome } from "../src/gen/debvisor/v1/agent_pb.js";
import { createSqliteStore, encodeMessage, type TxnOp } from "../src/store/index.js";

const { values } = parseArgs({ options: { operations: { type: "string", default: "200000" } } });
const N = Math.min(2_000_000, Math.max(1, Number(values.operations)));
const HOUR = 3_600_000;

const dir = mkdtempSync(join(tmpdir(), "dv-bench-sweep-"));
const store = createSqliteStore({ path: join(dir, "state.db"), logger: silentLogger });
try {
  const now = Date.now();
  const clock = createManualClock(now);
  let batch: TxnOp[] = [];
  for (let i = 0; i < N; i++) {
    const id = `op-${i.toString(36).padStart(6, "0")}`;
    const node = `node-${i % 50}`;
    const rec = create(OperationRecordSchema, {
      dispatch: { operationId: id, kind: OperationKind.START_VM, vmId: `vm-${i % 500}` },
      nodeId: node,
      phase: OperationPhase.DONE,
      result: { operationId: id, outcome: OperationOutcome.SUCCEEDED, message: "ok" },
      requestedBy: "system",
      createdAtMs: BigInt(now - 30 * HOUR),
      updatedAtMs: BigInt(now - 30 * HOUR),
    });
    batch.push({
      type: "put",
      key: operationKey(node, id),
      value: encodeMessage(OperationRecordSchema, rec),
    });
    if (batch.length === 128) {
      await store.txn({ compares: [], success: batch });
      batch = [];
    }
  }
  if (batch.length > 0) await store.txn({ compares: [], success: batch });

  for (const [label, retentionMs] of [
    ["none expired", 48 * HOUR],
    ["all expired", 24 * HOUR],
  ] as const) {
    global.gc?.();
    let longest = 0;
    let last = performance.now();
    const tick = setInterval(() => {
      const t = performance.now();
      longest = Math.max(longest, t - last);
      last = t;
    }, 10);
    const heapBefore = process.memoryUsage().heapUsed;
    let peak = heapBefore;
    const mem = setInterval(() => {
      peak = Math.max(peak, process.memoryUsage().heapUsed);
    }, 50);
    const t0 = performance.now();
    const removed = await pruneOperations({ store, clock, retentionMs });
    const t1 = performance.now();
    clearInterval(tick);
    clearInterval(mem);
    longest = Math.max(longest, t1 - last);
    console.log(
      `${label}: ${N} operations, ${removed} removed in ${(t1 - t0).toFixed(0)} ms; longest timer gap ${longest.toFixed(0)} ms; heap +${((peak - heapBefore) / 1e6).toFixed(0)} MB`,
    );
  }
} finally {
  await store.close();
  rmSync(dir, { recursive: true, force: true });
}
