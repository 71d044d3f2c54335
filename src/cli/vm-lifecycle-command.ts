/*
 * hvctl's VM lifecycle subcommands, composed in the order `hvctl vm --help`
 * lists them: create (vm-create-command.ts), start/stop/reboot/delete
 * (vm-power-commands.ts), adopt (here) and operation
 * (vm-operation-command.ts). Following an operation is follow-operation.ts.
 */
import type { Command } from "commander";
import { VmInfoSchema, VmService } from "../gen/debvisor/v1/vm_pb.js";
import type { CliContext } from "./cli-context.js";
import { withExamples } from "./help-text.js";
import { messageJson } from "./output.js";
import { addVmCreateCommand } from "./vm-create-command.js";
import { addVmOperationCommand } from "./vm-operation-command.js";
import { addVmPowerCommands } from "./vm-power-commands.js";

export { followOperation } from "./follow-operation.js";

/** Adds `create`, `start`, `stop`, `reboot`, `delete`, `adopt` and `operation` to `hvctl vm`. */
export function addVmLifecycleCommands(vm: Command, cli: () => CliContext): void {
  addVmCreateCommand(vm, cli);
  addVmPowerCommands(vm, cli);
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
  addVmOperationCommand(vm, cli);
}
