/*
 * `hvctl config set-context NAME`: creates or updates a context in the hvctl
 * configuration file from flags (server, CA, at most one credential),
 * keeping what the flags do not change.
 */
import { existsSync, readFileSync } from "node:fs";
import { resolve } from "node:path";
import type { Command } from "commander";
import {
  type ContextEntry,
  type ContextFile,
  ContextFileError,
  readContextFile,
  writeContextFile,
} from "../client/index.js";
import type { CliContext } from "./cli-context.js";
import { UsageError } from "./cli-errors.js";
import { withExamples } from "./help-text.js";

/** Reads the file, or starts an empty one when it does not exist yet. */
function readOrEmpty(path: string): ContextFile {
  if (!existsSync(path)) return { apiVersion: "debvisor.io/v1", kind: "HvctlConfig", contexts: [] };
  return readContextFile(path);
}

/** An existing file's absolute path (relative to where hvctl runs), or a UsageError naming the flag. */
function existing(flag: string, p: string): string {
  const full = resolve(p);
  if (!existsSync(full)) throw new UsageError(`${flag}: file not found: ${full}`);
  return full;
}

interface SetContextOptions {
  ca?: string;
  tlsServerName?: string;
  clientCert?: string;
  clientKey?: string;
  apiKeyFile?: string;
  tokenCommand?: string;
  tokenArg?: string[];
  embed?: boolean;
}

/** The credential the flags describe, if any; at most one kind. */
function credentialFrom(
  opts: SetContextOptions,
  tokenFile: string | undefined,
): ContextEntry["credential"] | undefined {
  const kinds = [
    opts.clientCert !== undefined || opts.clientKey !== undefined,
    opts.apiKeyFile !== undefined,
    tokenFile !== undefined,
    opts.tokenCommand !== undefined,
  ].filter(Boolean).length;
  if (kinds > 1)
    throw new UsageError(
      "one credential per context: --client-cert/--client-key, --api-key-file, --token-file or --token-command",
    );
  if (opts.tokenArg !== undefined && opts.tokenCommand === undefined)
    throw new UsageError("--token-arg goes with --token-command");
  if (opts.clientCert !== undefined || opts.clientKey !== undefined) {
    if (opts.clientCert === undefined || opts.clientKey === undefined)
      throw new UsageError("--client-cert and --client-key go together");
    return {
      clientCert: existing("--client-cert", opts.clientCert),
      clientKey: existing("--client-key", opts.clientKey),
    };
  }
  if (opts.apiKeyFile !== undefined) {
    const path = existing("--api-key-file", opts.apiKeyFile);
    return opts.embed === true
      ? { apiKey: readFileSync(path, "utf8").trim() }
      : { apiKeyFile: path };
  }
  if (tokenFile !== undefined) return { tokenFile: existing("--token-file", tokenFile) };
  if (opts.tokenCommand !== undefined)
    return { tokenCommand: [opts.tokenCommand, ...(opts.tokenArg ?? [])] };
  return undefined;
}

/** Adds `set-context` to `hvctl config`. */
export function addConfigSetContextCommand(config: Command, cli: () => CliContext): void {
  withExamples(
    config
      .command("set-context")
      .description(
        "create or update a context; the server comes from --server and a JWT file from --token-file",
      )
      .argument("<name>", "the context")
      .option("--ca <file>", "the CA that signs the server's certificate")
      .option("--tls-server-name <name>", "the name to check the server's certificate against")
      .option("--client-cert <file>", "credential: a client certificate (with --client-key)")
      .option("--client-key <file>", "the client certificate's key")
      .option("--api-key-file <file>", "credential: a file holding an API key")
      .option(
        "--token-command <program>",
        "credential: a program printing a JWT, run without a shell for each hvctl call",
      )
      .option(
        "--token-arg <arg>",
        "an argument of --token-command; repeat for each (--token-arg=--flag for one with a dash)",
        (v: string, prev: string[] = []) => [...prev, v],
      )
      .option("--embed", "store the CA and API key in the file itself rather than their paths")
      .action((name: string, opts: SetContextOptions) => {
        const ctx = cli();
        if (!/^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$/.test(name))
          throw new UsageError(`context name "${name}": letters, digits, '.', '_', '@' or '-'`);
        const file = readOrEmpty(ctx.configPath);
        const before = file.contexts.find((c) => c.name === name);
        const server = ctx.options.server ?? before?.server;
        if (server === undefined) throw new UsageError("a new context needs --server HOST:PORT");
        const credential = credentialFrom(opts, ctx.options.tokenFile) ?? before?.credential;
        if (credential === undefined)
          throw new UsageError(
            "a new context needs a credential: --client-cert and --client-key, --api-key-file, --token-file or --token-command",
          );
        let ca: Pick<ContextEntry, "ca" | "caData"> =
          before === undefined
            ? {}
            : {
                ...(before.ca === undefined ? {} : { ca: before.ca }),
                ...(before.caData === undefined ? {} : { caData: before.caData }),
              };
        if (opts.ca !== undefined) {
          const path = existing("--ca", opts.ca);
          ca = opts.embed === true ? { caData: readFileSync(path, "utf8") } : { ca: path };
        }
        if (ca.ca === undefined && ca.caData === undefined)
          throw new UsageError(
            "a new context needs --ca: the CA that signs the server's certificate",
          );
        const tlsServerName = opts.tlsServerName ?? before?.tlsServerName;
        const entry: ContextEntry = {
          name,
          server,
          ...ca,
          ...(tlsServerName === undefined ? {} : { tlsServerName }),
          credential,
        };
        const contexts =
          before === undefined
            ? [...file.contexts, entry]
            : file.contexts.map((c) => (c.name === name ? entry : c));
        try {
          writeContextFile(ctx.configPath, {
            ...file,
            currentContext: file.currentContext ?? name,
            contexts,
          });
        } catch (err) {
          const issue = err instanceof ContextFileError ? err.problem : undefined;
          if (issue === undefined) throw err;
          throw new UsageError(
            `context "${name}": ${issue.path.split(".").slice(2).join(".")}: ${issue.message}`,
          );
        }
        ctx.print(
          { name, created: before === undefined },
          () =>
            `context "${name}" ${before === undefined ? "created" : "updated"} in ${ctx.configPath}\n`,
        );
      }),
    "hvctl config set-context prod --server hv-ctl.example:7443 --ca ca.pem --client-cert me.crt --client-key me.key",
    "hvctl config set-context ci --server hv-ctl.example:7443 --ca ca.pem --api-key-file ci.key --embed",
    "hvctl config set-context sso --server hv-ctl.example:7443 --ca ca.pem --token-command sso-token --token-arg=--audience --token-arg debvisor-rpc",
    "hvctl config set-context prod --server hv-ctl2.example:7443   # change one field",
  );
}
