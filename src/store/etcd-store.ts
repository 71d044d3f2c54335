import { setTimeout as sleep } from "node:timers/promises";
import type { IKeyValue, IRequestOp } from "etcd3";
import { RpcError, rethrowAborted } from "../core/index.js";
import {
  abortable,
  closedError,
  isTransient,
  isUnsent,
  leaseId,
  toBuffer,
  toRpcError,
} from "./etcd-calls.js";
import { createEtcdHosts } from "./etcd-hosts.js";
import { createKeepAlives, type KeepAlives } from "./etcd-keepalive.js";
import { type EtcdStoreOptions, resolveOptions } from "./etcd-options.js";
import { createEtcdWatch } from "./etcd-watch.js";
import { etcd3 } from "./etcd3-module.js";
import type {
  KeyValue,
  KvStore,
  Lease,
  PutOptions,
  RangeOptions,
  StoreCallOptions,
  TxnOp,
  TxnRequest,
} from "./kv-store.js";
import {
  checkKey,
  checkPrefix,
  checkTxn,
  checkValue,
  prefixEnd,
  rangeLimit,
  throwIfAborted,
} from "./store-checks.js";

/** A read attempt that ran out of its own deadline (the call's may remain). */
const attemptTimedOut = (err: unknown) => err instanceof etcd3().GRPCDeadlineExceededError;

/** Options of {@link createEtcdStore}; defined in etcd-options.ts, exported here with the factory. */
export type { EtcdStoreOptions } from "./etcd-options.js";

/** Attempts of an idempotent read before it fails with STORE_UNAVAILABLE. */
const READ_ATTEMPTS = 4;
/** Attempts of a write that was never sent (each try found no member to take it). */
const UNSENT_ATTEMPTS = 12;
const READ_BACKOFF_MS = 50;
const MAX_BACKOFF_MS = 500;
/** LeaseKeepAlive streams a store spreads its leases over (each opened on first use). */
const KEEPALIVE_STREAMS = 16;
/** One read attempt's deadline, so a member that stopped answering costs a retry, not the call. */
const READ_ATTEMPT_MS = 2000;
/**
 * A keepalive stream silent this long with keepalives waiting has them sent
 * again on a new stream (at most a third of the call's deadline, so a
 * renewal can try three members).
 */
const KEEPALIVE_SILENT_MS = 3000;

/**
 * The etcd backend. Keys live under `prefix`; revisions are etcd's own, so
 * "read a range, watch from its revision + 1" holds exactly. Reads are
 * linearizable and retried on transient failures within `callTimeoutMs`,
 * each attempt bounded by READ_ATTEMPT_MS; writes are re-sent only when they
 * never reached a member (one that may have applied is never re-sent), else
 * fail with STORE_UNAVAILABLE. Lease keepalives are sent again only when
 * their stream failed or went silent (see createKeepAlives). With several
 * endpoints, a member that refuses connections, or whose keepalive stream
 * alone went silent, is skipped for a while (see createEtcdHosts). Watches use
 * their own etcd stream and resume after a disconnect from the last event
 * they delivered, without loss or repeats.
 */
export function createEtcdStore(options: EtcdStoreOptions): KvStore {
  const config = resolveOptions(options);
  const base = config.prefix;
  const hosts = createEtcdHosts(config.endpoints.length);
  const client = new (etcd3().Etcd3)({
    hosts: [...config.endpoints],
    ...(config.tls && {
      credentials: {
        rootCertificate: Buffer.from(config.tls.caPem),
        privateKey: config.tls.keyPem === undefined ? undefined : Buffer.from(config.tls.keyPem),
        certChain: config.tls.certPem === undefined ? undefined : Buffer.from(config.tls.certPem),
      },
    }),
    // Not used by etcd3 1.1.2; passed for versions that honour it.
    dialTimeout: config.dialTimeoutMs,
    grpcOptions: {
      // A range page of large values easily exceeds gRPC's 4 MiB default.
      "grpc.max_receive_message_length": -1,
      // Detects a dead peer under a long-lived watch (etcd allows pings every 5 s).
      "grpc.keepalive_time_ms": 30_000,
      "grpc.keepalive_timeout_ms": 10_000,
      // Subchannels are shared; gRPC's 120 s default backoff would outlast an etcd restart.
      "grpc.initial_reconnect_backoff_ms": 200,
      "grpc.max_reconnect_backoff_ms": 2000,
    },
    faultHandling: hosts.faultHandling,
  });
  const inflight = new Set<Promise<unknown>>();
  let closing: Promise<void> | undefined;

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

  /**
   * Runs one etcd call under the store's deadline and the caller's signal.
   * Reads are retried on transient errors, or when an attempt ran out of
   * READ_ATTEMPT_MS; a renewal (a lease keepalive) only on transient errors,
   * its stream having failed (createKeepAlives sends copies itself when a
   * stream goes silent). Writes are sent again only when they were never sent.
   */
  const call = async <T>(
    kind: "read" | "renew" | "write",
    opts: StoreCallOptions | undefined,
    op: (callOptions: { deadline: number }, signal: AbortSignal | undefined) => Promise<T>,
  ): Promise<T> => {
    throwIfAborted(opts);
    const signal = opts?.signal;
    const deadline = Date.now() + config.callTimeoutMs;
    for (let attempt = 1; ; attempt++) {
      if (closing) throw closedError();
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

  // A lease's keepalives always ride the same stream of a few: etcd answers one
  // stream's keepalives one by one, so one stream for thousands of nodes queued
  // them past their deadline on a loaded host (and a missed deadline fails every
  // keepalive waiting on that stream); several are answered side by side.
  const keepAliveStreams = Array.from({ length: KEEPALIVE_STREAMS }, () =>
    createKeepAlives({
      open: (avoid) => hosts.openAvoiding(avoid, () => client.leaseClient.leaseKeepAlive()),
      toError: (err) =>
        err instanceof Error ? etcd3().castGrpcError(err) : new Error(String(err)),
      silentMs: Math.min(KEEPALIVE_SILENT_MS, Math.floor(config.callTimeoutMs / 3)),
      onSilent: (stream) => hosts.setAside(stream),
    }),
  );
  const keepAlivesOf = (id: string) =>
    keepAliveStreams[(Number(id.slice(-6)) || 0) % KEEPALIVE_STREAMS] as KeepAlives;

  const makeLease = (id: string, ttlMs: number): Lease =>
    Object.freeze({
      id,
      ttlMs,
      async keepAlive(opts?: StoreCallOptions) {
        // Renewing twice is harmless: sent again on a new stream when its own failed.
        const ttl = await call("renew", opts, (o, signal) =>
          keepAlivesOf(id).keepAlive(id, o.deadline, signal),
        );
        if (!(ttl > 0)) throw new RpcError("LEASE_NOT_FOUND");
      },
      async revoke(opts?: StoreCallOptions) {
        await call("write", opts, (o) => client.leaseClient.leaseRevoke({ ID: id }, o));
      },
    });

  const watch = createEtcdWatch({
    open: (avoid) => hosts.openAvoiding(avoid, () => client.watchClient.watch()),
    elsewhere: config.endpoints.length > 1,
    config,
    rangeStart,
    stripKey,
    isClosing: () => closing !== undefined,
    revision: (opts) => store.revision(opts),
  });

  const store: KvStore = {
    backend: "etcd",
    async get(key, opts) {
      checkKey(key);
      const res = await call("read", opts, (o) => client.kv.range({ key: fullKey(key) }, o));
      const kv = res.kvs[0];
      return kv === undefined ? undefined : toKeyValue(kv);
    },
    async put(key, value, opts?: PutOptions) {
      checkKey(key);
      checkValue(value);
      const lease = opts?.lease === undefined ? undefined : leaseId(opts.lease);
      const res = await call("write", opts, (o) =>
        client.kv.put(
          { key: fullKey(key), value: toBuffer(value), ...(lease !== undefined && { lease }) },
          o,
        ),
      );
      return Number(res.header.revision);
    },
    async delete(key, opts) {
      checkKey(key);
      const res = await call("write", opts, (o) => client.kv.deleteRange({ key: fullKey(key) }, o));
      return { revision: Number(res.header.revision), deleted: Number(res.deleted) > 0 };
    },
    async range(prefix, opts?: RangeOptions) {
      checkPrefix(prefix);
      const limit = rangeLimit(opts?.limit);
      const first = base + prefix;
      let start = first;
      if (opts?.after !== undefined) {
        checkPrefix(opts.after);
        // The smallest key strictly after `after`.
        const next = `${base}${opts.after}\0`;
        if (next > start) start = next;
      }
      // No sort order: etcd returns keys in key order already, and asking for
      // one makes etcd 3.4 read the whole range before applying the limit.
      const res = await call("read", opts, (o) =>
        client.kv.range(
          { key: rangeStart(start), range_end: Buffer.from(prefixEnd(first)), limit },
          o,
        ),
      );
      return {
        kvs: res.kvs.map(toKeyValue),
        more: res.more,
        revision: Number(res.header.revision),
      };
    },
    async txn(request: TxnRequest, opts) {
      checkTxn(request);
      const req = {
        compare: request.compares.map((c) => ({
          key: fullKey(c.key),
          target: "Mod" as const,
          result: "Equal" as const,
          // etcd compares an absent key as mod_revision 0: create-if-absent.
          mod_revision: c.modRevision,
        })),
        success: request.success.map(toOp),
        failure: (request.failure ?? []).map(toOp),
      };
      const res = await call("write", opts, (o) => client.kv.txn(req, o));
      return { succeeded: res.succeeded, revision: Number(res.header.revision) };
    },
    watch(prefix, fromRevision, opts) {
      checkPrefix(prefix);
      if (!Number.isSafeInteger(fromRevision) || fromRevision < 0) {
        throw new TypeError("watch fromRevision must be an integer >= 0 (0: from now on)");
      }
      if (!(opts?.signal instanceof AbortSignal)) {
        throw new TypeError("watch needs an AbortSignal to end it");
      }
      return watch.events(prefix, fromRevision, opts.signal);
    },
    async grantLease(ttlMs, opts) {
      if (!Number.isInteger(ttlMs) || ttlMs < 1) {
        throw new TypeError("lease ttlMs must be a positive integer");
      }
      const ttlSeconds = Math.max(1, Math.ceil(ttlMs / 1000));
      const res = await call("write", opts, (o) =>
        client.leaseClient.leaseGrant({ TTL: ttlSeconds }, o),
      );
      if (res.error) {
        throw new RpcError("STORE_UNAVAILABLE", { cause: new Error(`lease grant: ${res.error}`) });
      }
      // etcd may raise the TTL to its own floor (about 2 s by default).
      return makeLease(res.ID, Math.max(ttlMs, Number(res.TTL) * 1000));
    },
    lease: (id, ttlMs) => makeLease(id, ttlMs),
    async revision(opts) {
      // A single-key read: cheap, and linearizable, so the revision is current.
      const res = await call("read", opts, (o) =>
        client.kv.range({ key: rangeStart(base), keys_only: true, limit: 1 }, o),
      );
      return Number(res.header.revision);
    },
    close() {
      closing ??= (async () => {
        const err = closedError();
        watch.failAll(err);
        for (const k of keepAliveStreams) k.close(err);
        hosts.close();
        await Promise.allSettled([...inflight]);
        client.close();
      })();
      return closing;
    },
  };
  return store;
}
