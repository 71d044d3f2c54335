import { Command } from "commander";
import { packageVersion } from "../client/index.js";
import type { CliContext } from "./cli-context.js";
import { withExamples } from "./help-text.js";

/** `hvctl version`: this client's version and the API it speaks. */
export function versionCommand(cli: () => CliContext): Command {
  return withExamples(
    new Command("version").description("print the hvctl version").action(() => {
      const ctx = cli();
      const info = { client: packageVersion(), api: "debvisor.v1", node: process.versions.node };
      ctx.print(info, () => `hvctl ${info.client} (API ${info.api}, Node.js ${info.node})\n`);
    }),
    "hvctl version",
    "hvctl version -o json",
  );
}
