/*
 * `hvctl snapshot`: create, list and delete snapshots here; prune is
 * snapshot-prune-command.ts and the snapshot table snapshot-columns.ts.
 */
import { Command } from "commander";
import {
  SnapshotInfoSchema,
  SnapshotStatusSchema,
  StorageService,
} from "../gen/debvisor/v1/storage_pb.js";
import type { CliContext } from "./cli-context.js";
import {
  checkLabel,
  DATASET_HELP,
  noteImplicitZfs,
  parseDataset,
  parseSnapshot,
  snapshotText,
} from "./dataset-args.js";
import { withExamples } from "./help-text.js";
import { messageJson, renderColumns } from "./output.js";
import { allPages } from "./pages.js";
import { snapshotColumns } from "./snapshot-columns.js";
import { addSnapshotPruneCommand } from "./snapshot-prune-command.js";

/** `hvctl snapshot ...`: snapshots of ZFS datasets and RBD images, and their retention. */
export function snapshotCommand(cli: () => CliContext): Command {
  const snapshot = new Command("snapshot")
    .description("snapshots of ZFS datasets and RBD images, and pruning them by a retention policy")
    .addHelpText("after", `\n${DATASET_HELP}.\n`);
  withExamples(
    snapshot,
    "hvctl snapshot list zfs:tank/vm-002-disk0",
    "hvctl snapshot prune zfs:tank/vm-002-disk0 --keep-last 3 --dry-run",
  );

  withExamples(
    snapshot
      .command("create")
      .description("take a snapshot, named LABEL-<UTC time>")
      .argument("<dataset>", "zfs:POOL/NAME, rbd:POOL/IMAGE, or POOL/NAME (ZFS)")
      .option("--label <label>", "the name's first part: letters, digits, _ . - (default manual)")
      .action(async (text: string, opts: { label?: string }) => {
        const ctx = cli();
        const dataset = parseDataset("DATASET", text);
        const label = opts.label === undefined ? "" : checkLabel("--label", opts.label);
        const r = await noteImplicitZfs(ctx.err, dataset, text, () =>
          ctx.client(StorageService).createSnapshot({ dataset: dataset.ref, label }),
        );
        ctx.print(
          messageJson(SnapshotStatusSchema, r),
          () => `snapshot ${snapshotText(r.snapshot)} created\n`,
        );
      }),
    "hvctl snapshot create zfs:tank/vm-002-disk0 --label before-upgrade",
    "hvctl snapshot create rbd:rbd/vm-001-disk0 -o json",
  );

  withExamples(
    snapshot
      .command("list")
      .description("list a dataset's snapshots, oldest first")
      .argument("<dataset>", "zfs:POOL/NAME, rbd:POOL/IMAGE, or POOL/NAME (ZFS)")
      .action(async (text: string) => {
        const ctx = cli();
        const dataset = parseDataset("DATASET", text);
        const client = ctx.client(StorageService);
        const snaps = await noteImplicitZfs(ctx.err, dataset, text, () =>
          allPages((pageToken) =>
            client
              .listSnapshots({ dataset: dataset.ref, pageSize: 500, pageToken })
              .then((r) => ({ items: r.snapshots, next: r.nextPageToken })),
          ),
        );
        const now = Date.now();
        ctx.print({ snapshots: snaps.map((s) => messageJson(SnapshotInfoSchema, s)) }, () =>
          snaps.length === 0
            ? `no snapshots of ${text}\n`
            : renderColumns(snapshotColumns(now), snaps, ctx.wide),
        );
      }),
    "hvctl snapshot list zfs:tank/vm-002-disk0",
    "hvctl snapshot list rbd:rbd/vm-001-disk0 -o wide",
    "hvctl snapshot list tank/vm-002-disk0 -o json | jq -r '.snapshots[].ref.snapshotName'",
  );

  withExamples(
    snapshot
      .command("delete")
      .description(
        "delete one snapshot (refused while held, cloned, or a replication job's incremental base)",
      )
      .argument("<snapshot>", "DATASET@NAME, or DATASET with NAME as the next argument")
      .argument("[name]", "the snapshot's name, when not given after @")
      .action(async (text: string, name: string | undefined) => {
        const ctx = cli();
        const snap = parseSnapshot("SNAPSHOT", text, name);
        const r = await noteImplicitZfs(ctx.err, snap, text, () =>
          ctx.client(StorageService).deleteSnapshot({ snapshot: snap.ref }),
        );
        ctx.print(
          messageJson(SnapshotStatusSchema, r),
          () => `snapshot ${snapshotText(r.snapshot ?? snap.ref)} deleted\n`,
        );
      }),
    "hvctl snapshot delete zfs:tank/vm-002-disk0@manual-20261122T140502Z",
    "hvctl snapshot delete rbd:rbd/vm-001-disk0 golden-20261122T140502Z",
  );
  addSnapshotPruneCommand(snapshot, cli);
  return snapshot;
}
