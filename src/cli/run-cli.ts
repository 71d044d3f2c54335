import { CommanderError } from "commander";
import type { ProgramIo } from "./cli-context.js";
import { describeFailure, EXIT } from "./cli-errors.js";
import { terminalSafe } from "./output.js";
import { buildProgram, loadNouns } from "./program.js";

/**
 * Runs hvctl with `argv` and returns the exit code (see EXIT in
 * cli-errors.ts). A failure is printed as one line on stderr.
 */
export async function runCli(argv: readonly string[], io: ProgramIo): Promise<number> {
  const { program, context } = buildProgram(io, await loadNouns(argv));
  try {
    await program.parseAsync([...argv], { from: "user" });
    return context()?.exitCode() ?? EXIT.ok;
  } catch (err) {
    // commander has already printed its message (and the help hint).
    if (err instanceof CommanderError) return err.exitCode === 0 ? EXIT.ok : EXIT.usage;
    const failure = describeFailure(err, context()?.facts());
    io.err(`hvctl: ${terminalSafe(failure.message)}\n`);
    return failure.exitCode;
  } finally {
    // After the command: the kept revoked server certificates are taken again here when due.
    await context()?.close();
  }
}
