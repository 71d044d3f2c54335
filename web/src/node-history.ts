// Per-node CPU and memory samples kept in the browser from the node watch.
// The server keeps no history of them (a heartbeat replaces the last), so
// the charts start when the panel is opened (signed in); the history lasts
// as long as the session in this page does, whichever view shows. Bounded:
// one hour, a sample count per node and a node count.

import type { NodeSummary } from "../../src/gen/debvisor/v1/node_pb.js";
import { api, watchList } from "./api.js";
import { lineChart, type Series } from "./charts.js";

/** How far back the charts go. */
export const HISTORY_MS = 3_600_000;
/** Samples kept per node (an hour of 3 s heartbeats; faster ones keep a shorter window). */
const MAX_SAMPLES = 1200;
/** Nodes followed at most; others are left out of the charts. */
const MAX_NODES = 64;

interface Sample {
  readonly t: number;
  readonly cpu: number;
  readonly mem: number;
}

const byNode = new Map<string, Sample[]>();
/** When the panel began to record (the charts' note says so). */
export let recordingSince = Date.now();
let recording: AbortController | undefined;

/** Records from a node watch of its own until {@link stopRecording}; once per session. */
export function startRecording(): void {
  if (recording !== undefined) return;
  recording = new AbortController();
  recordingSince = Date.now();
  void watchList(
    (since, signal) => api.watch.watchNodes({ from: { sinceRevision: since } }, { signal }),
    (e) => e.node,
    (n) => n.info?.id?.id ?? "",
    (list) => recordNodes(list),
    recording.signal,
  );
}

/** Stops recording and forgets every sample (at sign-out: the next user sees only its own). */
export function stopRecording(): void {
  recording?.abort();
  recording = undefined;
  byNode.clear();
}

/** Records each node's newest heartbeat (by the server's receive time) once. */
export function recordNodes(nodes: readonly NodeSummary[], now = Date.now()): void {
  for (const n of nodes) {
    const id = n.info?.id?.id ?? "";
    const at = n.lastHeartbeat;
    // No usage to draw where it is hidden from the caller (usage_hidden).
    if (id === "" || at === undefined || n.health === undefined || n.usageHidden) continue;
    let list = byNode.get(id);
    if (list === undefined) {
      if (byNode.size >= MAX_NODES) continue;
      list = [];
      byNode.set(id, list);
    }
    const t = Number(at.seconds) * 1000 + Math.floor(at.nanos / 1e6);
    if (list.length > 0 && (list.at(-1)?.t ?? 0) >= t) continue;
    list.push({ t, cpu: n.health.cpuLoad, mem: n.health.memUsedPct });
    const from = now - HISTORY_MS;
    let drop = 0;
    while (drop < list.length && (list[drop]?.t ?? 0) < from) drop++;
    if (list.length - drop > MAX_SAMPLES) drop = list.length - MAX_SAMPLES;
    if (drop > 0) list.splice(0, drop);
  }
}

/** One series per node, sorted by node id: CPU load or memory used (%). */
export function nodeSeries(what: "cpu" | "mem"): Series[] {
  return [...byNode.entries()]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([name, list]) => ({ name, points: list.map((s) => [s.t, s[what]] as const) }));
}

const hhmm = (ms: number) => new Date(ms).toISOString().slice(11, 16);

/** The CPU and memory charts of every node, or of node `only`. */
export function nodeCharts(only?: string): HTMLElement[] {
  const which = only === undefined ? "per node" : `of ${only}`;
  return (
    [
      ["cpu", "CPU load", (y: number) => y.toFixed(2), undefined],
      ["mem", "Memory used", (y: number) => `${y.toFixed(0)} %`, 100],
    ] as const
  ).map(([what, title, format, yMax]) =>
    lineChart(
      nodeSeries(what).filter((s) => only === undefined || s.name === only),
      {
        title: `${title} ${which}`,
        format,
        yMax,
        note: `up to an hour, recorded since the panel opened at ${hhmm(recordingSince)} UTC`,
        testId: `chart-${what}`,
      },
    ),
  );
}
