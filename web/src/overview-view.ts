// The overview: what an operator must act on first (alerts), then nodes with
// readiness, capacity and CPU/memory charts, HA and conflicts, migrations in
// flight and the latest events. Everything follows watches.

import { type Event, EventSeverity } from "../../src/gen/debvisor/v1/event_pb.js";
import { type Migration, MigrationState } from "../../src/gen/debvisor/v1/migration_pb.js";
import { NodeReadiness, type NodeSummary } from "../../src/gen/debvisor/v1/node_pb.js";
import { type ReplicationJob, ReplicationState } from "../../src/gen/debvisor/v1/storage_pb.js";
import { type VmInfo, VmState } from "../../src/gen/debvisor/v1/vm_pb.js";
import { api, describe, follow, watchList } from "./api.js";
import { migrationTable, NODE_HEAD, nodeRows, vmState } from "./cluster-views.js";
import { el, eventTime, mount, remount, table, toast } from "./dom.js";
import type { View } from "./main.js";
import { nodeCharts, recordNodes } from "./node-history.js";

/** Failed migrations older than this are history, not alerts. */
const FAILED_MIGRATION_ALERT_MS = 24 * 3_600_000;
const EVENTS_SHOWN = 15;

const vmLink = (id: string) => el("a", { href: `#/vms/${encodeURIComponent(id)}` }, id);
const nodeLink = (id: string) => el("a", { href: `#/nodes/${encodeURIComponent(id)}` }, id);
const haDown = (v: VmInfo) =>
  v.ha &&
  v.state !== VmState.RUNNING &&
  v.state !== VmState.MIGRATING &&
  v.desiredState !== VmState.STOPPED;

/** What the overview has heard; undefined: not (yet) visible. */
interface Seen {
  nodes?: NodeSummary[];
  vms?: VmInfo[];
  jobs?: ReplicationJob[];
  failed?: Migration[];
}

/** The alerts: every item an operator must act on, with a link to it. */
function alerts(s: Seen, now: number): (Node | string)[][] {
  const out: (Node | string)[][] = [];
  for (const n of s.nodes ?? [])
    if (n.readiness !== NodeReadiness.READY) {
      const id = n.info?.id?.id ?? "";
      const since = Math.round(Number(n.notReadyForMs) / 1000);
      out.push([
        "Node not ready",
        nodeLink(id),
        `no heartbeat for ${since} s: down, cut off or fenced; its HA VMs fail over`,
      ]);
    }
  for (const v of s.vms ?? []) {
    if (v.staleCopyNodes.length > 0)
      out.push([
        "Conflict",
        vmLink(v.id),
        `runs on ${v.nodeId?.id ?? "?"}; stale copies on ${v.staleCopyNodes.join(", ")}`,
      ]);
    if (haDown(v)) out.push(["HA VM not running", vmLink(v.id), vmState(v.state)]);
  }
  for (const j of s.jobs ?? [])
    if (j.status?.state === ReplicationState.REPL_STATE_FAILED)
      out.push([
        "Replication failed",
        el("a", { href: "#/storage" }, j.jobId),
        `${j.status.consecutiveFailures} failed runs: ${j.status.lastError}${j.status.lastErrorReason === "" ? "" : ` (${j.status.lastErrorReason})`}`,
      ]);
  for (const m of s.failed ?? [])
    if (
      now - Number(m.finished?.seconds ?? m.updated?.seconds ?? 0n) * 1000 <
      FAILED_MIGRATION_ALERT_MS
    )
      out.push([
        "Migration failed",
        vmLink(m.vm?.vmId ?? ""),
        `${m.source?.nodeId?.id ?? "?"} → ${m.target?.nodeId?.id ?? "?"}: ${m.message}`,
      ]);
  return out;
}

/** Overview: alerts, nodes with charts, HA and conflicts, migrations and events, all live. */
export async function overviewView(view: View): Promise<void> {
  const seen: Seen = {};
  const alertBox = el("div", { "data-testid": "alerts" }, el("p", {}, "Loading…"));
  const nodes = el("div", {}, el("p", {}, "Loading…"));
  const charts = el("div", { class: "charts" });
  const ha = el("div", { "data-testid": "conflicts" }, el("p", {}, "Loading…"));
  const migs = el("div");
  const events = el("div", { "data-testid": "events" });
  const hidden = el("p", { class: "hint" });
  const drawAlerts = () => {
    const list = alerts(seen, Date.now());
    remount(
      alertBox,
      list.length === 0
        ? el("p", { class: "ok" }, "Nothing needs you now.")
        : table(`${list.length} to act on`, ["Alert", "What", "Why"], list, "alert-list"),
    );
  };
  // Drawn at most once a second: a large cluster's heartbeats arrive one node at a time.
  let chartsDue = false;
  const drawCharts = () => {
    if (chartsDue) return;
    chartsDue = true;
    setTimeout(() => {
      chartsDue = false;
      if (!view.signal.aborted) drawChartsNow();
    }, 500);
  };
  const drawChartsNow = () => remount(charts, nodeCharts());
  mount(
    view.main,
    el("h1", {}, "Overview"),
    el("h2", {}, "Alerts"),
    alertBox,
    hidden,
    el("h2", {}, "Nodes"),
    nodes,
    charts,
    el("h2", {}, "HA and conflicts"),
    ha,
    el("h2", {}, "Migrations in progress"),
    migs,
    el("h2", {}, "Recent events"),
    events,
  );
  const cannot: string[] = [];
  const refused = (what: string) => (m: string) => {
    if (m === "" || !/refused|not found/.test(m)) return;
    cannot.push(what);
    hidden.textContent = `Not shown, your roles do not allow it: ${cannot.join(", ")}.`;
  };
  void watchList(
    (since, signal) => api.watch.watchNodes({ from: { sinceRevision: since } }, { signal }),
    (e) => e.node,
    (n) => n.info?.id?.id ?? "",
    (list) => {
      const sorted = list.sort((a, b) =>
        (a.info?.id?.id ?? "").localeCompare(b.info?.id?.id ?? ""),
      );
      seen.nodes = sorted;
      recordNodes(sorted);
      const ready = sorted.filter((n) => n.readiness === NodeReadiness.READY).length;
      remount(
        nodes,
        el("p", { "data-testid": "node-count" }, `${sorted.length} nodes, ${ready} ready`),
        table("Nodes", NODE_HEAD, nodeRows(sorted), "nodes"),
      );
      drawCharts();
      drawAlerts();
    },
    view.signal,
    (m) => toast(m === "" ? "" : `nodes: ${m}`),
  );
  void watchList(
    (since, signal) => api.watch.watchVms({ from: { sinceRevision: since } }, { signal }),
    (e) => e.vm,
    (v) => v.id,
    (list) => {
      seen.vms = list;
      const conflicts = list.filter((v) => v.staleCopyNodes.length > 0);
      const haVms = list.filter((v) => v.ha);
      const down = haVms.filter(haDown);
      remount(
        ha,
        el(
          "p",
          { "data-testid": "ha-summary" },
          `${haVms.length} HA VMs, ${down.length} not running; ${conflicts.length} VMs with stale copies.`,
        ),
        conflicts.length === 0
          ? null
          : table(
              "VMs reported by more than one node",
              ["VM", "Runs on", "Stale copies on", "Tenant"],
              conflicts.map((v) => [
                vmLink(v.id),
                v.nodeId?.id ?? "",
                v.staleCopyNodes.join(", "),
                v.tenant,
              ]),
              "conflict-list",
            ),
        down.length === 0
          ? null
          : table(
              "HA VMs not running",
              ["VM", "State", "Node", "Tenant"],
              down.map((v) => [vmLink(v.id), vmState(v.state), v.nodeId?.id ?? "", v.tenant]),
            ),
      );
      drawAlerts();
    },
    view.signal,
    (m) => (m === "" ? null : mount(ha, el("p", { role: "alert" }, m))),
  );
  void watchList(
    (since, signal) =>
      api.watch.watchReplicationJobs({ from: { sinceRevision: since } }, { signal }),
    (e) => e.job,
    (j) => j.jobId,
    (list) => {
      seen.jobs = list;
      drawAlerts();
    },
    view.signal,
    refused("replication jobs"),
  );
  for (const state of [MigrationState.RUNNING, MigrationState.FAILED])
    void watchList(
      (since, signal) =>
        api.watch.watchMigrations({ list: { state }, from: { sinceRevision: since } }, { signal }),
      (e) => e.migration,
      (m) => m.migrationId,
      (list) => {
        if (state === MigrationState.FAILED) {
          seen.failed = list;
          drawAlerts();
        } else mount(migs, list.length === 0 ? el("p", {}, "None.") : migrationTable(list));
      },
      view.signal,
      state === MigrationState.FAILED ? refused("migrations") : (m) => mount(migs, el("p", {}, m)),
    );
  void recentEvents(view, events);
}

/** The newest events, then each new one as it is recorded. */
async function recentEvents(view: View, box: HTMLElement): Promise<void> {
  let shown: Event[] = [];
  const draw = () =>
    mount(
      box,
      shown.length === 0
        ? el("p", {}, "No events.")
        : table(
            "Newest first",
            ["Time", "Object", "Event", "Message"],
            shown.map((e) => [
              eventTime(e),
              e.objectId,
              el(
                "span",
                { class: e.severity === EventSeverity.WARNING ? "bad" : undefined },
                e.type,
              ),
              e.message,
            ]),
            "event-list",
          ),
    );
  let since = 0n;
  try {
    const r = await api.events.listEvents({ tail: EVENTS_SHOWN }, { signal: view.signal });
    shown = r.events.slice().reverse();
    since = r.revision;
    draw();
  } catch (err) {
    mount(box, el("p", { role: "alert" }, describe(err)));
    return;
  }
  await follow(
    (signal) => api.events.watchEvents({ sinceRevision: since }, { signal }),
    (e) => {
      since = e.revision > since ? e.revision : since;
      shown = [e, ...shown.filter((x) => x.revision !== e.revision)].slice(0, EVENTS_SHOWN);
      draw();
    },
    view.signal,
    (m) => toast(`events: ${m}`),
  );
}
