// The etcd backend's keys: the store's namespace (`prefix`) put on and taken
// off keys, and conversions between the contract's types and etcd's.

import type { IKeyValue, IRequestOp } from "etcd3";
import { leaseId, toBuffer } from "./etcd-calls.js";
import type { KeyValue, TxnOp } from "./kv-store.js";

/** Key conversions of one store's namespace; see {@link createEtcdKeys}. */
export interface EtcdKeys {
  /** The etcd key of store key `key`. */
  readonly fullKey: (key: string) => Buffer;
  /** The first etcd key of a range starting at `key`. */
  readonly rangeStart: (key: string) => Buffer;
  /** A store key from a full etcd key, the namespace removed. */
  readonly stripKey: (key: Buffer) => string;
  /** etcd's key-value as the contract's. */
  readonly toKeyValue: (kv: IKeyValue) => KeyValue;
  /** A txn operation as etcd's request op. */
  readonly toOp: (op: TxnOp) => IRequestOp;
}

/** Creates the key conversions for the namespace `base`. */
export function createEtcdKeys(base: string): EtcdKeys {
  const fullKey = (key: string) => Buffer.from(base + key);
  /** etcd refuses an empty key; "\0" sorts before every printable key. */
  const rangeStart = (key: string) => Buffer.from(key === "" ? "\0" : key);
  const stripKey = (key: Buffer) => key.toString().slice(base.length);

  const toKeyValue = (kv: IKeyValue): KeyValue => ({
    key: stripKey(kv.key),
    value: new Uint8Array(kv.value),
    createRevision: Number(kv.create_revision),
    modRevision: Number(kv.mod_revision),
    version: Number(kv.version),
    lease: kv.lease === "0" || kv.lease === "" ? undefined : kv.lease,
  });

  const toOp = (op: TxnOp): IRequestOp =>
    op.type === "put"
      ? {
          request_put: {
            key: fullKey(op.key),
            value: toBuffer(op.value),
            ...(op.lease !== undefined && { lease: leaseId(op.lease) }),
          },
        }
      : { request_delete_range: { key: fullKey(op.key) } };

  return { fullKey, rangeStart, stripKey, toKeyValue, toOp };
}
