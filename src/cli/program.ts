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
 * 2. Add `foo` to NOUN_LOADERS below. The global flags (before or after the
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
import {
  type CliContext,
  createCliContext,
  type GlobalOptions,
  type ProgramIo,
} from "./cli-context.js";
import { EXIT_CODES_HELP } from "./cli-errors.js";
import { withExamples } from "./help-text.js";
import { OUTPUT_FORMATS } from "./output.js";

export type { ProgramIo } from "./cli-context.js";

/** A noun: builds its command (with subcommands) around a lazily created context. */
export type Noun = (cli: () => CliContext) => Command;

/**
 * Every noun by name, in the order `hvctl --help` lists them, each loaded
 * only when asked for: a command imports its own noun (and the protos it
 * speaks), so `hvctl node list` does not pay for the other seventeen.
 */
const NOUN_LOADERS: Readonly<Record<string, () => Promise<Noun>>> = {
  node: async () => (await import("./node-command.js")).nodeCommand,
  vm: async () => (await import("./vm-command.js")).vmCommand,
  migration: async () => (await import("./migration-command.js")).migrationCommand,
  failover: async () => (await import("./failover-command.js")).failoverCommand,
  snapshot: async () => (await import("./snapshot-command.js")).snapshotCommand,
  replication: async () => (await import("./replication-command.js")).replicationCommand,
  image: async () => (await import("./image-command.js")).imageCommand,
  dataset: async () => (await import("./dataset-command.js")).datasetCommand,
  auth: async () => (await import("./auth-command.js")).authCommand,
  apikey: async () => (await import("./apikey-command.js")).apikeyCommand,
  role: async () => (await import("./role-command.js")).roleCommand,
  binding: async () => (await import("./binding-command.js")).bindingCommand,
  token: async () => (await import("./token-command.js")).tokenCommand,
  cert: async () => (await import("./cert-command.js")).certCommand,
  ca: async () => (await import("./ca-command.js")).caCommand,
  audit: async () => (await import("./audit-command.js")).auditCommand,
  describe: async () => (await import("./describe-command.js")).describeCommand,
  events: async () => (await import("./events-command.js")).eventsCommand,
  config: async () => (await import("./config-command.js")).configCommand,
  completion: async () => (await import("./completion-command.js")).completionCommand,
  version: async () => (await import("./version-command.js")).versionCommand,
};

/** Global options that take a value in the next argument (unless written `--flag=value`). */
const VALUED_GLOBALS = new Set([
  "--config",
  "--context",
  "--server",
  "--token-file",
  "-o",
  "--output",
  "--timeout",
]);

/**
 * The nouns `argv` needs: only the one it names, or all of them when it
 * names none it knows (help, a typo commander should suggest a fix for) or
 * asks for completion, which walks the whole tree.
 */
export async function loadNouns(argv: readonly string[] = []): Promise<Noun[]> {
  let noun: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    if (a === "--") break;
    if (VALUED_GLOBALS.has(a)) i++;
    else if (!a.startsWith("-")) {
      noun = a;
      break;
    }
  }
  const one = noun === undefined || noun === "completion" ? undefined : NOUN_LOADERS[noun];
  return Promise.all(one !== undefined ? [one()] : Object.values(NOUN_LOADERS).map((l) => l()));
}

/** The warning --insecure-skip-tls-verify prints on every use. */
export const SKIP_VERIFY_WARNING =
  "warning: --insecure-skip-tls-verify: the server's certificate is not checked; anyone between you and the server can read and change this session\n";

/** Builds the hvctl command tree from `nouns` (see loadNouns). */
export function buildProgram(
  io: ProgramIo,
  nouns: readonly Noun[],
): {
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
  for (const noun of nouns) program.addCommand(noun(cli));
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
