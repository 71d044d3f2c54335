import { RpcError, throwIfAborted as throwIfSignalAborted } from "../core/index.js";
import {
  MAX_KEY_LENGTH,
  MAX_RANGE_LIMIT,
  MAX_TXN_OPS,
  MAX_VALUE_BYTES,
  type StoreCallOptions,
  type TxnRequest,
} from "./kv-store.js";

const KEY = /^[\x21-\x7e]+$/;

/** Throws TypeError for a key outside the contract (keys are chosen by code, not by clients). */
export function checkKey(key: string): void {
  if (key.length === 0 || key.length > MAX_KEY_LENGTH || !KEY.test(key)) {
    throw new TypeError(
      `store key must be 1-${MAX_KEY_LENGTH} printable ASCII characters: ${JSON.stringify(key.slice(0, 80))}`,
    );
  }
}

/** Prefixes may be empty (everything) but otherwise follow the key rules. */
export function checkPrefix(prefix: string): void {
  if (prefix !== "") checkKey(prefix);
}

/** Throws VALUE_TOO_LARGE for a value over the limit. */
export function checkValue(value: Uint8Array): void {
  if (value.byteLength > MAX_VALUE_BYTES) {
    throw new RpcError("VALUE_TOO_LARGE", {
      cause: new Error(`value of ${value.byteLength} bytes`),
    });
  }
}

/** Validates a txn request. */
export function checkTxn(request: TxnRequest): void {
  const ops = [...request.success, ...(request.failure ?? [])];
  if (request.compares.length + ops.length > MAX_TXN_OPS) {
    throw new TypeError(`a txn holds at most ${MAX_TXN_OPS} compares and operations`);
  }
  for (const c of request.compares) {
    checkKey(c.key);
    if (!Number.isSafeInteger(c.modRevision) || c.modRevision < 0)
      throw new TypeError("compare modRevision must be >= 0");
  }
  for (const op of ops) {
    checkKey(op.key);
    if (op.type === "put") checkValue(op.value);
  }
}

/** The page size to use for a range read. */
export function rangeLimit(limit: number | undefined): number {
  if (limit === undefined) return 1000;
  if (!Number.isInteger(limit) || limit < 1)
    throw new TypeError("range limit must be a positive integer");
  return Math.min(limit, MAX_RANGE_LIMIT);
}

/** Rejects at once when the call's signal is already aborted. */
export function throwIfAborted(options: StoreCallOptions | undefined): void {
  throwIfSignalAborted(options?.signal);
}

/** The smallest string greater than every key with this prefix (keys are printable ASCII). */
export function prefixEnd(prefix: string): string {
  return `${prefix}\x7f`;
}
