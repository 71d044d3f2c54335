/**
 * The records of datasets the control plane created (clones), as a VM's
 * change of tenant carries them along: a VM given to another tenant takes
 * its disks with it. Left with the old tenant, a clone the VM boots from
 * was claimed by two tenants (the record's and the VM's), so contested:
 * neither the VM's new owner nor its old one could list or use it.
 */
import { create } from "@bufbuild/protobuf";
import { datasetKey } from "../drivers/index.js";
import type { VmRecord } from "../gen/debvisor/store/v1/records_pb.js";
import { DatasetRecordSchema } from "../gen/debvisor/store/v1/storage_records_pb.js";
import type { DatasetRef } from "../gen/debvisor/v1/storage_pb.js";
import {
  type Compare,
  encodeMessage,
  getMessage,
  type KvStore,
  type TxnOp,
} from "../store/index.js";

/** Where records of datasets the control plane created live. */
export const DATASETS_PREFIX = "storage/datasets/";

/**
 * The writes that give the records of the VM's disks held by its old tenant
 * (`from`) to `to`, with the compares that keep them as read; none when the
 * tenant does not change or the VM had none. The VM's disks as the control
 * plane's spec names them (at most 8), never as its node reports them: a
 * node (a stolen certificate) adding the old tenant's other clones to its
 * report would have had them given away with the VM. An unmanaged VM has
 * no spec: its disks stay with the old tenant (contested, cluster-wide only).
 */
export async function carryDiskRecords(
  store: KvStore,
  record: VmRecord | undefined,
  from: string,
  to: string,
  signal: AbortSignal | undefined,
): Promise<{ compares: Compare[]; ops: TxnOp[] }> {
  const out = { compares: [] as Compare[], ops: [] as TxnOp[] };
  if (from === "" || from === to) return out;
  const disks = new Map<string, DatasetRef>();
  for (const d of record?.spec?.disks ?? [])
    if (d.dataset !== undefined) disks.set(datasetKey(d.dataset), d.dataset);
  for (const key of disks.keys()) {
    const at = DATASETS_PREFIX + key;
    const got = await getMessage(store, DatasetRecordSchema, at, { signal });
    if (got === undefined || got.message.tenant !== from) continue;
    const moved = create(DatasetRecordSchema, { ...got.message, tenant: to });
    out.compares.push({ key: at, modRevision: got.modRevision });
    out.ops.push({ type: "put", key: at, value: encodeMessage(DatasetRecordSchema, moved) });
  }
  return out;
}
