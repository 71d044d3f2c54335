/**
 * Runs one virsh command for the libvirt driver and turns its failures into
 * catalogue reasons: a missing domain is VM_NOT_FOUND, a hypervisor it cannot
 * reach (or no virsh at all) BACKEND_UNAVAILABLE, a timeout BACKEND_TIMEOUT,
 * an abort CANCELLED (or the RpcError the signal carries, such as a call's
 * DEADLINE_EXCEEDED), anything else BACKEND_FAILED. The command line and
 * virsh's stderr go only into the error's `cause` ({@link VirshCommandError}),
 * for logs, never into what a client sees.
 */
import { type Reason, RpcError } from "../core/index.js";
import {
  CommandError,
  type CommandResult,
  type CommandRunner,
  type RunOptions,
} from "./command-runner.js";
import { classifyVirshError, VirshParseError } from "./virsh-parse.js";

/** The environment virsh runs in: English messages for the stderr patterns. */
const VIRSH_ENV = Object.freeze({ LC_ALL: "C", LANG: "C" });

/** The failure of one virsh command, kept as an error's `cause` for the logs. */
export class VirshCommandError extends Error {
  override readonly name = "VirshCommandError";
  constructor(
    readonly args: readonly string[],
    readonly result: CommandResult | undefined,
    detail: string,
  ) {
    super(`virsh ${args.join(" ")}: ${detail}`);
  }
}

/** True when `err` is virsh's failure as `reason` with a stderr that `says`. */
export function virshSaid(
  err: unknown,
  reason: Reason,
  says: (stderr: string) => boolean,
): boolean {
  if (!(err instanceof RpcError) || err.reason !== reason) return false;
  const cause = err.cause;
  return cause instanceof VirshCommandError && says(cause.result?.stderr ?? "");
}

/** True when `err` is a BACKEND_FAILED whose stderr matches `pattern`. */
export function isRace(err: unknown, pattern: RegExp): boolean {
  return virshSaid(err, "BACKEND_FAILED", (stderr) => pattern.test(stderr));
}

/** The RpcError for a failed command, with the command and its stderr as the cause. */
function failure(args: string[], result: CommandResult): RpcError {
  const cause = new VirshCommandError(
    args,
    result,
    `exit ${result.exitCode ?? result.signal}: ${result.stderr.trim()}`,
  );
  switch (classifyVirshError(result.stderr)) {
    case "not-found":
      return new RpcError("VM_NOT_FOUND", { cause });
    case "unavailable":
      return new RpcError("BACKEND_UNAVAILABLE", { cause });
    default:
      return new RpcError("BACKEND_FAILED", { cause });
  }
}

/** The RpcError for a command that did not run to its end. */
function runFailure(args: string[], err: unknown, signal: AbortSignal): unknown {
  if (!(err instanceof CommandError)) return err;
  const cause = new VirshCommandError(args, err.result, err.kind);
  cause.cause = err;
  switch (err.kind) {
    case "aborted":
      // Keep the signal's reason (DEADLINE_EXCEEDED from a call deadline) and the cause.
      return new RpcError(signal.reason instanceof RpcError ? signal.reason.reason : "CANCELLED", {
        cause,
      });
    case "timeout":
      return new RpcError("BACKEND_TIMEOUT", { cause });
    case "not-found":
    case "spawn-failed":
      return new RpcError("BACKEND_UNAVAILABLE", { cause });
    default:
      return new RpcError("BACKEND_FAILED", { cause });
  }
}

/** Runs `virsh -c URI ...` for one node. */
export interface VirshInvoker {
  /** Resolves with a result that exited 0; otherwise throws the mapped RpcError. */
  run(args: string[], signal: AbortSignal, extra?: Partial<RunOptions>): Promise<CommandResult>;
  /** Runs a parser over a result's stdout; output it does not understand is BACKEND_FAILED. */
  parsed<T>(args: string[], result: CommandResult, parse: (out: string) => T): T;
}

/** Options of {@link createVirshInvoker}. */
export interface VirshInvokerOptions {
  readonly virsh: string;
  readonly uri: string;
  readonly runner: CommandRunner;
  /** Limit of one command unless the call says otherwise. */
  readonly timeoutMs: number;
}

/** Creates the invoker of one node's virsh. */
export function createVirshInvoker(o: VirshInvokerOptions): VirshInvoker {
  /** Runs `virsh -c URI ARGS...`; resolves with a result that exited 0, else throws an RpcError. */
  async function virsh(
    args: string[],
    signal: AbortSignal,
    extra: Partial<RunOptions> = {},
  ): Promise<CommandResult> {
    const full = ["-c", o.uri, ...args];
    let result: CommandResult;
    try {
      result = await o.runner(o.virsh, full, {
        timeoutMs: o.timeoutMs,
        signal,
        env: VIRSH_ENV,
        ...extra,
      });
    } catch (e) {
      throw runFailure(full, e, signal);
    }
    if (result.exitCode !== 0) throw failure(full, result);
    return result;
  }

  /** Runs a parser; output it does not understand is BACKEND_FAILED. */
  function parsed<T>(args: string[], result: CommandResult, parse: (out: string) => T): T {
    try {
      return parse(result.stdout);
    } catch (e) {
      if (!(e instanceof VirshParseError)) throw e;
      throw new RpcError("BACKEND_FAILED", {
        cause: new VirshCommandError(args, result, `unparsable output: ${e.message}`),
      });
    }
  }

  return { run: virsh, parsed };
}
