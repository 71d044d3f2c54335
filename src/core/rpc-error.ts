import type { Code } from "./code.js";
import { REASONS, type Reason } from "./reasons.js";

/** Options of an {@link RpcError}. */
export interface RpcErrorOptions {
  /** Client-safe detail that replaces the catalogue message (for example which field is wrong). */
  readonly message?: string;
  /** The real failure, for logs and audit only; never sent to clients. */
  readonly cause?: unknown;
  /** For RESOURCE_EXHAUSTED and UNAVAILABLE: when the client may try again. */
  readonly retryAfterMs?: number;
  /** For INVALID_ARGUMENT: every field that broke a rule (sent as google.rpc.BadRequest). */
  readonly fieldViolations?: readonly { readonly field: string; readonly description: string }[];
}

/**
 * The one error type of the service: a gRPC code, a stable machine `reason`
 * from the catalogue, a message safe to show clients, and the hidden cause.
 */
export class RpcError extends Error {
  override readonly name = "RpcError";
  /** The gRPC status code, derived from the reason. */
  readonly code: Code;
  /** The stable machine reason, for example `NODE_NOT_FOUND`. */
  readonly reason: Reason;
  /** What the client sees. */
  readonly clientMessage: string;
  /** When the client may try again, if the server knows. */
  readonly retryAfterMs: number | undefined;
  /** Fields that broke their rules, for INVALID_ARGUMENT. */
  readonly fieldViolations:
    | readonly { readonly field: string; readonly description: string }[]
    | undefined;

  constructor(reason: Reason, options: RpcErrorOptions = {}) {
    const spec = REASONS[reason];
    const clientMessage = options.message ?? spec.message;
    super(clientMessage, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = spec.code;
    this.reason = reason;
    this.clientMessage = clientMessage;
    this.retryAfterMs = options.retryAfterMs;
    this.fieldViolations = options.fieldViolations;
  }
}

/**
 * Turns anything thrown by a handler or stage into an RpcError. Errors that
 * are not RpcErrors become `INTERNAL` with the original kept as the cause, so
 * nothing about them reaches the client.
 */
export function toRpcError(err: unknown): RpcError {
  if (err instanceof RpcError) return err;
  return new RpcError("INTERNAL", { cause: err });
}

/** True when `err` is an RpcError with one of the given codes. */
export function isRpcErrorWithCode(err: unknown, ...codes: Code[]): err is RpcError {
  return err instanceof RpcError && codes.includes(err.code);
}

/** A handler for an API method this server does not perform yet: always UNIMPLEMENTED (NOT_IMPLEMENTED). */
export async function notImplemented(): Promise<never> {
  throw new RpcError("NOT_IMPLEMENTED");
}
