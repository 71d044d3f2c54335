import { Command } from "commander";
import { msFromTimestamp } from "../core/index.js";
import { StatusCode } from "../gen/debvisor/v1/common_pb.js";
import {
  PruneResultSchema,
  type SnapshotInfo,
  SnapshotInfoSchema,
  SnapshotStatusSchema,
  StorageService,
} from "../gen/debvisor/v1/storage_pb.js";
import type { CliContext } from "./cli-context.js";
import { EXIT, UsageError } from "./cli-errors.js";
import {
  checkLabel,
  DATASET_HELP,
  noteImplicitZfs,
  parseDataset,
  parseSnapshot,
  snapshotText,
} from "./dataset-args.js";
import { parseWhole } from "./duration.js";
import { withExamples } from "./help-text.js";
import {
  type Column,
  formatBytes,
  messageJson,
  renderColumns,
  shortAge,
  tableTime,
} from "./output.js";
import { allPages } from "./pages.js";

/** Why a snapshot is never pruned: held, protected, replication base; "" when none applies. */
export function inUse(s: SnapshotInfo): string {
  const why = [
    ...(s.userRefs > 0 || (s.held && !s.protected) ? ["held"] : []),
    ...(s.protected ? ["protected"] : []),
    ...(s.replicationBase ? ["replication base"] : []),
  ];
  return why.join(", ");
}

const age = (s: SnapshotInfo, now: number) =>
  s.created === undefined ? "-" : shortAge(now - msFromTimestamp(s.created));

/** The columns of a snapshot table (`snapshot list`, `snapshot prune`). */
function snapshotColumns(now: number, first = "NAME"): Column<SnapshotInfo>[] {
  return [
    { header: first, value: (s) => s.ref?.snapshotName ?? "" },
    { header: "AGE", value: (s) => age(s, now) },
    { header: "SIZE", value: (s) => formatBytes(s.sizeBytes) },
    { header: "IN USE", value: (s) => inUse(s) || "-" },
    { header: "LABEL", wide: true, value: (s) => s.labels.label ?? "-" },
    { header: "HOLDS", wide: true, value: (s) => String(s.userRefs) },
    { header: "CREATED", wide: true, value: (s) => tableTime(s.created) },
  ];
}

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

  withExamples(
    snapshot
      .command("prune")
      .description(
        "delete the snapshots a retention policy does not keep (never held, protected or replication-base ones)",
      )
      .argument("<dataset>", "zfs:POOL/NAME, rbd:POOL/IMAGE, or POOL/NAME (ZFS)")
      .option("--keep-last <n>", "keep the n newest")
      .option("--keep-daily <days>", "keep the newest of each of the last n UTC days")
      .option("--keep-weekly <weeks>", "keep the newest of each of the last n ISO weeks")
      .option("--label <label>", "consider only snapshots with this label, like daily")
      .option("--dry-run", "show what would be removed; remove nothing")
      .action(
        async (
          text: string,
          opts: {
            keepLast?: string;
            keepDaily?: string;
            keepWeekly?: string;
            label?: string;
            dryRun?: boolean;
          },
        ) => {
          const ctx = cli();
          const dataset = parseDataset("DATASET", text);
          const count = (flag: string, v: string | undefined) =>
            v === undefined ? 0 : parseWhole(flag, v, 0, 10_000);
          const policy = {
            keepLast: count("--keep-last", opts.keepLast),
            keepDailyDays: count("--keep-daily", opts.keepDaily),
            keepWeeklyWeeks: count("--keep-weekly", opts.keepWeekly),
          };
          if (policy.keepLast + policy.keepDailyDays + policy.keepWeeklyWeeks === 0)
            throw new UsageError(
              "the policy keeps nothing: give --keep-last, --keep-daily or --keep-weekly (at least 1)",
            );
          const label = opts.label === undefined ? "" : checkLabel("--label", opts.label);
          const dryRun = opts.dryRun === true;
          const r = await noteImplicitZfs(ctx.err, dataset, text, () =>
            ctx.client(StorageService).pruneSnapshots({
              dataset: dataset.ref,
              policy,
              dryRun,
              label,
            }),
          );
          if (r.status !== StatusCode.STATUS_OK) ctx.setExitCode(EXIT.other);
          const now = Date.now();
          ctx.print(messageJson(PruneResultSchema, r), () => {
            const removed =
              r.removed.length === 0
                ? `nothing ${dryRun ? "would be " : ""}removed\n`
                : renderColumns(
                    snapshotColumns(now, dryRun ? "WOULD REMOVE" : "REMOVED"),
                    r.removed,
                    ctx.wide,
                  );
            const kept =
              r.keptInUse.length === 0
                ? ""
                : `\n${renderColumns(snapshotColumns(now, "KEPT, IN USE"), r.keptInUse, ctx.wide)}`;
            return `${text}: ${r.message}\n\n${removed}${kept}`;
          });
        },
      ),
    "hvctl snapshot prune zfs:tank/vm-002-disk0 --keep-last 3 --dry-run",
    "hvctl snapshot prune zfs:tank/vm-002-disk0 --keep-last 2 --keep-daily 7 --keep-weekly 4",
    "hvctl snapshot prune tank/vm-002-disk0 --label daily --keep-daily 3 -o json",
  );
  return snapshot;
}
