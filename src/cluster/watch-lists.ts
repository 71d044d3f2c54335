/**
 * The shared listings behind WatchService: one list watch each for nodes,
 * VMs, migrations and replication jobs, listed and tagged with their tenants
 * exactly as their List methods see them. Watchers filter these per call.
 */
import { type DescMessage, type MessageShape, toBinary } from "@bufbuild/protobuf";
import { type Migration, MigrationSchema } from "../gen/debvisor/v1/migration_pb.js";
import { type NodeSummary, NodeSummarySchema } from "../gen/debvisor/v1/node_pb.js";
import { type ReplicationJob, ReplicationJobSchema } from "../gen/debvisor/v1/storage_pb.js";
import { type VmInfo, VmInfoSchema } from "../gen/debvisor/v1/vm_pb.js";
import type { KvStore } from "../store/index.js";
import { createDatasetAccess } from "./dataset-access.js";
import type { Inventory } from "./inventory.js";
import { createListWatch, type ListWatch } from "./list-watch.js";
import { createMigrationRecords } from "./migration-records.js";
import { jobMessage } from "./replication-handlers.js";
import { createReplicationJobs } from "./replication-jobs.js";
import { listedVms } from "./vm-view.js";

/** Dependencies of {@link createWatchLists} (a subset of WatchServiceDeps). */
export interface WatchListsDeps {
  readonly inventory: Inventory;
  /** Where migrations, replication jobs and dataset records live. */
  readonly store: KvStore;
  /** As for VmService: a down node's VMs show unknown, then stopped. */
  readonly fenceDelayMs?: number;
  /** Tenants the access policy names, as for StorageService. */
  readonly policyTenants?: () => Iterable<string>;
  /** How often a watch lists again (default 1000 ms). */
  readonly intervalMs?: number;
}

/** The four watched lists, each shared by every watcher of its kind. */
export interface WatchLists {
  readonly nodes: ListWatch<NodeSummary>;
  readonly vms: ListWatch<VmInfo>;
  readonly migrations: ListWatch<Migration>;
  readonly replicationJobs: ListWatch<ReplicationJob>;
}

const bytes = <D extends DescMessage>(schema: D, m: MessageShape<D>) =>
  Buffer.from(toBinary(schema, m)).toString("latin1");

/** Builds the node, VM, migration and replication job list watches over the inventory and store. */
export function createWatchLists(deps: WatchListsDeps): WatchLists {
  const { inventory, intervalMs } = deps;
  const migrationRecords = createMigrationRecords(deps.store);
  const jobs = createReplicationJobs(deps.store);
  const access = createDatasetAccess({
    inventory,
    store: deps.store,
    policyTenants: deps.policyTenants,
  });

  const nodes = createListWatch<NodeSummary>({
    intervalMs,
    list: async (signal) =>
      (await inventory.listNodes(signal)).map((n) => ({
        key: n.info?.id?.id ?? "",
        item: n,
        tenants: [],
      })),
    // Ages grow on every look; a change is what the node reported or what it is.
    digest: (n) => bytes(NodeSummarySchema, { ...n, heartbeatAgeMs: 0n, notReadyForMs: 0n }),
  });
  const vms = createListWatch<VmInfo>({
    intervalMs,
    list: async (signal) =>
      (await listedVms(inventory, deps.fenceDelayMs, signal)).map((vm) => ({
        key: vm.id,
        item: vm,
        tenants: vm.tenant === "" ? [] : [vm.tenant],
      })),
    digest: (vm) => bytes(VmInfoSchema, vm),
  });
  const migrations = createListWatch<Migration>({
    intervalMs,
    list: async (signal) =>
      (await migrationRecords.list(signal))
        .filter((r) => r.record.migration !== undefined)
        .map((r) => ({
          key: r.record.migration?.migrationId ?? "",
          item: r.record.migration as Migration,
          tenants: r.record.tenant === "" ? [] : [r.record.tenant],
        }))
        .reverse(),
    digest: (m) => bytes(MigrationSchema, m),
  });
  const replicationJobs = createListWatch<ReplicationJob>({
    intervalMs,
    list: async (signal) => {
      const out = [];
      for (const j of await jobs.list(signal)) {
        const dataset = j.job.plan?.dataset;
        if (dataset === undefined) continue;
        const tenants = await access.tenants(dataset, signal);
        out.push({ key: j.job.jobId, item: jobMessage(j), tenants });
      }
      return out;
    },
    digest: (j) => bytes(ReplicationJobSchema, j),
  });
  return { nodes, vms, migrations, replicationJobs };
}
