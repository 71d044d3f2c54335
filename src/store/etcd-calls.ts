import {
  EtcdLeaseInvalidError,
  GRPCDeadlineExceededError,
  type IOptions,
  isRecoverableError,
} from "etcd3";
import { RpcError } from "../core/index.js";

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

/** etcd3 fault handling that runs every call exactly once: no client retries, no circuit breaker. */
export const passThroughFaults: NonNullable<IOptions["faultHandling"]> = {
  host: () => passThrough as FaultPolicy,
  global: passThrough as FaultPolicy,
};

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

/** Settles like `promise`, or rejects with CANCELLED as soon as `signal` aborts. */
export function abortable<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (signal === undefined) return promise;
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(new RpcError("CANCELLED"));
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

/** Resolves after `ms`, or rejects with CANCELLED as soon as `signal` aborts. */
export function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(timer);
      reject(new RpcError("CANCELLED"));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    if (signal?.aborted) return onAbort();
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
