/*
 * hvctl's command tree. One noun per file: src/cli/<noun>-command.ts exports
 * `<noun>Command(cli: () => CliContext): Command`. To add a noun:
 *
 * 1. Write the file (vm-command.ts is the smallest complete one):
 *
 *      export function fooCommand(cli: () => CliContext): Command {
 *        const foo = new Command("foo").description("one line: what a foo is");
 *        withExamples(
 *          foo.command("list").description("one line").option("--bar <x>", "...")
 *            .action(async (opts: { bar?: string }) => {
 *              const ctx = cli();
 *              const r = await ctx.client(FooService).listFoos({ bar: opts.bar ?? "" });
 *              ctx.print(
 *                { foos: r.foos.map((f) => messageJson(FooSchema, f)) }, // -o json|yaml
 *                () => renderColumns(FOO_COLUMNS, r.foos, ctx.wide),     // table, -o wide
 *              );
 *            }),
 *          "hvctl foo list --bar x -o wide",
 *        );
 *        return foo;
 *      }
 *
 * 2. Add `fooCommand` to NOUNS below. The global flags (before or after the
 *    noun), --help with the examples, `hvctl completion bash|zsh`, -o
 *    table|wide|json|yaml, the one-line errors and the exit codes
 *    (cli-errors.ts) come with it. `ctx.client(...)` applies --timeout and
 *    turns failures into CallErrors; throw UsageError for a bad flag value.
 * 3. Add the service's methods to METHOD_PERMISSIONS (permissions.ts), so a
 *    refusal says which permission is missing; a test compares it with the
 *    server's own table.
 * 4. A long operation (run, drain, watch) calls watchProgress(ctx.io, {open,
 *    progress, cancel, resumeHint, summary}) from progress.ts: a bar with
 *    phase, percent, rate and ETA on a terminal, plain lines elsewhere, and
 *    on Ctrl-C the question "cancel the operation or just stop watching?".
 * 5. Add end-to-end cases to test/hvctl.test.ts (one shared dev daemon).
 *
 * Do not give a subcommand an option a global option already uses (--server,
 * --context, --config, --token-file, -o, --timeout): the program takes it
 * wherever it appears (hence `cert issue --usage server`).
 */
import { Command, Option } from "commander";
import { packageVersion } from "../client/index.js";
import { apikeyCommand } from "./apikey-command.js";
import { auditCommand } from "./audit-command.js";
import { authCommand } from "./auth-command.js";
import { bindingCommand } from "./binding-command.js";
import { caCommand } from "./ca-command.js";
import { certCommand } from "./cert-command.js";
import {
  type CliContext,
  createCliContext,
  type GlobalOptions,
  type ProgramIo,
} from "./cli-context.js";
import { EXIT_CODES_HELP } from "./cli-errors.js";
import { completionCommand } from "./completion-command.js";
import { configCommand } from "./config-command.js";
import { failoverCommand } from "./failover-command.js";
import { withExamples } from "./help-text.js";
import { imageCommand } from "./image-command.js";
import { migrationCommand } from "./migration-command.js";
import { nodeCommand } from "./node-command.js";
import { OUTPUT_FORMATS } from "./output.js";
import { replicationCommand } from "./replication-command.js";
import { roleCommand } from "./role-command.js";
import { snapshotCommand } from "./snapshot-command.js";
import { tokenCommand } from "./token-command.js";
import { versionCommand } from "./version-command.js";
import { vmCommand } from "./vm-command.js";

export type { ProgramIo } from "./cli-context.js";

/** A noun: builds its command (with subcommands) around a lazily created context. */
export type Noun = (cli: () => CliContext) => Command;

/** Every noun, in the order `hvctl --help` lists them. */
const NOUNS: readonly Noun[] = [
  nodeCommand,
  vmCommand,
  migrationCommand,
  failoverCommand,
  snapshotCommand,
  replicationCommand,
  imageCommand,
  authCommand,
  apikeyCommand,
  roleCommand,
  bindingCommand,
  tokenCommand,
  certCommand,
  caCommand,
  auditCommand,
  configCommand,
  completionCommand,
  versionCommand,
];

/** The warning --insecure-skip-tls-verify prints on every use. */
export const SKIP_VERIFY_WARNING =
  "warning: --insecure-skip-tls-verify: the server's certificate is not checked; anyone between you and the server can read and change this session\n";

/** Builds the hvctl command tree. */
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
    .option(
      "--token-file <file>",
      "authenticate with the API key or JWT in this file (or $DEBVISOR_TOKEN) instead of the context's credential",
    )
    .option(
      "--insecure-skip-tls-verify",
      "do not verify the server's certificate (TLS stays on; prints a warning every time)",
    )
    .addOption(
      new Option("-o, --output <format>", "output format").choices(OUTPUT_FORMATS).default("table"),
    )
    .option("--timeout <duration>", "per-call timeout, like 500ms, 30s or 2m", "30s")
    .configureOutput({ writeOut: io.out, writeErr: io.err })
    .exitOverride()
    .showHelpAfterError("(add --help for usage)");
  const cli = () => {
    ctx ??= createCliContext(program.opts<GlobalOptions>(), io);
    return ctx;
  };
  for (const noun of NOUNS) program.addCommand(noun(cli));
  inheritSettings(program);
  program.hook("preAction", () => {
    if (program.opts<GlobalOptions>().insecureSkipTlsVerify === true) io.err(SKIP_VERIFY_WARNING);
  });
  withExamples(
    program,
    "hvctl node list",
    "hvctl --context prod vm get web-01 -o json",
    "hvctl auth can-i migration:execute",
    "hvctl completion bash > /etc/bash_completion.d/hvctl",
  );
  program.addHelpText("after", `\n${EXIT_CODES_HELP}\n`);
  return { program, context: () => ctx };
}

/**
 * Gives every command below the program its output, exit override and
 * error display: commander copies them only to commands made with
 * .command(), not to nouns built separately and added.
 */
function inheritSettings(cmd: Command): void {
  for (const sub of cmd.commands) {
    sub.copyInheritedSettings(cmd);
    inheritSettings(sub);
  }
}
