import { CommanderError } from "commander";
import { ContextFileError } from "../client/index.js";
import { buildProgram, type ProgramIo } from "./program.js";

const GRPC_HINTS: Record<number, string> = {
  14: "the server is unreachable: is debvisor-rpcd running, and is the context's server address right?",
  16: "the server did not accept your credentials: check the context's client certificate and CA",
  7: "your identity lacks the permission for this operation",
  4: "the call timed out: raise --timeout or check the server's load",
};

/** Runs hvctl with `argv` and returns the exit code: 0 ok, 1 failed call, 2 usage or configuration error. */
export async function runCli(argv: readonly string[], io: ProgramIo): Promise<number> {
  const { program, context } = buildProgram(io);
  try {
    await program.parseAsync([...argv], { from: "user" });
    return context()?.exitCode() ?? 0;
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : 2;
    if (err instanceof ContextFileError) {
      io.err(`hvctl: ${err.message}\n`);
      return 2;
    }
    const grpcErr = err as { code?: number; details?: string };
    if (typeof grpcErr.code === "number" && typeof grpcErr.details === "string") {
      const hint = GRPC_HINTS[grpcErr.code];
      io.err(`hvctl: ${grpcErr.details}${hint === undefined ? "" : `\n  hint: ${hint}`}\n`);
      return 1;
    }
    io.err(`hvctl: ${(err as Error).message}\n`);
    return 2;
  } finally {
    context()?.close();
  }
}
