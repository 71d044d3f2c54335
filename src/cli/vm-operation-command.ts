/*
 * `hvctl vm operation ID`: shows one lifecycle operation, or follows it to
 * its end with --wait; exit code 1 when it ended without succeeding.
 */
import type { Command } from "commander";
import { VmOperationSchema, VmOperationState, VmService } from "../gen/debvisor/v1/vm_pb.js";
import type { CliContext } from "./cli-context.js";
import { finished, followOperation, kindName, lower } from "./follow-operation.js";
import { withExamples } from "./help-text.js";
import { messageJson, renderFields } from "./output.js";

/** Adds `operation` to `hvctl vm`. */
export function addVmOperationCommand(vm: Command, cli: () => CliContext): void {
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
