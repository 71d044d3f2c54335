import { homedir } from "node:os";
import { join } from "node:path";
import type { GenService, GenServiceMethods } from "@bufbuild/protobuf/codegenv2";
import type * as grpc from "@grpc/grpc-js";
import {
  createServiceClient,
  openChannel,
  resolveContext,
  type ServiceClient,
} from "../client/index.js";
import type { OutputFormat } from "./output.js";

/** Global options every command sees. */
export interface GlobalOptions {
  config?: string;
  context?: string;
  server?: string;
  output?: OutputFormat;
  timeout?: string;
}

/** What a command needs: where to write, how to format, and a way to get a client. */
export interface CliContext {
  readonly out: (text: string) => void;
  readonly format: OutputFormat;
  client<S extends GenService<GenServiceMethods>>(service: S): ServiceClient<S>;
  /** Per-call timeout in milliseconds. */
  readonly timeoutMs: number;
  /** Sets the exit code for a command that answered but says no (can-i). */
  setExitCode(code: number): void;
  readonly exitCode: () => number;
  close(): void;
}

/** The config file path: --config, then DEBVISOR_CONFIG, then ~/.config/debvisor/hvctl.yaml. */
export function configPath(opts: GlobalOptions, env: NodeJS.ProcessEnv): string {
  return opts.config ?? env.DEBVISOR_CONFIG ?? join(homedir(), ".config", "debvisor", "hvctl.yaml");
}

/** Builds the context lazily: commands that need no server (version) never read the config file. */
export function createCliContext(
  opts: GlobalOptions,
  env: NodeJS.ProcessEnv,
  out: (text: string) => void,
): CliContext {
  let channel: grpc.Client | undefined;
  let exitCode = 0;
  const timeoutMs = parseTimeout(opts.timeout ?? "30s");
  return {
    out,
    setExitCode: (code) => {
      exitCode = code;
    },
    exitCode: () => exitCode,
    format: opts.output ?? "table",
    timeoutMs,
    client(service) {
      if (channel === undefined) {
        const ctx = resolveContext(configPath(opts, env), opts.context ?? env.DEBVISOR_CONTEXT);
        const server = opts.server ?? env.DEBVISOR_SERVER ?? ctx.server;
        channel = openChannel({ ...ctx, server });
      }
      return createServiceClient(service, channel);
    },
    close() {
      channel?.close();
    },
  };
}

function parseTimeout(text: string): number {
  const m = /^(\d+)(ms|s|m)$/.exec(text);
  if (m === null)
    throw new Error(`--timeout: expected a duration like 500ms, 30s or 2m, got "${text}"`);
  const n = Number(m[1]);
  return m[2] === "ms" ? n : m[2] === "s" ? n * 1000 : n * 60_000;
}
