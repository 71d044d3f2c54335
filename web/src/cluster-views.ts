import { type Migration, MigrationState } from "../../src/gen/debvisor/v1/migration_pb.js";
import { NodeReadiness, type NodeSummary } from "../../src/gen/debvisor/v1/node_pb.js";
import { type VmInfo, type VmOperation, VmState } from "../../src/gen/debvisor/v1/vm_pb.js";
import { api, describe, follow, watchList } from "./api.js";
import { barChart } from "./charts.js";
import { bytes, el, mount, progress, remount, table, toast } from "./dom.js";
import type { View } from "./main.js";
import { nodeCharts } from "./node-history.js";
import { createVmForm, vmLifecycle } from "./vm-views.js";

const readiness = (r: NodeReadiness) =>
  r === NodeReadiness.READY ? "ready" : r === NodeReadiness.NOT_READY ? "not ready" : "unknown";
export const vmState = (s: VmState) => VmState[s]?.toLowerCase() ?? String(s);
const migState = (s: MigrationState) => MigrationState[s]?.toLowerCase() ?? String(s);
const pct = (used: number, total: number) =>
  total === 0 ? "–" : `${Math.round((used / total) * 100)} %`;

/** A node table's cells: readiness, scheduling, capacity, load and VMs. */
export function nodeRows(nodes: NodeSummary[]) {
  return nodes.map((n) => {
    const id = n.info?.id?.id ?? "";
    const cap = n.info?.capacity;
    return [
      el("a", { href: `#/nodes/${encodeURIComponent(id)}` }, id),
      el(
        "span",
        { class: n.readiness === NodeReadiness.READY ? "ok" : "bad" },
        readiness(n.readiness),
      ),
      n.cordoned ? "cordoned" : "schedulable",
      `${n.vcpusAllocated} / ${cap?.cpuCores ?? 0} (${pct(n.vcpusAllocated, cap?.cpuCores ?? 0)})`,
      `${bytes(n.memoryAllocatedBytes)} / ${bytes(cap?.memoryBytes ?? 0n)}`,
      // Hidden where the caller sees only its tenant's VMs: the node's figures include others'.
      n.usageHidden ? "hidden" : `${(n.health?.cpuLoad ?? 0).toFixed(2)}`,
      n.usageHidden ? "hidden" : `${(n.health?.memUsedPct ?? 0).toFixed(0)} %`,
      String(n.vmCount),
    ];
  });
}
/** The headings of {@link nodeRows}. */
export const NODE_HEAD = [
  "Node",
  "Readiness",
  "Scheduling",
  "vCPUs allocated",
  "Memory allocated",
  "CPU load",
  "Memory used",
  "VMs",
];

/** One node: detail, cordon, drain with live progress. */
export async function nodeView(view: View, id: string): Promise<void> {
  const d = await api.nodes.getNode({ id: { id } }, { signal: view.signal });
  const s = d.summary;
  const status = el("div", { "data-testid": "drain-progress" });
  const cordon = async (on: boolean) => {
    try {
      await (on
        ? api.nodes.cordonNode({ id: { id }, reason: "from the panel" })
        : api.nodes.uncordonNode({ id: { id } }));
      toast(on ? `${id} cordoned` : `${id} uncordoned`);
      await nodeView(view, id);
    } catch (err) {
      toast(describe(err));
    }
  };
  const drain = () =>
    follow(
      (signal) => api.nodes.drainNode({ id: { id } }, { signal }),
      (p) =>
        mount(
          status,
          progress(
            `drain of ${id}`,
            p.total === 0 ? 100 : Math.round(((p.succeeded + p.failed) / p.total) * 100),
          ),
          el(
            "p",
            {},
            `${p.succeeded} moved, ${p.failed} failed, ${p.inFlight} moving of ${p.total}. ${p.message}`,
          ),
        ),
      view.signal,
      (m) => mount(status, el("p", { role: "alert" }, m)),
    );
  mount(
    view.main,
    el("h1", {}, `Node ${id}`),
    s === undefined ? null : table("Node", NODE_HEAD, nodeRows([s])),
    el("div", { class: "charts" }, nodeCharts(id)),
    el(
      "div",
      { class: "actions" },
      el(
        "button",
        { type: "button", onclick: () => cordon(!(s?.cordoned ?? false)) },
        s?.cordoned ? "Uncordon" : "Cordon",
      ),
      el("button", { type: "button", onclick: () => void drain() }, "Drain"),
    ),
    status,
    el("h2", {}, "VMs on this node"),
    table(
      "VMs",
      ["VM", "State", "Tenant", "vCPUs", "Memory"],
      d.vms.map((v) => [
        el("a", { href: `#/vms/${encodeURIComponent(v.id)}` }, v.id),
        vmState(v.state),
        v.tenant,
        v.vcpus,
        bytes(v.memoryBytes),
      ]),
    ),
  );
}

/** VMs the caller may see, live, with a filter and the create form. */
export async function vmsView(view: View): Promise<void> {
  let vms: VmInfo[] = [];
  const filter = el("input", {
    id: "vm-filter",
    type: "search",
    maxlength: 63,
  }) as HTMLInputElement;
  const body = el("div", {}, el("p", {}, "Loading…"));
  let synced = false;
  const draw = () => {
    if (!synced) return;
    const f = filter.value.trim().toLowerCase();
    const shown = vms
      .filter(
        (v) =>
          f === "" || v.id.includes(f) || v.name.toLowerCase().includes(f) || v.tenant.includes(f),
      )
      .sort((a, b) => a.id.localeCompare(b.id));
    mount(
      body,
      table(
        `${shown.length} VMs`,
        ["VM", "Name", "State", "Node", "Tenant", "vCPUs", "Memory", "HA"],
        shown.map((v) => [
          el("a", { href: `#/vms/${encodeURIComponent(v.id)}` }, v.id),
          v.name,
          vmState(v.state),
          v.nodeId?.id ?? "",
          v.tenant,
          v.vcpus,
          bytes(v.memoryBytes),
          v.ha ? "yes" : "no",
        ]),
        "vms",
      ),
    );
  };
  filter.addEventListener("input", draw);
  mount(
    view.main,
    el("h1", {}, "Virtual machines"),
    el("label", { for: "vm-filter" }, "Filter "),
    filter,
    body,
    await createVmForm(view),
  );
  void watchList(
    (since, signal) => api.watch.watchVms({ from: { sinceRevision: since } }, { signal }),
    (e) => e.vm,
    (v) => v.id,
    (list) => {
      vms = list;
      synced = true;
      draw();
    },
    view.signal,
    (m) => toast(m === "" ? "" : `VMs: ${m}`),
  );
}

/** Migrations with their progress. */
export function migrationTable(ms: Migration[]): HTMLElement {
  return table(
    "Migrations",
    ["Migration", "VM", "From", "To", "State", "Progress", "Message"],
    ms.map((m) => [
      m.migrationId.slice(0, 8),
      m.vm?.vmId ?? "",
      m.source?.nodeId?.id ?? "",
      m.target?.nodeId?.id ?? "",
      migState(m.state),
      progress(`migration of ${m.vm?.vmId}`, m.progressPct),
      m.message,
    ]),
    "migrations",
  );
}

/** One VM: detail, migrate with a plan preview showing every check, live progress. */
export async function vmView(view: View, id: string, last?: VmOperation): Promise<void> {
  let vm: Awaited<ReturnType<typeof api.vms.getVm>>;
  try {
    vm = await api.vms.getVm({ vmId: id }, { signal: view.signal });
  } catch (err) {
    mount(
      view.main,
      el("h1", {}, `VM ${id}`),
      el("p", { role: "alert", class: "error", "data-testid": "vm-error" }, describe(err)),
    );
    return;
  }
  const nodes = await api.nodes.listNodes({}, { signal: view.signal }).catch(() => undefined);
  const target = el(
    "select",
    { id: "target" },
    el("option", { value: "" }, "let the planner choose"),
    (nodes?.nodes ?? [])
      .map((n) => n.info?.id?.id ?? "")
      .filter((n) => n !== vm.nodeId?.id)
      .map((n) => el("option", { value: n }, n)),
  ) as HTMLSelectElement;
  const plan = el("div", { "data-testid": "plan" });
  const live = el("div", { "data-testid": "migration-progress", "aria-live": "polite" });
  const spec = () => ({
    vm: { vmId: id },
    ...(target.value === "" ? {} : { target: { nodeId: { id: target.value } } }),
  });
  const start = el(
    "button",
    { type: "button", disabled: true },
    "Start migration",
  ) as HTMLButtonElement;
  const preview = async () => {
    try {
      const p = await api.migrations.prepareMigration(spec(), { signal: view.signal });
      mount(
        plan,
        el(
          "p",
          {},
          p.allowed
            ? `Allowed: ${p.live ? "live" : "offline"} to ${p.target?.nodeId?.id ?? "?"} (${p.targetReason})`
            : `Not allowed: ${p.message}`,
        ),
        el(
          "ul",
          { class: "checks" },
          p.checks.map((c) =>
            el(
              "li",
              { class: c.passed ? "ok" : "bad" },
              `${c.passed ? "✔" : "✘"} ${c.name}${c.reason === "" ? "" : `: ${c.reason}`}`,
            ),
          ),
        ),
      );
      start.disabled = !p.allowed;
    } catch (err) {
      mount(plan, el("p", { role: "alert", class: "error" }, describe(err)));
    }
  };
  start.addEventListener("click", async () => {
    start.disabled = true;
    try {
      const m = await api.migrations.startMigration(spec(), { signal: view.signal });
      await follow(
        (signal) => api.migrations.watchMigration({ migrationId: m.migrationId }, { signal }),
        (u) =>
          mount(
            live,
            progress(`migration of ${id}`, u.progressPct),
            el("p", { "data-testid": "migration-state" }, `${migState(u.state)}: ${u.message}`),
          ),
        view.signal,
        (msg) => toast(msg),
      );
    } catch (err) {
      mount(live, el("p", { role: "alert", class: "error" }, describe(err)));
    }
  });
  mount(
    view.main,
    el("h1", {}, `VM ${vm.id}`),
    el(
      "dl",
      {},
      [
        "Name",
        vm.name,
        "State",
        vmState(vm.state),
        "Node",
        vm.nodeId?.id ?? "",
        "Tenant",
        vm.tenant,
        "vCPUs",
        String(vm.vcpus),
        "Memory",
        bytes(vm.memoryBytes),
        "HA",
        vm.ha ? "yes" : "no",
        "Live migratable",
        vm.liveMigratable ? "yes" : "no",
      ].map((t, i) => el(i % 2 === 0 ? "dt" : "dd", {}, t)),
    ),
    await vmLifecycle(view, vm, (op) => void vmView(view, id, op), last),
    el("h2", {}, "Migrate"),
    el("label", { for: "target" }, "Target node "),
    target,
    " ",
    el("button", { type: "button", onclick: () => void preview() }, "Preview plan"),
    " ",
    start,
    plan,
    live,
  );
}

const tsMs = (t: { seconds: bigint; nanos: number } | undefined) =>
  t === undefined ? 0 : Number(t.seconds) * 1000 + t.nanos / 1e6;

/** Throughput of each migration that moved bytes: bytes over the time from its start to its end (or now). */
export function throughput(ms: readonly Migration[], now = Date.now()) {
  return ms
    .filter((m) => m.bytesTransferred > 0n && m.created !== undefined)
    .map((m) => {
      const end = m.finished === undefined ? now : tsMs(m.finished);
      const secs = Math.max(0.001, (end - tsMs(m.created)) / 1000);
      return {
        name: `${m.vm?.vmId ?? "?"} ${m.migrationId.slice(0, 8)}`,
        value: Number(m.bytesTransferred) / secs,
      };
    });
}

/** Migrations, with the running ones followed live, and their throughput as a chart. */
export async function migrationsView(view: View): Promise<void> {
  const body = el("div");
  const chart = el("div");
  mount(view.main, el("h1", {}, "Migrations"), chart, body);
  const byId = new Map<string, Migration>();
  const draw = () => {
    const sorted = [...byId.values()].sort((a, b) =>
      Number((b.created?.seconds ?? 0n) - (a.created?.seconds ?? 0n)),
    );
    remount(
      chart,
      barChart(throughput(sorted).slice(0, 12), {
        title: "Migration throughput",
        format: (v) => `${bytes(v)}/s`,
        note: "newest 12 that moved data",
        testId: "chart-throughput",
      }),
    );
    remount(body, byId.size === 0 ? el("p", {}, "No migrations.") : migrationTable(sorted));
  };
  const list = await api.migrations.listMigrations({ pageSize: 100 }, { signal: view.signal });
  for (const m of list.migrations) byId.set(m.migrationId, m);
  draw();
  for (const m of list.migrations)
    if (m.state === MigrationState.RUNNING || m.state === MigrationState.PENDING)
      void follow(
        (signal) => api.migrations.watchMigration({ migrationId: m.migrationId }, { signal }),
        (u) => {
          byId.set(u.migrationId, u);
          draw();
        },
        view.signal,
      );
}
