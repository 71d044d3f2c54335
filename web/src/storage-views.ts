// Storage: datasets (ZFS and RBD), a dataset's snapshots with prune (a
// preview first, then the same policy for real), replication jobs with lag
// and history, and RBD images with their templates and clones. What the
// caller may not do shows as the API's refusal, in place.

import { EventObjectKind } from "../../src/gen/debvisor/v1/event_pb.js";
import {
  type DatasetRef,
  type ImageInfo,
  type PruneResult,
  type ReplicationJob,
  ReplicationState,
  type SnapshotInfo,
  StorageBackend,
} from "../../src/gen/debvisor/v1/storage_pb.js";
import { api, describe, watchList } from "./api.js";
import { barChart } from "./charts.js";
import { bytes, el, mount, remount, table } from "./dom.js";
import type { View } from "./main.js";
import { objectEvents } from "./object-events.js";

/** A dataset as hvctl writes it: zfs:POOL/NAME or rbd:POOL/IMAGE. */
export const datasetText = (d: DatasetRef | undefined) =>
  d === undefined
    ? ""
    : `${d.backend === StorageBackend.BACKEND_RBD ? "rbd" : "zfs"}:${d.pool}/${d.name}`;

function parseDataset(text: string): DatasetRef | undefined {
  const m = /^(zfs|rbd):([^/]+)\/(.+)$/.exec(text);
  if (m === null) return undefined;
  return {
    $typeName: "debvisor.v1.DatasetRef",
    backend: m[1] === "rbd" ? StorageBackend.BACKEND_RBD : StorageBackend.BACKEND_ZFS,
    pool: m[2] ?? "",
    name: m[3] ?? "",
  };
}

const refusal = (err: unknown) => el("p", { role: "alert", class: "error" }, describe(err));
const replState = (s: ReplicationState | undefined) =>
  ReplicationState[s ?? 0]?.replace("REPL_STATE_", "").toLowerCase() ?? "";
const tsMs = (t: { seconds: bigint; nanos: number } | undefined) =>
  t === undefined ? undefined : Number(t.seconds) * 1000 + t.nanos / 1e6;
const when = (ms: number | undefined) =>
  ms === undefined || ms === 0
    ? "never"
    : new Date(ms).toISOString().slice(0, 19).replace("T", " ");
/** Seconds as "42 s", "12 min", "3.5 h". */
export function duration(s: number): string {
  if (s < 120) return `${Math.round(s)} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}
/**
 * How far a job's copy is behind, in seconds: the time since its last
 * successful run, or since it was planned when it never succeeded.
 */
const lagOf = (j: ReplicationJob, now: number) => {
  const last = tsMs(j.status?.lastSuccess) || tsMs(j.created) || now;
  return Math.max(0, (now - last) / 1000);
};
const neverRan = (j: ReplicationJob) => !tsMs(j.status?.lastSuccess);

/** Storage: datasets, replication jobs (live, with lag), images with templates and clones. */
export async function storageView(view: View): Promise<void> {
  const datasets = el("div", { "data-testid": "datasets" }, el("p", {}, "Loading…"));
  const jobs = el("div", { "data-testid": "replication" }, el("p", {}, "Loading…"));
  const history = el("div", { "data-testid": "replication-history", "aria-live": "polite" });
  const images = el("div", { "data-testid": "images" }, el("p", {}, "Loading…"));
  mount(
    view.main,
    el("h1", {}, "Storage"),
    el("h2", {}, "Datasets"),
    datasets,
    el("h2", {}, "Replication jobs"),
    jobs,
    history,
    el("h2", {}, "Images, templates and clones"),
    images,
  );
  void drawDatasets(view, datasets);
  void drawImages(view, images);
  let list: ReplicationJob[] | undefined;
  const showHistory = async (jobId: string) =>
    mount(
      history,
      await objectEvents(EventObjectKind.REPLICATION, jobId, `History of ${jobId}`, view.signal),
    );
  const draw = () => {
    if (list === undefined) return;
    const now = Date.now();
    const sorted = list.slice().sort((a, b) => a.jobId.localeCompare(b.jobId));
    remount(
      jobs,
      sorted.length === 0
        ? el("p", {}, "No replication jobs.")
        : [
            barChart(
              sorted.map((j) => ({
                name: `${j.jobId}${neverRan(j) ? " (never ran)" : ""}`,
                value: lagOf(j, now),
              })),
              {
                title: "Replication lag",
                format: duration,
                note: "time since each job's last successful run, or since it was planned",
                testId: "chart-lag",
              },
            ),
            table(
              `${sorted.length} replication jobs`,
              ["Job", "Dataset", "From → to", "State", "Lag", "Runs", "Next run", "Last error", ""],
              sorted.map((j) => {
                const s = j.status;
                const lag = lagOf(j, now);
                return [
                  j.jobId,
                  datasetText(j.plan?.dataset),
                  `${j.plan?.source?.nodeId?.id ?? "?"} → ${j.plan?.target?.nodeId?.id ?? "?"}`,
                  el(
                    "span",
                    { class: s?.state === ReplicationState.REPL_STATE_FAILED ? "bad" : undefined },
                    replState(s?.state),
                  ),
                  `${duration(lag)}${neverRan(j) ? " (never ran)" : ""}`,
                  `${s?.successfulRuns ?? 0n} ok, ${s?.consecutiveFailures ?? 0} failed since`,
                  when(tsMs(s?.nextRun)),
                  s === undefined || s.lastError === ""
                    ? ""
                    : `${s.lastError}${s.lastErrorReason === "" ? "" : ` (${s.lastErrorReason})`}`,
                  el(
                    "button",
                    {
                      type: "button",
                      class: "link",
                      "aria-label": `History of ${j.jobId}`,
                      onclick: () => void showHistory(j.jobId),
                    },
                    "History",
                  ),
                ];
              }),
              "job-list",
            ),
          ],
    );
  };
  // Lag grows with time: draw again every 10 s while the page shows.
  const tick = setInterval(draw, 10_000);
  view.signal.addEventListener("abort", () => clearInterval(tick), { once: true });
  void watchList(
    (since, signal) =>
      api.watch.watchReplicationJobs({ from: { sinceRevision: since } }, { signal }),
    (e) => e.job,
    (j) => j.jobId,
    (l) => {
      list = l;
      draw();
    },
    view.signal,
    (m) => (m === "" ? undefined : mount(jobs, el("p", { role: "alert", class: "error" }, m))),
  );
}

async function drawDatasets(view: View, box: HTMLElement): Promise<void> {
  try {
    const all = [];
    let pageToken = "";
    for (let page = 0; page < 20; page++) {
      const r = await api.storage.listDatasets(
        { pageSize: 500, pageToken },
        { signal: view.signal },
      );
      all.push(...r.datasets);
      pageToken = r.nextPageToken;
      if (pageToken === "") break;
    }
    mount(
      box,
      all.length === 0
        ? el("p", {}, "No datasets.")
        : table(
            `${all.length} datasets`,
            ["Dataset", "Size", "Node", "Tenant", "VM", "Snapshots", "Replication"],
            all.map((d) => {
              const name = datasetText(d.dataset);
              return [
                el("a", { href: `#/storage/${encodeURIComponent(name)}` }, name),
                d.sizeBytes === 0n ? "?" : bytes(d.sizeBytes),
                d.nodeId?.id ?? "",
                d.tenant,
                d.vmId,
                d.snapshotCount < 0 ? "?" : String(d.snapshotCount),
                d.replications
                  .map((r) => `${r.target?.id ?? "?"}: ${replState(r.state)}`)
                  .join(", "),
              ];
            }),
            "dataset-list",
          ),
    );
  } catch (err) {
    mount(box, refusal(err));
  }
}

async function drawImages(view: View, box: HTMLElement): Promise<void> {
  const act = async (what: "flatten" | "delete", img: ImageInfo) => {
    const name = datasetText(img.image);
    if (what === "delete" && !confirm(`Delete image ${name} with its snapshots?`)) return;
    try {
      await (what === "flatten"
        ? api.storage.flattenImage({ image: img.image })
        : api.storage.deleteImage({ image: img.image }));
      await drawImages(view, box);
      box.prepend(
        el("p", { role: "status" }, `${name}: ${what === "flatten" ? "flattened" : "deleted"}`),
      );
    } catch (err) {
      box.prepend(refusal(err));
    }
  };
  const button = (what: "flatten" | "delete", img: ImageInfo) =>
    el(
      "button",
      {
        type: "button",
        "aria-label": `${what === "flatten" ? "Flatten" : "Delete"} ${datasetText(img.image)}`,
        onclick: () => void act(what, img),
      },
      what === "flatten" ? "Flatten" : "Delete",
    );
  try {
    const r = await api.storage.listImages({ pageSize: 500 }, { signal: view.signal });
    mount(
      box,
      r.images.length === 0
        ? el("p", {}, "No images.")
        : table(
            `${r.images.length} images`,
            ["Image", "Size", "Tenant", "VM", "Clone of", "Templates and their clones", "Actions"],
            r.images.map((i) => {
              const name = datasetText(i.image);
              return [
                name,
                bytes(i.sizeBytes),
                i.tenant,
                i.vmId,
                i.parent === undefined
                  ? ""
                  : `${datasetText(i.parent.dataset)}@${i.parent.snapshotName}`,
                i.templates
                  .map(
                    (t) =>
                      `@${t.snapshotName}: ${[...t.clones.map(datasetText), ...(t.hiddenClones > 0 ? [`${t.hiddenClones} hidden`] : [])].join(", ") || "no clones"}`,
                  )
                  .join("; "),
                el(
                  "span",
                  { class: "actions" },
                  i.parent === undefined ? null : button("flatten", i),
                  i.vmId !== "" ? null : button("delete", i),
                ),
              ];
            }),
            "image-list",
          ),
    );
  } catch (err) {
    mount(box, refusal(err));
  }
}

const snapshotRow = (s: SnapshotInfo) => [
  s.ref?.snapshotName ?? "",
  when(tsMs(s.created)),
  bytes(s.sizeBytes),
  [s.held ? "held" : "", s.protected ? "template" : "", s.replicationBase ? "replication base" : ""]
    .filter((x) => x !== "")
    .join(", "),
];
const SNAPSHOT_HEAD = ["Snapshot", "Created (UTC)", "Size", "In use"];

/** One dataset: its snapshots, and prune with a preview of what would go. */
export async function datasetView(view: View, text: string): Promise<void> {
  const dataset = parseDataset(text);
  if (dataset === undefined) {
    mount(view.main, el("h1", {}, "Dataset"), el("p", { role: "alert" }, `not a dataset: ${text}`));
    return;
  }
  const snaps = el("div", { "data-testid": "snapshots" }, el("p", {}, "Loading…"));
  const out = el("div", { "data-testid": "prune-result", "aria-live": "polite" });
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
