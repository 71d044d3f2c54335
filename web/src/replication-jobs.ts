// The storage page's replication jobs: a live list (watched) with each job's
// lag as a bar chart and in the table, drawn again as time passes, and a
// job's history on request.

import { EventObjectKind } from "../../src/gen/debvisor/v1/event_pb.js";
import { type ReplicationJob, ReplicationState } from "../../src/gen/debvisor/v1/storage_pb.js";
import { api, watchList } from "./api.js";
import { barChart } from "./charts.js";
import { el, mount, remount, table } from "./dom.js";
import type { View } from "./main.js";
import { objectEvents } from "./object-events.js";
import { datasetText, duration, replState, tsMs, when } from "./storage-text.js";

/**
 * How far a job's copy is behind, in seconds: the time since its last
 * successful run, or since it was planned when it never succeeded.
 */
const lagOf = (j: ReplicationJob, now: number) => {
  const last = tsMs(j.status?.lastSuccess) || tsMs(j.created) || now;
  return Math.max(0, (now - last) / 1000);
};
const neverRan = (j: ReplicationJob) => !tsMs(j.status?.lastSuccess);

/**
 * Watches the replication jobs into `jobs` (a job's history goes into
 * `history`) until the view's signal aborts.
 */
export function showReplicationJobs(view: View, jobs: HTMLElement, history: HTMLElement): void {
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
