// The etcd backend's one way of making a call: under the store's deadline
// and the caller's signal, retried only when that is safe for its kind, and
// tracked so that close() can wait for it.

import { setTimeout as sleep } from "node:timers/promises";
import { RpcError, rethrowAborted } from "../core/index.js";
import { abortable, closedError, isTransient, isUnsent, toRpcError } from "./etcd-calls.js";
import { etcd3 } from "./etcd3-module.js";
import type { StoreCallOptions } from "./kv-store.js";
import { throwIfAborted } from "./store-checks.js";

/** A read attempt that ran out of its own deadline (the call's may remain). */
const attemptTimedOut = (err: unknown) => err instanceof etcd3().GRPCDeadlineExceededError;

/** Attempts of an idempotent read before it fails with STORE_UNAVAILABLE. */
const READ_ATTEMPTS = 4;
/** Attempts of a write that was never sent (each try found no member to take it). */
const UNSENT_ATTEMPTS = 12;
const READ_BACKOFF_MS = 50;
const MAX_BACKOFF_MS = 500;
/** One read attempt's deadline, so a member that stopped answering costs a retry, not the call. */
const READ_ATTEMPT_MS = 2000;

/** What a call is, for its retries: a read, a lease renewal or a write. */
export type EtcdCallKind = "read" | "renew" | "write";

/** Runs `op` as one store call of `kind`; see {@link createEtcdCallRunner}. */
export type EtcdCall = <T>(
  kind: EtcdCallKind,
  opts: StoreCallOptions | undefined,
  op: (callOptions: { deadline: number }, signal: AbortSignal | undefined) => Promise<T>,
) => Promise<T>;

/** What {@link createEtcdCallRunner} needs from the store. */
export interface EtcdCallRunnerDeps {
  /** Deadline of one call, retries included. */
  readonly callTimeoutMs: number;
  /** Every etcd call not yet settled; close() waits for them. */
  readonly inflight: Set<Promise<unknown>>;
  /** Whether close() has begun: no attempt starts after that. */
  readonly isClosing: () => boolean;
}

/**
 * Creates the call runner. Reads are retried on transient errors, or when
 * an attempt ran out of READ_ATTEMPT_MS; a renewal (a lease keepalive) only
 * on transient errors, its stream having failed (createKeepAlives sends
 * copies itself when a stream goes silent). Writes are sent again only when
 * they were never sent.
 */
export function createEtcdCallRunner(deps: EtcdCallRunnerDeps): EtcdCall {
  const { callTimeoutMs, inflight, isClosing } = deps;
  return async (kind, opts, op) => {
    throwIfAborted(opts);
    const signal = opts?.signal;
    const deadline = Date.now() + callTimeoutMs;
    for (let attempt = 1; ; attempt++) {
      if (isClosing()) throw closedError();
      const attemptDeadline =
        kind === "read" ? Math.min(deadline, Date.now() + READ_ATTEMPT_MS) : deadline;
      const pending = op({ deadline: attemptDeadline }, signal);
      // close() waits for the etcd call itself, even when its caller gave up.
      inflight.add(pending);
      const settled = () => inflight.delete(pending);
      pending.then(settled, settled);
      try {
        return await abortable(pending, signal);
      } catch (err) {
        if (err instanceof RpcError) throw err;
        const backoff = Math.min(MAX_BACKOFF_MS, READ_BACKOFF_MS * 2 ** (attempt - 1));
        const unsent = isUnsent(err);
        const again =
          Date.now() + backoff < deadline &&
          (kind === "write"
            ? unsent && attempt < UNSENT_ATTEMPTS
            : (attempt < READ_ATTEMPTS &&
                (isTransient(err) || (kind === "read" && attemptTimedOut(err)))) ||
              (unsent && attempt < UNSENT_ATTEMPTS));
        if (!again) throw toRpcError(err);
        await sleep(backoff, undefined, { signal }).catch(rethrowAborted(signal));
      }
    }
  };
}
