/**
 * A node's summary as ListNodes, GetNode and the readiness and failover
 * passes show it: its record, its liveness and the totals of its VMs.
 */
import { timestampFromMs } from "../core/index.js";
import type { NodeRecord } from "../gen/debvisor/store/v1/records_pb.js";
import type { Timestamp } from "../gen/debvisor/v1/common_pb.js";
import { NodeReadiness, type NodeSummary, NodeSummarySchema } from "../gen/debvisor/v1/node_pb.js";
import type { LivenessView } from "./node-liveness.js";

/** The summary of the node of `rec` at `now` (liveness clock), `live` its liveness then. */
export function summarizeNode(rec: NodeRecord, now: number, live: LivenessView): NodeSummary {
  const heard = rec.receivedAtMs > 0n;
  // Shown only: the receiving process's clock, perhaps not this one's.
  const age = heard ? Math.max(0, now - Number(rec.receivedAtMs)) : undefined;
  const ready = live.ready;
  const { vcpus, memory, count, lastHeartbeat } = totalsOf(rec);
  // A literal rather than create(): proto3 messages are plain objects, and
  // ListNodes builds one per node per call. The record's info and health
  // objects are shared, as create() would share them.
  return {
    $typeName: NodeSummarySchema.typeName,
    info: rec.info,
    health: rec.health,
    readiness: ready ? NodeReadiness.READY : NodeReadiness.NOT_READY,
    lastHeartbeat,
    heartbeatAgeMs: BigInt(age ?? 0),
    cordoned: rec.cordoned,
    outOfService: rec.outOfService,
    vmCount: count,
    vcpusAllocated: vcpus,
    memoryAllocatedBytes: memory,
    notReadyForMs: BigInt(live.notReadyForMs),
    reportSkewMs: rec.reportSkewMs,
    usageHidden: false,
  } satisfies NodeSummary;
}

/** What a node's summary takes from its record alone. */
interface RecordTotals {
  readonly vcpus: number;
  readonly memory: bigint;
  readonly count: number;
  readonly lastHeartbeat: Timestamp | undefined;
}

/**
 * Totals by record object: records are never changed in place (a change is
 * a new record), and the readiness and failover passes summarize every node
 * every 2 s, each time adding up the same VMs.
 */
const totals = new WeakMap<NodeRecord, RecordTotals>();

function totalsOf(rec: NodeRecord): RecordTotals {
  const hit = totals.get(rec);
  if (hit !== undefined) return hit;
  let vcpus = 0;
  let memory = 0n;
  const vms = rec.health?.vms ?? [];
  for (const vm of vms) {
    vcpus += vm.vcpus;
    memory += vm.memoryBytes;
  }
  const lastHeartbeat =
    rec.receivedAtMs > 0n ? timestampFromMs(Number(rec.receivedAtMs)) : undefined;
  const out = { vcpus, memory, count: vms.length, lastHeartbeat };
  totals.set(rec, out);
  return out;
}
