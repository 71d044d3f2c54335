/**
 * What the control plane holds of a VM beyond the nodes' reports, changed
 * through the inventory: its tenant and labels (AssignTenant, SetVmLabels),
 * and dev mode's seeding of tenants and specs.
 */
import { create } from "@bufbuild/protobuf";
import { type Clock, nodeKey, RpcError } from "../core/index.js";
import { type VmRecord, VmRecordSchema } from "../gen/debvisor/store/v1/records_pb.js";
import { type VmInfo, VmInfoSchema, VmState } from "../gen/debvisor/v1/vm_pb.js";
import {
  type Compare,
  getMessage,
  type KvStore,
  LOST,
  retryWhileLost,
  type TxnOp,
} from "../store/index.js";
import type { Inventory } from "./inventory.js";
import { MAX_ATTEMPTS } from "./node-records.js";
import { MAX_CLAIMS } from "./report-placement.js";
import { carryDiskRecords } from "./vm-disk-records.js";
import { type VmRecords, vmRecord } from "./vm-records.js";
import { specOfReported } from "./vm-spec.js";

const VMS = "vms/";
/** Labels one VM may carry. */
const MAX_LABELS = 64;

/** What {@link createInventoryVmFacts} works with. */
export interface InventoryVmFactsDeps {
  readonly store: KvStore;
  readonly clock: Clock;
  readonly vmRecords: VmRecords;
  /** One VM as the inventory lists it, or undefined (see inventory-vms.ts). */
  readonly placedVm: (vmId: string) => Promise<VmInfo | undefined>;
}

/** The inventory's changes of VM facts. */
export type InventoryVmFacts = Pick<Inventory, "assignTenant" | "setLabels" | "seedTenants">;

/** Creates the inventory's {@link InventoryVmFacts}. */
export function createInventoryVmFacts(deps: InventoryVmFactsDeps): InventoryVmFacts {
  const { store, clock, vmRecords, placedVm } = deps;
  /**
   * Changes what the control plane holds of a VM (tenant, labels) under
   * compare-and-swap; VM_NOT_FOUND for a VM neither reported nor recorded.
   * Answers the VM as now listed.
   */
  async function updateFacts(
    vmId: string,
    change: (prev: VmRecord | undefined) => Parameters<typeof vmRecord>[2],
    signal: AbortSignal | undefined,
    /** More to write with it, under its own compares (a change of tenant's disk records). */
    also?: (vm: { record: VmRecord | undefined; reported: VmInfo | undefined }) => Promise<{
      compares: Compare[];
      ops: TxnOp[];
    }>,
  ): Promise<VmInfo> {
    return retryWhileLost(MAX_ATTEMPTS, async () => {
      const got = await getMessage(store, VmRecordSchema, VMS + vmId, { signal });
      const reported = await placedVm(vmId);
      if (got === undefined && reported === undefined) throw new RpcError("VM_NOT_FOUND");
      const prev = got === undefined ? undefined : { rec: got.message, rev: got.modRevision };
      const rec = vmRecord(vmId, prev, {
        ...change(prev?.rec),
        nodeId: prev?.rec.nodeId || nodeKey(reported?.nodeId?.id ?? ""),
      });
      const w = vmRecords.write(rec, prev?.rev ?? 0);
      const more = (await also?.({ record: prev?.rec, reported })) ?? { compares: [], ops: [] };
      const txn = await store.txn(
        { compares: [w.compare, ...more.compares], success: [w.op, ...more.ops] },
        { signal },
      );
      if (!txn.succeeded) return LOST;
      vmRecords.remember(rec, txn.revision);
      const facts = { tenant: rec.tenant, labels: { ...rec.labels } };
      if (reported !== undefined) return { ...reported, ...facts };
      return create(VmInfoSchema, {
        id: vmId,
        ...facts,
        nodeId: rec.nodeId === "" ? undefined : { id: rec.nodeId },
      });
    });
  }
  return {
    assignTenant(vmId, tenant, by, signal) {
      return updateFacts(
        vmId,
        () => ({ tenant, tenantSetBy: by, tenantSetAtMs: BigInt(clock.now()) }),
        signal,
        // Its disks go with it: the records of those its old tenant's clones made.
        (vm) =>
          carryDiskRecords(
            store,
            vm.record,
            vm.record?.tenant || vm.reported?.tenant || "",
            tenant,
            signal,
          ),
      );
    },
    setLabels(vmId, set, remove, signal) {
      return updateFacts(
        vmId,
        (prev) => {
          const labels = { ...(prev?.labels ?? {}) };
          for (const key of remove) delete labels[key];
          Object.assign(labels, set);
          if (Object.keys(labels).length > MAX_LABELS)
            throw new RpcError("INVALID_ARGUMENT", {
              message: `labels: a VM has at most ${MAX_LABELS}`,
            });
          return { labels };
        },
        signal,
      );
    },
    async seedTenants(vms, by) {
      const known = await vmRecords.all();
      const fresh = vms
        .filter((vm) => (known.get(vm.id)?.rec.tenantSetBy ?? "") === "")
        .map((vm) => {
          const prev = known.get(vm.id);
          const full = "$typeName" in vm ? vm : undefined;
          const rec = vmRecord(vm.id, prev, {
            tenant: vm.tenant,
            tenantSetBy: by,
            tenantSetAtMs: BigInt(clock.now()),
            ...(full === undefined
              ? {}
              : {
                  managed: true,
                  managedBy: by,
                  managedAtMs: BigInt(clock.now()),
                  spec: specOfReported(full),
                  desiredState: full.state === VmState.RUNNING ? VmState.RUNNING : VmState.STOPPED,
                }),
          });
          return { rec, rev: prev?.rev ?? 0 };
        });
      // Only where no tenant was ever assigned, in batches; a batch that meets a change made
      // meanwhile goes one by one (and a VM assigned meanwhile keeps its assignment).
      for (let i = 0; i < fresh.length; i += MAX_CLAIMS) {
        const batch = fresh.slice(i, i + MAX_CLAIMS);
        for (const group of [batch, ...batch.map((r) => [r])]) {
          const w = group.map((r) => vmRecords.write(r.rec, r.rev));
          const txn = await store.txn({
            compares: w.map((x) => x.compare),
            success: w.map((x) => x.op),
          });
          if (txn.succeeded) for (const r of group) vmRecords.remember(r.rec, txn.revision);
          if (txn.succeeded && group === batch) break;
        }
      }
    },
  };
}
