/*
 * `hvctl node`: the node noun with its read commands (list, get) and the
 * columns and fields they show; register and heartbeat are added from
 * node-registration.ts, remove, cordon, uncordon and drain from
 * node-maintenance.ts.
 */
import type { MessageInitShape } from "@bufbuild/protobuf";
import { Command, Option } from "commander";
import {
  type ListNodesRequestSchema,
  NodeDetailSchema,
  NodeReadiness,
  NodeService,
  type NodeSummary,
  NodeSummarySchema,
} from "../gen/debvisor/v1/node_pb.js";
import type { CliContext } from "./cli-context.js";
import { withExamples } from "./help-text.js";
import { type ListFlags, selectorText, showList, withListFlags } from "./list-flags.js";
import { addMaintenanceCommands } from "./node-maintenance.js";
import { addRegistrationCommands } from "./node-registration.js";
import {
  type Column,
  formatBytes,
  messageJson,
  renderColumns,
  renderFields,
  type Style,
  shortAge,
  tableTime,
} from "./output.js";
import { vmColumns } from "./vm-command.js";

const READINESS: Record<string, NodeReadiness> = {
  ready: NodeReadiness.READY,
  "not-ready": NodeReadiness.NOT_READY,
};

/** Ready / NotReady (,Cordoned or ,OutOfService), coloured for people on a terminal. */
export function nodeStatus(n: NodeSummary, style: Style): string {
  const ready = n.readiness === NodeReadiness.READY ? style.good("Ready") : style.bad("NotReady");
  if (n.outOfService) return `${ready},${style.warn("OutOfService")}`;
  return n.cordoned ? `${ready},${style.warn("Cordoned")}` : ready;
}

const lastSeen = (n: NodeSummary) =>
  n.lastHeartbeat === undefined ? "never" : `${shortAge(Number(n.heartbeatAgeMs))} ago`;
const pct = (v: number | undefined) => (v === undefined ? "-" : `${v.toFixed(0)}%`);
/** A node's own usage figure, or "hidden" where the caller sees only its tenant's VMs (usage_hidden). */
const usage = (n: NodeSummary, text: (h: NonNullable<NodeSummary["health"]>) => string) =>
  n.health === undefined ? "-" : n.usageHidden ? "hidden" : text(n.health);

function nodeColumns(style: Style): Column<NodeSummary>[] {
  return [
    { header: "ID", value: (n) => n.info?.id?.id ?? "" },
    { header: "HOSTNAME", value: (n) => n.info?.hostname ?? "" },
    { header: "IP", value: (n) => n.info?.ip ?? "" },
    { header: "ZONE", value: (n) => n.info?.zone ?? "" },
    { header: "RACK", value: (n) => n.info?.rack ?? "" },
    { header: "STATUS", value: (n) => nodeStatus(n, style) },
    {
      header: "LAST SEEN",
      value: lastSeen,
      volatile: true,
      sort: (n) =>
        n.lastHeartbeat === undefined ? Number.MAX_SAFE_INTEGER : Number(n.heartbeatAgeMs),
    },
    {
      header: "VMS",
      value: (n) => String(n.health?.vms.length ?? 0),
      sort: (n) => n.health?.vms.length ?? 0,
    },
    {
      header: "CPU LOAD",
      value: (n) => usage(n, (h) => h.cpuLoad.toFixed(2)),
      sort: (n) => n.health?.cpuLoad ?? -1,
      volatile: true,
    },
    {
      header: "MEM",
      wide: true,
      value: (n) => usage(n, (h) => pct(h.memUsedPct)),
      sort: (n) => n.health?.memUsedPct ?? -1,
    },
    {
      header: "DISK",
      wide: true,
      value: (n) => usage(n, (h) => pct(h.diskUsedPct)),
      sort: (n) => n.health?.diskUsedPct ?? -1,
    },
    { header: "CORES", wide: true, value: (n) => String(n.info?.capacity?.cpuCores ?? "-") },
    {
      header: "MEMORY",
      wide: true,
      value: (n) => (n.info?.capacity ? formatBytes(n.info.capacity.memoryBytes) : "-"),
      sort: (n) => n.info?.capacity?.memoryBytes ?? -1n,
    },
    { header: "VERSION", wide: true, value: (n) => n.info?.version || "-" },
    { header: "LABELS", wide: true, value: (n) => labels(n.info?.labels) },
  ];
}

const labels = (l: Record<string, string> | undefined) =>
  Object.entries(l ?? {})
    .map(([k, v]) => `${k}=${v}`)
    .join(",") || "-";

/** `hvctl node ...`: nodes of the cluster. */
export function nodeCommand(cli: () => CliContext): Command {
  const node = new Command("node").description("nodes of the cluster");
  withExamples(node, "hvctl node list", "hvctl node get node-01");

  withExamples(
    withListFlags(
      node
        .command("list")
        .description("list nodes with their last-known state")
        .option("--zone <zone>", "only nodes in this zone")
        .option("--rack <rack>", "only nodes in this rack")
        .addOption(
          new Option("--readiness <state>", "only ready or not-ready nodes").choices(
            Object.keys(READINESS),
          ),
        ),
      { watch: true, selector: true },
    ).action(async (opts: ListFlags & { zone?: string; rack?: string; readiness?: string }) => {
      const ctx = cli();
      const req: MessageInitShape<typeof ListNodesRequestSchema> = {
        zone: opts.zone ?? "",
        rack: opts.rack ?? "",
        selector: selectorText(opts.selector),
        tenant: opts.tenant ?? "",
        readiness: READINESS[opts.readiness ?? ""] ?? NodeReadiness.UNSPECIFIED,
        pageSize: 500,
      };
      const client = ctx.client(NodeService);
      await showList(ctx, {
        columns: nodeColumns(ctx.style),
        flags: opts,
        plural: "nodes",
        name: "node",
        json: (n) => messageJson(NodeSummarySchema, n),
        key: (n) => n.info?.id?.id ?? "",
        page: (pageToken) =>
          client
            .listNodes({ ...req, pageToken })
            .then((r) => ({ items: r.nodes, next: r.nextPageToken })),
        watch: {
          open: (watch, from, signal) => watch().watchNodes({ list: req, from }, { signal }),
          item: (e) => e.node,
        },
      });
    }),
    "hvctl node list",
    "hvctl node list --zone zone-a --readiness ready -o wide",
    "hvctl node list -l gpu=a100,tier!=test -o json | jq -r '.nodes[].info.id.id'",
    "hvctl node list --sort-by cpu-load",
    "hvctl node list --watch",
  );

  withExamples(
    node
      .command("get")
      .description("show one node: identity, capacity, health and its VMs")
      .argument("<id>", "the node id")
      .action(async (id: string) => {
        const ctx = cli();
        const d = await ctx.client(NodeService).getNode({ id: { id } });
        ctx.print(messageJson(NodeDetailSchema, d), () => {
          const n = d.summary;
          const info = n?.info;
          const cap = info?.capacity;
          const h = n?.health;
          const head = renderFields([
            ["id", info?.id?.id ?? id],
            ["hostname", info?.hostname || "-"],
            ["ip", info?.ip || "-"],
            ["zone / rack", `${info?.zone || "-"} / ${info?.rack || "-"}`],
            ["status", n === undefined ? "-" : nodeStatus(n, ctx.style)],
            [
              "last heartbeat",
              n === undefined ? "-" : `${tableTime(n.lastHeartbeat)} (${lastSeen(n)})`,
            ],
            ["report clock skew", n === undefined ? "-" : skewText(Number(n.reportSkewMs))],
            ["version", info?.version || "-"],
            [
              "capacity",
              cap === undefined
                ? "-"
                : `${cap.cpuCores} cores, ${formatBytes(cap.memoryBytes)} memory, ${formatBytes(cap.storageBytes)} storage`,
            ],
            [
              "health",
              h === undefined
                ? "-"
                : `${n?.usageHidden ? "cpu load, memory and disk hidden (they include other tenants' VMs)" : `cpu load ${h.cpuLoad.toFixed(2)}, memory ${pct(h.memUsedPct)}, disk ${pct(h.diskUsedPct)}`}, rtt ${h.netRttMs.toFixed(1)} ms${h.cephStatus ? `, ceph ${h.cephStatus}` : ""}`,
            ],
            ["labels", labels(info?.labels)],
          ]);
          const vms =
            d.vms.length === 0
              ? "\nno VMs\n"
              : `\n${renderColumns(vmColumns(ctx.style), d.vms, ctx.wide)}`;
          return head + vms;
        });
      }),
    "hvctl node get node-01",
    "hvctl node get node-01 -o yaml",
  );

  addRegistrationCommands(node, cli);
  addMaintenanceCommands(node, cli);
  return node;
}

/** A report's measured clock skew, for people: shown, never trusted. */
function skewText(ms: number): string {
  if (Math.abs(ms) < 1000) return `${ms} ms`;
  const s = (Math.abs(ms) / 1000).toFixed(1);
  return ms > 0 ? `${s} s ahead of the server` : `${s} s behind the server`;
}
