import { Command } from "commander";
import { MigrationService } from "../gen/debvisor/v1/migration_pb.js";
import type { CliContext } from "./cli-context.js";
import { withExamples } from "./help-text.js";

/** `hvctl failover VM`: restart a VM of a failed node elsewhere. */
export function failoverCommand(cli: () => CliContext): Command {
  return withExamples(
    new Command("failover")
      .description(
        "restart a VM of a failed node on a healthy one (only once the node has been down past the fence delay)",
      )
      .argument("<vm>", "the VM id")
      .action(async (vm: string) => {
        const ctx = cli();
        const r = await ctx.client(MigrationService).failoverVM({ vmId: vm });
        ctx.print(
          {
            status: "ok",
            message: r.message,
            target: r.target?.nodeId?.id ?? "",
            migrationId: r.migrationId,
          },
          () => `${ctx.style.good("restarted")}: ${r.message} (migration ${r.migrationId})`,
        );
      }),
    "hvctl failover vm-007",
  );
}
