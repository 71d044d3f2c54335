import { isBrokenCircuitError } from "cockatiel";
import { abortError, RpcError } from "../core/index.js";
import { etcd3 } from "./etcd3-module.js";

/** etcd lease ids are positive int64s in decimal. */
const LEASE_ID = /^[1-9][0-9]{0,18}$/;
const MAX_LEASE_ID = 2n ** 63n - 1n;

/**
 * The call never reached an etcd member that could act on it: no connection
 * (refused, not yet established), every member's circuit open, or a member
 * without a leader, which refuses before proposing. Safe to send again, even
 * a write; anything else after sending (a timeout, a dropped connection,
 * "leader changed") may have applied and is not.
 */
export function isUnsent(err: unknown): boolean {
  if (isBrokenCircuitError(err)) return true;
  if (!(err instanceof Error)) return false;
  return /No connection established|ECONNREFUSED|etcdserver: no leader/.test(err.message);
}

/** A lease id this store could have granted; anything else cannot exist in etcd. */
export function leaseId(id: string): string {
  if (typeof id !== "string" || !LEASE_ID.test(id) || BigInt(id) > MAX_LEASE_ID) {
    throw new RpcError("LEASE_NOT_FOUND");
  }
  return id;
}

/** A Buffer view of `value`'s bytes, without copying. */
export function toBuffer(value: Uint8Array): Buffer {
  return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
}

/** The STORE_UNAVAILABLE error of every call made after close(). */
export function closedError(): RpcError {
  return new RpcError("STORE_UNAVAILABLE", { cause: new Error("etcd store is closed") });
}

/** Failures worth another attempt of a read; a missed deadline means the budget is spent. */
export function isTransient(err: unknown): boolean {
  return (
    err instanceof Error &&
    etcd3().isRecoverableError(err) &&
    !(err instanceof etcd3().GRPCDeadlineExceededError)
  );
}

/** Maps an etcd client failure to the store's RpcError: LEASE_NOT_FOUND, VALUE_TOO_LARGE or STORE_UNAVAILABLE. */
export function toRpcError(err: unknown): RpcError {
  if (err instanceof RpcError) return err;
  if (err instanceof etcd3().EtcdLeaseInvalidError)
    return new RpcError("LEASE_NOT_FOUND", { cause: err });
  // etcd's --max-request-bytes (1.5 MiB by default) bounds a whole request, e.g. a txn of big
  // values; past it plus 512 KiB, etcd's gRPC server refuses the message before etcd sees it.
  if (err instanceof Error && /request is too large|message larger than max/.test(err.message)) {
    return new RpcError("VALUE_TOO_LARGE", { cause: err });
  }
  return new RpcError("STORE_UNAVAILABLE", { cause: err });
}

/** Settles like `promise`, or rejects (core `abortError`) as soon as `signal` aborts. */
export function abortable<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (signal === undefined) return promise;
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(abortError(signal));
    if (signal.aborted) return onAbort();
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener("abort", onAbort);
        resolve(value);
      },
      (err: unknown) => {
        signal.removeEventListener("abort", onAbort);
        reject(err);
      },
    );
  });
}
