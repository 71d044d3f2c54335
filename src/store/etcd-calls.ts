import { ConsecutiveBreaker, circuitBreaker, handleWhen, isBrokenCircuitError } from "cockatiel";
import {
  EtcdLeaseInvalidError,
  GRPCDeadlineExceededError,
  type IOptions,
  isRecoverableError,
} from "etcd3";
import { abortError, RpcError } from "../core/index.js";

/** etcd lease ids are positive int64s in decimal. */
const LEASE_ID = /^[1-9][0-9]{0,18}$/;
const MAX_LEASE_ID = 2n ** 63n - 1n;

type FaultPolicy = NonNullable<NonNullable<IOptions["faultHandling"]>["global"]>;

/**
 * etcd3's default policies retry every call (a write could apply twice) and
 * trip a circuit breaker that keeps failing calls for 5 s after etcd is back.
 * The store decides retries itself, so the client only passes calls through.
 */
const passThrough: Pick<FaultPolicy, "execute"> = {
  execute: (fn) => Promise.resolve().then(() => fn({ signal: new AbortController().signal })),
};

/** How long a member that refused a connection is left out before one call tries it again. */
export const HOST_DOWN_MS = 1000;

/**
 * etcd3 fault handling for a store of `hosts` endpoints. The client itself
 * never retries (the store decides, knowing reads from writes). With several
 * members, each has a circuit breaker (cockatiel, as etcd3's default) that
 * opens on the first call that could not even be sent to it (connection
 * refused, no leader there): etcd3's pool then skips that member and picks
 * another, and after HOST_DOWN_MS lets one call try it again. Errors after a
 * call was sent never open it. One member alone is never skipped.
 */
export function storeFaultHandling(hosts: number): NonNullable<IOptions["faultHandling"]> {
  return {
    host: () =>
      hosts === 1
        ? (passThrough as FaultPolicy)
        : circuitBreaker(handleWhen(isUnsent), {
            halfOpenAfter: HOST_DOWN_MS,
            breaker: new ConsecutiveBreaker(1),
          }),
    global: passThrough as FaultPolicy,
  };
}

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
    err instanceof Error && isRecoverableError(err) && !(err instanceof GRPCDeadlineExceededError)
  );
}

/** Maps an etcd client failure to the store's RpcError: LEASE_NOT_FOUND, VALUE_TOO_LARGE or STORE_UNAVAILABLE. */
export function toRpcError(err: unknown): RpcError {
  if (err instanceof RpcError) return err;
  if (err instanceof EtcdLeaseInvalidError) return new RpcError("LEASE_NOT_FOUND", { cause: err });
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
