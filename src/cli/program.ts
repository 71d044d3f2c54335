import { Command, Option } from "commander";
import { packageVersion } from "../client/index.js";
import { apikeyCommand } from "./apikey-command.js";
import { auditCommand } from "./audit-command.js";
import { authCommand } from "./auth-command.js";
import { certCommand } from "./cert-command.js";
import { type CliContext, createCliContext, type GlobalOptions } from "./cli-context.js";
import { nodeCommand } from "./node-command.js";
import { tokenCommand } from "./token-command.js";
import { versionCommand } from "./version-command.js";

/** Where hvctl writes; tests pass their own. */
export interface ProgramIo {
  readonly out: (text: string) => void;
  readonly err: (text: string) => void;
  readonly env: NodeJS.ProcessEnv;
}

/**
 * Builds the hvctl command tree. Each noun is one file exporting a function
 * that returns its Command; adding a noun is one import and one line here.
 */
export function buildProgram(io: ProgramIo): {
  program: Command;
  context: () => CliContext | undefined;
} {
  let ctx: CliContext | undefined;
  const program = new Command("hvctl")
    .description("DebVisor cluster command line")
    .version(packageVersion(), "--client-version", "print the version number")
    .option(
      "--config <file>",
      "hvctl configuration (default $DEBVISOR_CONFIG or ~/.config/debvisor/hvctl.yaml)",
    )
    .option(
      "--context <name>",
      "context to use (default $DEBVISOR_CONTEXT or the file's current context)",
    )
    .option("--server <host:port>", "override the context's server address (or $DEBVISOR_SERVER)")
    .addOption(
      new Option("-o, --output <format>", "output format")
        .choices(["table", "json"])
        .default("table"),
    )
    .option("--timeout <duration>", "per-call timeout, like 500ms, 30s or 2m", "30s")
    .configureOutput({ writeOut: io.out, writeErr: io.err })
    .exitOverride()
    .showHelpAfterError();
  const cli = () => {
    ctx ??= createCliContext(program.opts<GlobalOptions>(), io.env, io.out);
    return ctx;
  };
  for (const make of [
    versionCommand,
    nodeCommand,
    authCommand,
    apikeyCommand,
    auditCommand,
    tokenCommand,
    certCommand,
  ])
    program.addCommand(make(cli));
  return { program, context: () => ctx };
}
