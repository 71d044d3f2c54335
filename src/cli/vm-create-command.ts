/*
 * `hvctl vm create`: a VM from a spec, with disks that exist (--disk) or are
 * created with it (--new-disk), followed to its end like every lifecycle
 * operation.
 */
import type { Command } from "commander";
import { type VmDisk, VmService } from "../gen/debvisor/v1/vm_pb.js";
import type { CliContext } from "./cli-context.js";
import { UsageError } from "./cli-errors.js";
import { DATASET_HELP, parseDataset } from "./dataset-args.js";
import { parseBytes, parseWhole } from "./duration.js";
import { followOperation } from "./follow-operation.js";
import { withExamples } from "./help-text.js";
import { noWaitOption, requestIdOption } from "./vm-operation-options.js";

const collect = (value: string, previous: string[] = []) => [...previous, value];

/** Disks from `--disk DATASET` (existing) and `--new-disk DATASET=SIZE` (created with the VM). */
function parseDisks(existing: string[], fresh: string[]): VmDisk[] {
  const out: VmDisk[] = existing.map((d) => ({
    $typeName: "debvisor.v1.VmDisk",
    dataset: parseDataset("--disk", d).ref,
    sizeBytes: 0n,
  }));
  for (const d of fresh) {
    const eq = d.lastIndexOf("=");
    if (eq < 0) throw new UsageError(`--new-disk: expected DATASET=SIZE, got "${d}"`);
    const sizeBytes = parseBytes("--new-disk", d.slice(eq + 1));
    // Size 0 is how the API names an existing disk: sent, it would attach one, not create it.
    if (sizeBytes === 0n)
      throw new UsageError(
        `--new-disk: "${d}" has no size; give one (at least 1MiB), or attach an existing dataset with --disk`,
      );
    out.push({
      $typeName: "debvisor.v1.VmDisk",
      dataset: parseDataset("--new-disk", d.slice(0, eq)).ref,
      sizeBytes,
    });
  }
  return out;
}

/** Adds `create` to `hvctl vm`. */
export function addVmCreateCommand(vm: Command, cli: () => CliContext): void {
  withExamples(
    vm
      .command("create")
      .description(`create a VM from a spec (its node defines it); ${DATASET_HELP}`)
      .argument("<id>", "the new VM's id")
      .requiredOption("--cpu <n>", "vCPUs")
      .requiredOption("--memory <size>", "memory, like 2GiB")
      .option("--disk <dataset>", "attach an existing dataset or image (repeatable)", collect)
      .option("--new-disk <dataset=size>", "create a disk with the VM (repeatable)", collect)
      .option("--ha", "restart it elsewhere when its node fails")
      .option("--node <id>", "where (default: the roomiest node that passes every check)")
      .option("--tenant <name>", "the tenant it belongs to (default: yours)")
      .option("--name <text>", "a display name")
      .option("--cpu-model <model>", "a named CPU model, host-model (default) or host-passthrough")
      .option("--start", "start it once defined")
      .addOption(requestIdOption())
      .addOption(noWaitOption())
      .action(async (id: string, opts: Record<string, unknown>) => {
        const ctx = cli();
        const op = await ctx.client(VmService).createVm({
          vmId: id,
          spec: {
            name: (opts.name as string | undefined) ?? "",
            vcpus: parseWhole("--cpu", opts.cpu as string, 0, 1_000_000),
            memoryBytes: parseBytes("--memory", opts.memory as string),
            disks: parseDisks(
              (opts.disk as string[] | undefined) ?? [],
              (opts.newDisk as string[] | undefined) ?? [],
            ),
            ha: opts.ha === true,
            cpuModel: (opts.cpuModel as string | undefined) ?? "",
          },
          ...(opts.node === undefined ? {} : { nodeId: { id: opts.node as string } }),
          tenant: (opts.tenant as string | undefined) ?? "",
          start: opts.start === true,
          requestId: (opts.requestId as string | undefined) ?? "",
        });
        await followOperation(ctx, op, opts.wait === false);
      }),
    "hvctl vm create web-07 --cpu 2 --memory 4GiB --new-disk rbd:rbd/web-07-disk0=20GiB",
    "hvctl vm create db-02 --cpu 4 --memory 16GiB --disk zfs:tank/db-02-data --ha --node node-02 --start",
  );
}
