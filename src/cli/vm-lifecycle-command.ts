import { type Command, Option } from "commander";
import { NodeReadiness, NodeService } from "../gen/debvisor/v1/node_pb.js";
import {
  type VmDisk,
  VmInfoSchema,
  type VmOperation,
  VmOperationKind,
  VmOperationSchema,
  VmOperationState,
  VmService,
} from "../gen/debvisor/v1/vm_pb.js";
import type { CliContext } from "./cli-context.js";
import { UsageError } from "./cli-errors.js";
import { DATASET_HELP, parseDataset } from "./dataset-args.js";
import { parseBytes, parseDuration, parseWhole } from "./duration.js";
import { withExamples } from "./help-text.js";
import { messageJson, renderFields } from "./output.js";
import { watchProgress } from "./progress.js";

const lower = (name: string | undefined) => (name ?? "unspecified").toLowerCase();
const kindName = (op: VmOperation) => lower(VmOperationKind[op.kind]);
const finished = (op: VmOperation) =>
  op.state === VmOperationState.SUCCEEDED ||
  op.state === VmOperationState.FAILED ||
  op.state === VmOperationState.CANCELLED;

/** One line saying how an operation ended (or where it is). */
function operationLine(op: VmOperation): string {
  const state = lower(VmOperationState[op.state]);
  const why =
    op.reason === "" ? "" : `: ${op.reason}${op.message === "" ? "" : ` (${op.message})`}`;
  return `${kindName(op)} ${op.vmId} on ${op.nodeId?.id ?? "-"}: ${state}${why}`;
}

/**
 * Prints an accepted operation and, unless `noWait`, follows it to its end
 * (progress on stderr like migrations; exit code 1 when it did not succeed).
 */
export async function followOperation(
  ctx: CliContext,
  accepted: VmOperation,
  noWait: boolean,
): Promise<void> {
  const client = ctx.client(VmService);
  ctx.err(
    `operation ${accepted.id}: ${kindName(accepted)} ${accepted.vmId} on ${accepted.nodeId?.id ?? "-"}\n`,
  );
  let final = accepted;
  if (!noWait && !finished(accepted)) {
    let told = false;
    const { last, outcome } = await watchProgress(ctx.io, {
      label: `operation ${accepted.id}`,
      open: (signal) => client.watchOperation({ operationId: accepted.id }, { signal }),
      progress: (op, say) => {
        if (!told && op.state === VmOperationState.PENDING) {
          told = true;
          void noteNodeDown(ctx, op, say);
        }
        return {
          phase: op.phase || lower(VmOperationState[op.state]),
          percent: op.percent,
        };
      },
      resumeHint: `hvctl vm operation ${accepted.id} --wait`,
      summary: (op) => (op === undefined ? "no state received" : lower(VmOperationState[op.state])),
    });
    if (outcome === "stopped") return;
    final = last ?? accepted;
  }
  ctx.print(messageJson(VmOperationSchema, final), () =>
    noWait ? `${final.id}\n` : `${operationLine(final)}\n`,
  );
  if (!noWait && final.state !== VmOperationState.SUCCEEDED) ctx.setExitCode(1);
}

/**
 * Says why an operation waits when its node is not ready: it is delivered
 * once the node's agent is back, which may be never. Silent when the node
 * cannot be read (a caller without node:read) or is ready.
 */
async function noteNodeDown(
  ctx: CliContext,
  op: VmOperation,
  say: (line: string) => void,
): Promise<void> {
  const node = op.nodeId?.id ?? "";
  if (node === "") return;
  try {
    const got = await ctx.client(NodeService).getNode({ id: { id: node } });
    if (got.summary?.readiness === NodeReadiness.READY) return;
    say(
      `note: ${node} is not ready: the operation waits until its agent is back (Ctrl-C stops watching; it stays queued). If ${node} is gone for good: hvctl node cordon ${node} --out-of-service\n`,
    );
  } catch {
    // Not allowed to read nodes, or not now: the progress says the rest.
  }
}

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

const noWaitOption = () =>
  new Option(
    "--no-wait",
    "print the operation id and return at once (follow it with vm operation)",
  );
const requestIdOption = () =>
  new Option("--request-id <key>", "idempotency key: retrying with it names the same operation");

/** Adds `create`, `start`, `stop`, `reboot`, `delete`, `adopt` and `operation` to `hvctl vm`. */
export function addVmLifecycleCommands(vm: Command, cli: () => CliContext): void {
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

  const simple = (
    name: "start" | "reboot" | "delete",
    what: string,
    call: (ctx: CliContext, id: string, opts: Record<string, unknown>) => Promise<VmOperation>,
  ) => {
    const c = vm
      .command(name)
      .description(what)
      .argument("<id>", "the VM id")
      .addOption(requestIdOption())
      .addOption(noWaitOption());
    if (name !== "start")
      c.option(
        "--force",
        name === "delete"
          ? "power a running VM off first"
          : "power off instead of a graceful shutdown",
      );
    if (name === "reboot")
      c.option("--timeout <duration>", "how long the guest gets to shut down (default 60s)");
    c.action(async (id: string, opts: Record<string, unknown>) => {
      const ctx = cli();
      await followOperation(ctx, await call(ctx, id, opts), opts.wait === false);
    });
    return c;
  };
  const timeoutOf = (opts: Record<string, unknown>) =>
    opts.timeout === undefined ? 0 : parseDuration("--timeout", opts.timeout as string);
  const requestId = (opts: Record<string, unknown>) => (opts.requestId as string | undefined) ?? "";

  withExamples(
    simple("start", "start a stopped VM on its node", (ctx, vmId, opts) =>
      ctx.client(VmService).startVm({ vmId, requestId: requestId(opts) }),
    ),
    "hvctl vm start web-07",
  );
  withExamples(
    vm
      .command("stop")
      .description("stop a VM: a graceful shutdown, powered off after --timeout")
      .argument("<id>", "the VM id")
      .option("--timeout <duration>", "how long the guest gets to shut down (default 60s)")
      .option("--force", "power off at once")
      .addOption(requestIdOption())
      .addOption(noWaitOption())
      .action(async (vmId: string, opts: Record<string, unknown>) => {
        const ctx = cli();
        const op = await ctx.client(VmService).stopVm({
          vmId,
          force: opts.force === true,
          timeoutMs: timeoutOf(opts),
          requestId: requestId(opts),
        });
        await followOperation(ctx, op, opts.wait === false);
      }),
    "hvctl vm stop web-07",
    "hvctl vm stop web-07 --timeout 2m",
    "hvctl vm stop web-07 --force --no-wait",
  );
  withExamples(
    simple("reboot", "stop (gracefully, as vm stop) and start a VM", (ctx, vmId, opts) =>
      ctx.client(VmService).rebootVm({
        vmId,
        force: opts.force === true,
        timeoutMs: timeoutOf(opts),
        requestId: requestId(opts),
      }),
    ),
    "hvctl vm reboot web-07",
  );
  withExamples(
    simple("delete", "undefine a VM on its node and forget its spec", (ctx, vmId, opts) =>
      ctx
        .client(VmService)
        .deleteVm({ vmId, force: opts.force === true, requestId: requestId(opts) }),
    ),
    "hvctl vm delete web-07",
    "hvctl vm delete web-07 --force",
  );

  withExamples(
    vm
      .command("adopt")
      .description("take an unmanaged VM a node reports into a tenant (cluster-wide callers)")
      .argument("<id>", "the VM id")
      .argument("[tenant]", "the tenant (default: none)")
      .action(async (vmId: string, tenant: string | undefined) => {
        const ctx = cli();
        const v = await ctx.client(VmService).adoptVm({ vmId, tenant: tenant ?? "" });
        ctx.print(
          messageJson(VmInfoSchema, v),
          () => `vm ${v.id} is managed${v.tenant === "" ? "" : ` in tenant ${v.tenant}`}\n`,
        );
      }),
    "hvctl vm adopt node-04-vm-001 acme",
  );

  withExamples(
    vm
      .command("operation")
      .description("show a lifecycle operation (or follow it with --wait)")
      .argument("<id>", "the operation id")
      .option("--wait", "follow it to its end")
      .action(async (id: string, opts: { wait?: boolean }) => {
        const ctx = cli();
        const op = await ctx.client(VmService).getOperation({ operationId: id });
        if (opts.wait === true && !finished(op)) {
          await followOperation(ctx, op, false);
          return;
        }
        ctx.print(messageJson(VmOperationSchema, op), () =>
          renderFields([
            ["id", op.id],
            ["kind", kindName(op)],
            ["vm", op.vmId],
            ["node", op.nodeId?.id ?? "-"],
            ["state", lower(VmOperationState[op.state])],
            ["progress", `${op.percent}% ${op.phase}`],
            ["reason", op.reason || "-"],
            ["message", op.message || "-"],
            ["requested by", op.requestedBy || "-"],
          ]),
        );
        if (finished(op) && op.state !== VmOperationState.SUCCEEDED) ctx.setExitCode(1);
      }),
    "hvctl vm operation op-1a2b3c4d5e6f7a8b",
    "hvctl vm operation op-1a2b3c4d5e6f7a8b --wait",
  );
}
