import { Command } from "commander";
import { packageVersion } from "../client/index.js";
import type { CliContext } from "./cli-context.js";

/** `hvctl version`: this client's version and the API it speaks. */
export function versionCommand(cli: () => CliContext): Command {
  return new Command("version").description("print the hvctl version").action(() => {
    const ctx = cli();
    const info = { client: packageVersion(), api: "debvisor.v1", node: process.versions.node };
    ctx.out(
      ctx.format === "json"
        ? `${JSON.stringify(info, null, 2)}\n`
        : `hvctl ${info.client} (API ${info.api}, Node.js ${info.node})\n`,
    );
  });
}
