// One dataset's page: its snapshots, and prune with a preview of what would
// go (a preview first, then the same policy for real).

import type { PruneResult, SnapshotInfo } from "../../src/gen/debvisor/v1/storage_pb.js";
import { api } from "./api.js";
import { bytes, el, mount, table } from "./dom.js";
import type { View } from "./main.js";
import { parseDataset, refusal, tsMs, when } from "./storage-text.js";

const snapshotRow = (s: SnapshotInfo) => [
  s.ref?.snapshotName ?? "",
  when(tsMs(s.created)),
  bytes(s.sizeBytes),
  [s.held ? "held" : "", s.protected ? "template" : "", s.replicationBase ? "replication base" : ""]
    .filter((x) => x !== "")
    .join(", "),
];
const SNAPSHOT_HEAD = ["Snapshot", "Created (UTC)", "Size", "In use"];

/** A number input (0 to 1000) with its label. */
const num = (id: string, label: string, value: number) => {
  const input = el("input", {
    id,
    name: id,
    type: "number",
    min: 0,
    max: 1000,
    value,
  }) as HTMLInputElement;
  return { input, nodes: [el("label", { for: id }, label), input] };
};
/** What a prune did (or, as a preview, would do): a summary, the removed and the kept-in-use snapshots. */
const result = (r: PruneResult, preview: boolean) => [
  el(
    "p",
    { "data-testid": "prune-summary" },
    preview
      ? `Would remove ${r.removedCount} snapshots${r.removedCount === 0 ? "" : " (below)"}; nothing has been removed yet.`
      : `Removed ${r.removedCount} snapshots.`,
  ),
  r.removed.length === 0
    ? null
    : table(
        preview ? "Would be removed" : "Removed",
        SNAPSHOT_HEAD,
        r.removed.map(snapshotRow),
        "prune-list",
      ),
  r.keptInUse.length === 0
    ? null
    : table(
        "Kept although outside the policy (in use)",
        SNAPSHOT_HEAD,
        r.keptInUse.map(snapshotRow),
      ),
];

/** One dataset: its snapshots, and prune with a preview of what would go. */
export async function datasetView(view: View, text: string): Promise<void> {
  const dataset = parseDataset(text);
  if (dataset === undefined) {
    mount(view.main, el("h1", {}, "Dataset"), el("p", { role: "alert" }, `not a dataset: ${text}`));
    return;
  }
  const snaps = el("div", { "data-testid": "snapshots" }, el("p", {}, "Loading…"));
  const out = el("div", { "data-testid": "prune-result", "aria-live": "polite" });
  const keepLast = num("keep-last", "Keep the newest", 3);
  const daily = num("keep-daily", "Keep one a day for days", 0);
  const weekly = num("keep-weekly", "Keep one a week for weeks", 0);
  const label = el("input", {
    id: "prune-label",
    name: "prune-label",
    maxlength: 80,
  }) as HTMLInputElement;
  const prune = el("button", { type: "button", disabled: true }, "Prune") as HTMLButtonElement;
  const request = (dryRun: boolean) => ({
    dataset,
    policy: {
      keepLast: Number(keepLast.input.value),
      keepDailyDays: Number(daily.input.value),
      keepWeeklyWeeks: Number(weekly.input.value),
    },
    label: label.value.trim(),
    dryRun,
  });
  const loadSnapshots = async () => {
    try {
      const all: SnapshotInfo[] = [];
      let pageToken = "";
      for (let page = 0; page < 20; page++) {
        const r = await api.storage.listSnapshots(
          { dataset, pageSize: 500, pageToken },
          { signal: view.signal },
        );
        all.push(...r.snapshots);
        pageToken = r.nextPageToken;
        if (pageToken === "") break;
      }
      mount(
        snaps,
        table(
          `${all.length} snapshots, oldest first`,
          SNAPSHOT_HEAD,
          all.map(snapshotRow),
          "snapshot-list",
        ),
      );
    } catch (err) {
      mount(snaps, refusal(err));
    }
  };
  // A preview holds only for the policy it showed: any change asks for a new one.
  let previewed = "";
  const changed = () => {
    if (JSON.stringify(request(false)) === previewed) return;
    prune.disabled = true;
    prune.textContent = "Prune";
  };
  for (const i of [keepLast.input, daily.input, weekly.input, label])
    i.addEventListener("input", changed);
  prune.addEventListener("click", async () => {
    prune.disabled = true;
    try {
      mount(
        out,
        result(await api.storage.pruneSnapshots(request(false), { signal: view.signal }), false),
      );
      await loadSnapshots();
    } catch (err) {
      mount(out, refusal(err));
    }
  });
  mount(
    view.main,
    el("h1", {}, `Dataset ${text}`),
    el("p", {}, el("a", { href: "#/storage" }, "All storage")),
    snaps,
    el("h2", {}, "Prune"),
    el(
      "form",
      {
        "aria-describedby": "prune-hint",
        onsubmit: async (e: Event) => {
          e.preventDefault();
          prune.disabled = true;
          try {
            const r = await api.storage.pruneSnapshots(request(true), { signal: view.signal });
            mount(out, result(r, true));
            previewed = JSON.stringify(request(false));
            prune.disabled = r.removedCount === 0;
            prune.textContent = `Prune ${r.removedCount} snapshots`;
          } catch (err) {
            mount(out, refusal(err));
          }
        },
      },
      el(
        "p",
        { id: "prune-hint", class: "hint" },
        "Keeps the union of the three rules; held, template and replication-base snapshots are never removed. Preview first; Prune then applies the policy the preview showed.",
      ),
      keepLast.nodes,
      daily.nodes,
      weekly.nodes,
      el("label", { for: "prune-label" }, "Only snapshots labelled"),
      label,
      el("button", { type: "submit" }, "Preview prune"),
      " ",
      prune,
    ),
    out,
  );
  await loadSnapshots();
}
