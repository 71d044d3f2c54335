import type { Command } from "commander";

/**
 * Adds an "Examples:" section to a command's --help. Every command has at
 * least one (test/hvctl-help.test.ts walks the tree); write them as
 * operators will type them.
 */
export function withExamples<C extends Command>(cmd: C, ...examples: readonly string[]): C {
  cmd.addHelpText("after", `\nExamples:\n${examples.map((e) => `  ${e}`).join("\n")}\n`);
  return cmd;
}
