import { Command, Option } from "commander";
import { type VmInfo, VmInfoSchema, VmService, VmState } from "../gen/debvisor/v1/vm_pb.js";
import type { CliContext } from "./cli-context.js";
import { UsageError } from "./cli-errors.js";
import { datasetText } from "./dataset-args.js";
import { withExamples } from "./help-text.js";
import {
  type Column,
  formatBytes,
  messageJson,
  renderColumns,
  renderFields,
  type Style,
} from "./output.js";
import { allPages } from "./pages.js";

const STATES: Record<string, VmState> = {
  running: VmState.RUNNING,
  stopped: VmState.STOPPED,
  paused: VmState.PAUSED,
  migrating: VmState.MIGRATING,
  crashed: VmState.CRASHED,
  unknown: VmState.UNKNOWN,
};

/** Running, Stopped, ... coloured for people on a terminal. */
export function vmState(state: VmState, style: Style): string {
  const name = VmState[state] ?? "UNSPECIFIED";
  const text = name.charAt(0) + name.slice(1).toLowerCase();
  if (state === VmState.RUNNING) return style.good(text);
  if (state === VmState.CRASHED) return style.bad(text);
  if (state === VmState.MIGRATING || state === VmState.PAUSED || state === VmState.UNKNOWN)
    return style.warn(text);
  return text;
}

/** As the storage commands take them (`zfs:tank/vm-002-disk0`, `rbd:rbd/vm-001-disk0`). */
const disks = (vm: VmInfo) => vm.disks.map(datasetText).join(",") || "-";

/** The VM's node, and any other node reporting a stale copy of it (a conflict). */
function nodeWithConflict(v: VmInfo): string {
  const node = v.nodeId?.id || "-";
  return v.staleCopyNodes.length === 0
    ? node
    : `${node} (conflict: stale copy on ${v.staleCopyNodes.join(", ")})`;
}

/** The columns of a VM table (`vm list`, and the VMs of `node get`). */
export function vmColumns(style: Style): Column<VmInfo>[] {
  return [
    { header: "ID", value: (v) => v.id },
    { header: "NAME", value: (v) => v.name || "-" },
    { header: "TENANT", value: (v) => v.tenant || "-" },
    { header: "STATE", value: (v) => vmState(v.state, style) },
    { header: "NODE", value: nodeWithConflict },
    { header: "VCPUS", value: (v) => String(v.vcpus) },
    { header: "MEMORY", value: (v) => formatBytes(v.memoryBytes) },
    { header: "HA", wide: true, value: (v) => (v.ha ? "yes" : "no") },
    { header: "LIVE MIGRATION", wide: true, value: (v) => (v.liveMigratable ? "yes" : "no") },
    { header: "CPU MODEL", wide: true, value: (v) => v.cpuModel || "-" },
    { header: "DISKS", wide: true, value: disks },
  ];
}

/** `hvctl vm ...`: the VM inventory. */
export function vmCommand(cli: () => CliContext): Command {
  const vm = new Command("vm").description("virtual machines in the inventory");
  withExamples(vm, "hvctl vm list", "hvctl vm get web-01");

  withExamples(
    vm
      .command("list")
      .description("list the VMs you may see")
      .option("--node <id>", "only VMs on this node")
      .addOption(
        new Option("--state <state>", "only VMs in this state").choices(Object.keys(STATES)),
      )
      .action(async (opts: { node?: string; state?: string }) => {
        const ctx = cli();
        const client = ctx.client(VmService);
        const vms = await allPages((pageToken) =>
          client
            .listVms({
              pageSize: 500,
              pageToken,
              ...(opts.node === undefined ? {} : { nodeId: { id: opts.node } }),
              state: STATES[opts.state ?? ""] ?? VmState.UNSPECIFIED,
            })
            .then((r) => ({ items: r.vms, next: r.nextPageToken })),
        );
        ctx.print({ vms: vms.map((v) => messageJson(VmInfoSchema, v)) }, () =>
          renderColumns(vmColumns(ctx.style), vms, ctx.wide),
        );
      }),
    "hvctl vm list",
    "hvctl vm list --node node-01 --state running -o wide",
  );

  withExamples(
    vm
      .command("get")
      .description("show one VM")
      .argument("<id>", "the VM id")
      .action(async (id: string) => {
        const ctx = cli();
        const v = await ctx.client(VmService).getVm({ vmId: id });
        ctx.print(messageJson(VmInfoSchema, v), () =>
          renderFields([
            ["id", v.id],
            ["name", v.name || "-"],
            ["tenant", v.tenant || "-"],
            ["state", vmState(v.state, ctx.style)],
            ["node", v.nodeId?.id || "-"],
            ["vcpus", String(v.vcpus)],
            ["memory", formatBytes(v.memoryBytes)],
            ["cpu model", v.cpuModel || "-"],
            ["ha", v.ha ? "yes" : "no"],
            ["live migration", v.liveMigratable ? "yes" : "no"],
            ["disks", disks(v)],
            ...(v.staleCopyNodes.length === 0
              ? []
              : [
                  [
                    "conflict",
                    `stale copy on ${v.staleCopyNodes.join(", ")} (being removed)`,
                  ] as const,
                ]),
          ]),
        );
      }),
    "hvctl vm get web-01",
    "hvctl vm get web-01 -o json",
  );

  withExamples(
    vm
      .command("set-tenant")
      .description(
        "assign a VM to a tenant (cluster-wide callers with vm:assign); reports never change it",
      )
      .argument("<id>", "the VM id")
      .argument("[tenant]", "the tenant; leave out with --none")
      .option("--none", "belong to no tenant (only cluster-wide callers see it)")
      .action(async (id: string, tenant: string | undefined, opts: { none?: boolean }) => {
        if ((tenant === undefined) === (opts.none !== true))
          throw new UsageError("give a tenant or --none, not both");
        const ctx = cli();
        const v = await ctx.client(VmService).setVmTenant({ vmId: id, tenant: tenant ?? "" });
        ctx.print(messageJson(VmInfoSchema, v), () =>
          v.tenant === ""
            ? `vm ${v.id} belongs to no tenant\n`
            : `vm ${v.id} belongs to tenant ${v.tenant}\n`,
        );
      }),
    "hvctl vm set-tenant web-01 acme",
    "hvctl vm set-tenant web-01 --none",
  );
  return vm;
}
