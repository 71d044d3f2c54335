/*
 * `hvctl config`: the contexts in the hvctl configuration file (listing,
 * choosing and deleting them here; creating and updating them in
 * config-set-context.ts).
 */
import { existsSync } from "node:fs";
import { Command } from "commander";
import {
  type ContextEntry,
  type ContextFile,
  readContextFile,
  writeContextFile,
} from "../client/index.js";
import { type CliContext, missingConfig } from "./cli-context.js";
import { UsageError } from "./cli-errors.js";
import { addConfigSetContextCommand } from "./config-set-context.js";
import { withExamples } from "./help-text.js";
import { type Column, renderColumns } from "./output.js";

/** What a context authenticates with, never the secret itself. */
function credentialKind(c: ContextEntry["credential"]): string {
  if ("clientCert" in c) return "client-certificate";
  if ("apiKeyFile" in c || "apiKey" in c) return "api-key";
  if ("tokenFile" in c) return "jwt-file";
  return "jwt-command";
}

/** A context as get-contexts shows it: paths and kinds, no secrets. */
function summary(c: ContextEntry, current: string | undefined) {
  return {
    name: c.name,
    current: c.name === current,
    server: c.server,
    ca: c.caData !== undefined ? "(inline)" : (c.ca ?? ""),
    tlsServerName: c.tlsServerName ?? "",
    credential: credentialKind(c.credential),
  };
}

type Summary = ReturnType<typeof summary>;
const COLUMNS: Column<Summary>[] = [
  { header: "CURRENT", value: (s) => (s.current ? "*" : "") },
  { header: "NAME", value: (s) => s.name },
  { header: "SERVER", value: (s) => s.server },
  { header: "CREDENTIAL", value: (s) => s.credential },
  { header: "CA", wide: true, value: (s) => s.ca || "-" },
  { header: "TLS SERVER NAME", wide: true, value: (s) => s.tlsServerName || "-" },
];

/** Reads the file; a missing one is an error that says how to make one. */
function readExisting(path: string): ContextFile {
  if (!existsSync(path)) throw missingConfig(path);
  return readContextFile(path);
}

/** `hvctl config ...`: the contexts in the hvctl configuration file. */
export function configCommand(cli: () => CliContext): Command {
  const config = new Command("config").description(
    "contexts: which server to talk to, trusting which CA, with which credential",
  );
  withExamples(config, "hvctl config get-contexts", "hvctl config use-context prod");

  withExamples(
    config
      .command("get-contexts")
      .description("list the contexts; * marks the current one")
      .option("--names", "print only the names, one per line (for scripts and completion)")
      .action((opts: { names?: boolean }) => {
        const ctx = cli();
        const file = readExisting(ctx.configPath);
        const rows = file.contexts.map((c) => summary(c, file.currentContext));
        if (opts.names === true) {
          ctx.out(rows.map((r) => `${r.name}\n`).join(""));
          return;
        }
        ctx.print({ currentContext: file.currentContext ?? "", contexts: rows }, () =>
          renderColumns(COLUMNS, rows, ctx.wide),
        );
      }),
    "hvctl config get-contexts",
    "hvctl --config ./hvctl.yaml config get-contexts -o wide",
  );

  withExamples(
    config
      .command("current-context")
      .description("print the name of the current context")
      .action(() => {
        const ctx = cli();
        const file = readExisting(ctx.configPath);
        if (file.currentContext === undefined)
          throw new UsageError(
            `${ctx.configPath}: no current context; choose one with hvctl config use-context NAME`,
          );
        ctx.print({ currentContext: file.currentContext }, () => `${file.currentContext}\n`);
      }),
    "hvctl config current-context",
  );

  withExamples(
    config
      .command("use-context")
      .description("make a context the current one")
      .argument("<name>", "the context")
      .action((name: string) => {
        const ctx = cli();
        const file = readExisting(ctx.configPath);
        if (!file.contexts.some((c) => c.name === name))
          throw new UsageError(
            `${ctx.configPath}: no context named "${name}" (hvctl config get-contexts lists them)`,
          );
        writeContextFile(ctx.configPath, { ...file, currentContext: name });
        ctx.print({ currentContext: name }, () => `switched to context "${name}"\n`);
      }),
    "hvctl config use-context prod",
  );

  addConfigSetContextCommand(config, cli);

  withExamples(
    config
      .command("delete-context")
      .description("remove a context from the file")
      .argument("<name>", "the context")
      .action((name: string) => {
        const ctx = cli();
        const file = readExisting(ctx.configPath);
        if (!file.contexts.some((c) => c.name === name))
          throw new UsageError(`${ctx.configPath}: no context named "${name}"`);
        const { currentContext, ...rest } = file;
        writeContextFile(ctx.configPath, {
          ...rest,
          ...(currentContext === undefined || currentContext === name ? {} : { currentContext }),
          contexts: file.contexts.filter((c) => c.name !== name),
        });
        ctx.print({ name, deleted: true }, () => `context "${name}" deleted\n`);
      }),
    "hvctl config delete-context old-lab",
  );
  return config;
}
