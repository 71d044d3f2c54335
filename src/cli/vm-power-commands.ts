/*
 * `hvctl vm start|stop|reboot|delete`: the lifecycle operations on an
 * existing VM, each accepted by the server and followed to its end.
 */
import type { Command } from "commander";
import { type VmOperation, VmService } from "../gen/debvisor/v1/vm_pb.js";
import type { CliContext } from "./cli-context.js";
import { parseDuration } from "./duration.js";
import { followOperation } from "./follow-operation.js";
import { withExamples } from "./help-text.js";
import { noWaitOption, requestIdOption } from "./vm-operation-options.js";

/** Adds `start`, `stop`, `reboot` and `delete` to `hvctl vm`, in that order. */
export function addVmPowerCommands(vm: Command, cli: () => CliContext): void {
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
}
