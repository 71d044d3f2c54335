import type { MessageInitShape } from "@bufbuild/protobuf";
import { Command, Option } from "commander";
import {
  type ListVmsRequestSchema,
  type VmInfo,
  VmInfoSchema,
  VmService,
  VmState,
} from "../gen/debvisor/v1/vm_pb.js";
import type { CliContext } from "./cli-context.js";
import { UsageError } from "./cli-errors.js";
import { datasetText } from "./dataset-args.js";
import { withExamples } from "./help-text.js";
import { type ListFlags, selectorText, showList, withListFlags } from "./list-flags.js";
import { type Column, formatBytes, messageJson, renderFields, type Style } from "./output.js";
import { addVmLifecycleCommands } from "./vm-lifecycle-command.js";

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
const labelText = (l: Record<string, string>) =>
  Object.entries(l)
    .map(([k, v]) => `${k}=${v}`)
    .join(",") || "-";

/** The columns of a VM table (`vm list`, and the VMs of `node get`). */
export function vmColumns(style: Style): Column<VmInfo>[] {
  return [
    { header: "ID", value: (v) => v.id },
    { header: "NAME", value: (v) => v.name || "-" },
    { header: "TENANT", value: (v) => v.tenant || "-" },
    {
      header: "STATE",
      // A VM the store does not manage says so where everyone looks (vm adopt takes it in).
      value: (v) => `${vmState(v.state, style)}${v.managed ? "" : style.warn(" (unmanaged)")}`,
    },
    { header: "NODE", value: nodeWithConflict },
    { header: "VCPUS", value: (v) => String(v.vcpus), sort: (v) => v.vcpus },
    { header: "MEMORY", value: (v) => formatBytes(v.memoryBytes), sort: (v) => v.memoryBytes },
    { header: "HA", wide: true, value: (v) => (v.ha ? "yes" : "no") },
    { header: "LIVE MIGRATION", wide: true, value: (v) => (v.liveMigratable ? "yes" : "no") },
    { header: "CPU MODEL", wide: true, value: (v) => v.cpuModel || "-" },
    { header: "DISKS", wide: true, value: disks },
    { header: "LABELS", wide: true, value: (v) => labelText(v.labels) },
  ];
}

/** `hvctl vm ...`: the VM inventory. */
export function vmCommand(cli: () => CliContext): Command {
  const vm = new Command("vm").description("virtual machines: the inventory and their lifecycle");
  withExamples(
    vm,
    "hvctl vm list",
    "hvctl vm get web-01",
    "hvctl vm create web-07 --cpu 2 --memory 4GiB --new-disk rbd:rbd/web-07-disk0=20GiB",
    "hvctl vm stop web-07",
  );

  withExamples(
    withListFlags(
      vm
        .command("list")
        .description("list the VMs you may see")
        .option("--node <id>", "only VMs on this node")
        .addOption(
          new Option("--state <state>", "only VMs in this state").choices(Object.keys(STATES)),
        ),
      { watch: true, selector: true },
    ).action(async (opts: ListFlags & { node?: string; state?: string }) => {
      const ctx = cli();
      const req: MessageInitShape<typeof ListVmsRequestSchema> = {
        pageSize: 500,
        ...(opts.node === undefined ? {} : { nodeId: { id: opts.node } }),
        state: STATES[opts.state ?? ""] ?? VmState.UNSPECIFIED,
        selector: selectorText(opts.selector),
        tenant: opts.tenant ?? "",
      };
      const client = ctx.client(VmService);
      await showList(ctx, {
        columns: vmColumns(ctx.style),
        flags: opts,
        plural: "vms",
        name: "vm",
        json: (v) => messageJson(VmInfoSchema, v),
        key: (v) => v.id,
        page: (pageToken) =>
          client
            .listVms({ ...req, pageToken })
            .then((r) => ({ items: r.vms, next: r.nextPageToken })),
        watch: {
          open: (watch, from, signal) => watch().watchVms({ list: req, from }, { signal }),
          item: (e) => e.vm,
        },
      });
    }),
    "hvctl vm list",
    "hvctl vm list --node node-01 --state running -o wide",
    "hvctl vm list --sort-by memory --tenant acme",
    "hvctl vm list -l tier=web --watch",
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
            ["managed", v.managed ? "yes" : "no (adopt it with vm adopt)"],
            ["desired state", v.managed ? vmState(v.desiredState, ctx.style) : "-"],
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

  withExamples(
    vm
      .command("label")
      .description(
        "set (key=value) or remove (key-) labels of a VM, which selectors (-l) match; the others stay",
      )
      .argument("<id>", "the VM id")
      .argument("<labels...>", "key=value to set, key- to remove")
      .action(async (id: string, labels: string[]) => {
        const set: Record<string, string> = {};
        const remove: string[] = [];
        for (const l of labels) {
          const eq = l.indexOf("=");
          if (eq > 0) set[l.slice(0, eq)] = l.slice(eq + 1);
          else if (l.endsWith("-") && l.length > 1) remove.push(l.slice(0, -1));
          else throw new UsageError(`labels: expected key=value or key-, got "${l}"`);
        }
        const ctx = cli();
        const v = await ctx.client(VmService).setVmLabels({ vmId: id, set, remove });
        ctx.print(
          messageJson(VmInfoSchema, v),
          () => `vm ${v.id} labels: ${labelText(v.labels)}\n`,
        );
      }),
    "hvctl vm label web-01 tier=web env=prod",
    "hvctl vm label web-01 env-",
    "hvctl vm list -l tier=web,env!=prod",
  );
  addVmLifecycleCommands(vm, cli);
  return vm;
}
