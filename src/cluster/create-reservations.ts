import { VmRecordSchema } from "../gen/debvisor/store/v1/records_pb.js";
import { decodeMessage, type KvStore, rangeAll } from "../store/index.js";
import type { Reserved } from "./free-capacity.js";
import type { Inventory } from "./inventory.js";

/**
 * The holder name of the capacity a VM's creation reserves on its node (in
 * the migrations' reservations), from the create operation's id.
 */
export function createHolder(operationId: string): string {
  return `create:${operationId}`;
}

/**
 * Capacity of created VMs that their nodes do not report yet and that no
 * reservation holds any more (their create settled before the node's next
 * report counted them), by node. Read from the store itself, after the
 * reservations were read: a create whose reservation was released is seen
 * by its record.
 */
export async function unreportedCreates(
  store: KvStore,
  inventory: Inventory,
  holders: ReadonlyMap<string, ReadonlySet<string>>,
  signal: AbortSignal,
): Promise<Map<string, Reserved>> {
  const out = new Map<string, Reserved>();
  for await (const kv of rangeAll(store, "vms/", { signal })) {
    const rec = decodeMessage(VmRecordSchema, kv);
    if (!rec.managed || rec.nodeId === "" || rec.spec === undefined) continue;
    if (holders.get(rec.nodeId)?.has(createHolder(rec.lastOperationId)) === true) continue;
    const reported = await inventory.findVm(rec.id, signal);
    if (reported !== undefined) continue;
    const had = out.get(rec.nodeId) ?? { vcpus: 0, memoryBytes: 0n };
    out.set(rec.nodeId, {
      vcpus: had.vcpus + rec.spec.vcpus,
      memoryBytes: had.memoryBytes + rec.spec.memoryBytes,
    });
  }
  return out;
}
