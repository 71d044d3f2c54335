// The store layer: one key-value contract (etcd's model) with an embedded
// SQLite backend and an etcd backend, plus typed protobuf helpers.

export type { BatchedUpdate, CasBatch } from "./cas-batch.js";
export { createCasBatch } from "./cas-batch.js";
export type { EtcdStoreOptions } from "./etcd-store.js";
export { createEtcdStore } from "./etcd-store.js";
export type {
  Compare,
  KeyValue,
  KvStore,
  Lease,
  PutOptions,
  RangeOptions,
  RangeResult,
  StoreBackend,
  StoreCallOptions,
  TxnOp,
  TxnRequest,
  TxnResult,
  WatchEvent,
} from "./kv-store.js";
export { MAX_KEY_LENGTH, MAX_RANGE_LIMIT, MAX_TXN_OPS, MAX_VALUE_BYTES } from "./kv-store.js";
export type { MirrorOptions, PrefixMirror } from "./prefix-mirror.js";
export { mirrorPrefix } from "./prefix-mirror.js";
export { LOST, retryWhileLost } from "./retry-while-lost.js";
export { settleWrite } from "./settle-write.js";
export type { SqliteStoreOptions } from "./sqlite-store.js";
export { createSqliteStore } from "./sqlite-store.js";
export type { Versioned } from "./typed-store.js";
export {
  decodeMessage,
  encodeMessage,
  getMessage,
  keyValueOf,
  rangeAll,
  updateMessage,
} from "./typed-store.js";
