/*
 * `hvctl snapshot prune`: deletes the snapshots a retention policy does not
 * keep (or, with --dry-run, shows them), and the in-use ones it kept.
 */
import type { Command } from "commander";
import { StatusCode } from "../gen/debvisor/v1/common_pb.js";
import { PruneResultSchema, StorageService } from "../gen/debvisor/v1/storage_pb.js";
import type { CliContext } from "./cli-context.js";
import { EXIT, UsageError } from "./cli-errors.js";
import { checkLabel, noteImplicitZfs, parseDataset } from "./dataset-args.js";
import { parseWhole } from "./duration.js";
import { withExamples } from "./help-text.js";
import { messageJson, renderColumns } from "./output.js";
import { snapshotColumns } from "./snapshot-columns.js";

/** Adds `prune` to `hvctl snapshot`. */
export function addSnapshotPruneCommand(snapshot: Command, cli: () => CliContext): void {
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
}
