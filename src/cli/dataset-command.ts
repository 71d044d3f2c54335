import { Command, Option } from "commander";
import {
  type DatasetInfo,
  DatasetInfoSchema,
  StorageBackend,
  StorageService,
} from "../gen/debvisor/v1/storage_pb.js";
import type { CliContext } from "./cli-context.js";
import { datasetText, snapshotText } from "./dataset-args.js";
import { withExamples } from "./help-text.js";
import { type ListFlags, showList, withListFlags } from "./list-flags.js";
import { type Column, formatBytes, messageJson, type Style } from "./output.js";
import { replicationState } from "./replication-status.js";

const BACKENDS: Record<string, StorageBackend> = {
  zfs: StorageBackend.BACKEND_ZFS,
  rbd: StorageBackend.BACKEND_RBD,
};

/** `node-01 -> node-02 Succeeded`, one per job. */
const replications = (d: DatasetInfo, style: Style) =>
  d.replications
    .map(
      (r) => `${r.source?.id ?? "?"} -> ${r.target?.id ?? "?"} ${replicationState(r.state, style)}`,
    )
    .join(", ") || "-";

function datasetColumns(style: Style): Column<DatasetInfo>[] {
  return [
    // The name every storage command takes back: zfs:POOL/NAME or rbd:POOL/IMAGE.
    { header: "NAME", value: (d) => datasetText(d.dataset) },
    { header: "NODE", value: (d) => d.nodeId?.id || "-" },
    { header: "TENANT", value: (d) => d.tenant || "-" },
    { header: "VM", value: (d) => d.vmId || "-" },
    {
      header: "SIZE",
      value: (d) => (d.sizeBytes === 0n ? "-" : formatBytes(d.sizeBytes)),
      sort: (d) => d.sizeBytes,
    },
    {
      header: "SNAPSHOTS",
      value: (d) => (d.snapshotCount < 0 ? "?" : String(d.snapshotCount)),
      sort: (d) => d.snapshotCount,
    },
    { header: "REPLICATION", value: (d) => replications(d, style) },
    {
      header: "ORIGIN",
      wide: true,
      value: (d) => (d.origin === undefined ? "-" : snapshotText(d.origin)),
    },
  ];
}

/** `hvctl dataset list`: every ZFS dataset and RBD image the cluster knows. */
export function datasetCommand(cli: () => CliContext): Command {
  const dataset = new Command("dataset").description(
    "ZFS datasets and RBD images: the VMs' disks, clones and replicas",
  );
  withExamples(dataset, "hvctl dataset list", "hvctl dataset list --backend rbd -o json");
  withExamples(
    withListFlags(
      dataset
        .command("list")
        .description("list datasets with node, tenant, size, snapshots and replication")
        .addOption(
          new Option("--backend <backend>", "only this storage").choices(Object.keys(BACKENDS)),
        )
        .option("--node <node>", "only ZFS datasets on or replicated to this node"),
    ).action(async (opts: ListFlags & { backend?: string; node?: string }) => {
      const ctx = cli();
      const client = ctx.client(StorageService);
      await showList(ctx, {
        columns: datasetColumns(ctx.style),
        flags: opts,
        plural: "datasets",
        name: "dataset",
        json: (d) => messageJson(DatasetInfoSchema, d),
        key: (d) => datasetText(d.dataset),
        page: (pageToken) =>
          client
            .listDatasets({
              backend: BACKENDS[opts.backend ?? ""] ?? StorageBackend.BACKEND_UNKNOWN,
              nodeId: opts.node === undefined ? undefined : { id: opts.node },
              tenant: opts.tenant ?? "",
              pageToken,
            })
            .then((r) => ({ items: r.datasets, next: r.nextPageToken })),
      });
    }),
    "hvctl dataset list",
    "hvctl dataset list --backend zfs --node node-02 -o wide",
    "hvctl dataset list --sort-by size --tenant acme",
    "hvctl snapshot list zfs:tank/vm-002-disk0   # a NAME from the list, as printed",
  );
  return dataset;
}
