import {
  castGrpcError,
  Etcd3,
  EtcdLeaseInvalidError,
  GRPCDeadlineExceededError,
  type IEvent,
  type IKeyValue,
  type IOptions,
  type IRequestOp,
  type IWatchResponse,
  isRecoverableError,
} from "etcd3";
import { RpcError } from "../core/index.js";
import type {
  KeyValue,
  KvStore,
  Lease,
  PutOptions,
  RangeOptions,
  StoreCallOptions,
  TxnOp,
  TxnRequest,
  WatchEvent,
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

/** Options of {@link createEtcdStore}. */
export interface EtcdStoreOptions {
  /** etcd client URLs with an explicit port, `http://host:port` or `https://host:port`; one scheme for all. */
  readonly endpoints: readonly string[];
  /** Namespace of every key this store touches (default "/debvisor/"); printable ASCII, may be empty. */
  readonly prefix?: string;
  /** TLS to etcd (endpoints must be https): the CA of etcd's certificate, optionally a client certificate and key. */
  readonly tls?: { readonly caPem: string; readonly certPem?: string; readonly keyPem?: string };
  /** How long a watch may stay disconnected while it reconnects before it ends with STORE_UNAVAILABLE (default 5000). */
  readonly dialTimeoutMs?: number;
  /** Deadline of one store call, retries of reads included (default 10000). */
  readonly callTimeoutMs?: number;
}

interface EtcdStoreConfig {
  readonly endpoints: readonly string[];
  readonly prefix: string;
  readonly tls: EtcdStoreOptions["tls"];
  readonly dialTimeoutMs: number;
  readonly callTimeoutMs: number;
}

/** A watcher further behind than this many events is ended instead of buffering without bound. */
const MAX_WATCH_BACKLOG = 100_000;
/** Attempts of an idempotent read before it fails with STORE_UNAVAILABLE. */
const READ_ATTEMPTS = 4;
const READ_BACKOFF_MS = 50;
const WATCH_BACKOFF_MS = { first: 100, max: 2000 };
const EMPTY = new Uint8Array(0);
const ENDPOINT = /^(https?):\/\/([^/?#@\s]+):(\d{1,5})\/?$/;
const PRINTABLE = /^[\x21-\x7e]*$/;
/** etcd lease ids are positive int64s in decimal. */
const LEASE_ID = /^[1-9][0-9]{0,18}$/;
const MAX_LEASE_ID = 2n ** 63n - 1n;

type FaultPolicy = NonNullable<NonNullable<IOptions["faultHandling"]>["global"]>;
type WatchStream = Awaited<ReturnType<Etcd3["watchClient"]["watch"]>>;

/**
 * etcd3's default policies retry every call (a write could apply twice) and
 * trip a circuit breaker that keeps failing calls for 5 s after etcd is back.
 * The store decides retries itself, so the client only passes calls through.
 */
const passThrough: Pick<FaultPolicy, "execute"> = {
  execute: (fn) => Promise.resolve().then(() => fn({ signal: new AbortController().signal })),
};

/**
 * The etcd backend. Keys live under `prefix`; revisions are etcd's own, so
 * "read a range, watch from its revision + 1" holds exactly. Reads are
 * linearizable and retried on transient failures within `callTimeoutMs`;
 * writes are sent once (one that may have applied is never re-sent) and fail
 * with STORE_UNAVAILABLE. Watches use their own etcd stream and resume after
 * a disconnect from the last event they delivered, without loss or repeats.
 */
export function createEtcdStore(options: EtcdStoreOptions): KvStore {
  const config = resolveOptions(options);
  const base = config.prefix;
  const client = new Etcd3({
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
    faultHandling: { host: () => passThrough as FaultPolicy, global: passThrough as FaultPolicy },
  });
  const inflight = new Set<Promise<unknown>>();
  const watches = new Set<(err: RpcError) => void>();
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
   * Reads are retried on transient errors; writes never are.
   */
  const call = async <T>(
    kind: "read" | "write",
    opts: StoreCallOptions | undefined,
    op: (callOptions: { deadline: number }, signal: AbortSignal | undefined) => Promise<T>,
  ): Promise<T> => {
    throwIfAborted(opts);
    const signal = opts?.signal;
    const deadline = Date.now() + config.callTimeoutMs;
    for (let attempt = 1; ; attempt++) {
      if (closing) throw closedError();
      const pending = op({ deadline }, signal);
      // close() waits for the etcd call itself, even when its caller gave up.
      inflight.add(pending);
      const settled = () => inflight.delete(pending);
      pending.then(settled, settled);
      try {
        return await abortable(pending, signal);
      } catch (err) {
        if (err instanceof RpcError) throw err;
        const backoff = READ_BACKOFF_MS * 2 ** (attempt - 1);
        const again =
          kind === "read" &&
          attempt < READ_ATTEMPTS &&
          isTransient(err) &&
          Date.now() + backoff < deadline;
        if (!again) throw toRpcError(err);
        await sleep(backoff, signal);
      }
    }
  };

  /** One keepalive on its own short stream, cancelled if the caller aborts. */
  const keepAliveOnce = async (
    id: string,
    callOptions: { deadline: number },
    signal: AbortSignal | undefined,
  ): Promise<number> => {
    const stream = await client.leaseClient.leaseKeepAlive(callOptions);
    return new Promise<number>((resolve, reject) => {
      let done = false;
      const finish = (settle: () => void, cancel: boolean) => {
        if (done) return;
        done = true;
        signal?.removeEventListener("abort", onAbort);
        stream.end();
        if (cancel) stream.cancel();
        settle();
      };
      const onAbort = () => finish(() => reject(new RpcError("CANCELLED")), true);
      signal?.addEventListener("abort", onAbort);
      stream.on("data", (res) => finish(() => resolve(Number(res.TTL)), false));
      stream.on("error", (err) => finish(() => reject(castGrpcError(err)), true));
      stream.on("end", () =>
        finish(() => reject(new Error("etcd ended the keepalive stream without an answer")), true),
      );
      stream.write({ ID: id });
    });
  };

  const makeLease = (id: string, ttlMs: number): Lease =>
    Object.freeze({
      id,
      ttlMs,
      async keepAlive(opts?: StoreCallOptions) {
        // Renewing twice is harmless, so a keepalive is retried like a read.
        const ttl = await call("read", opts, (o, signal) => keepAliveOnce(id, o, signal));
        if (!(ttl > 0)) throw new RpcError("LEASE_NOT_FOUND");
      },
      async revoke(opts?: StoreCallOptions) {
        await call("write", opts, (o) => client.leaseClient.leaseRevoke({ ID: id }, o));
      },
    });

  async function* watchEvents(
    prefix: string,
    fromRevision: number,
    signal: AbortSignal,
  ): AsyncGenerator<WatchEvent, void, undefined> {
    if (signal.aborted) return;
    if (closing) throw closedError();
    let start = fromRevision;
    if (start === 0) {
      try {
        start = (await store.revision({ signal })) + 1;
      } catch (err) {
        if (signal.aborted) return;
        throw err;
      }
    }
    const first = base + prefix;
    const range = { key: rangeStart(first), range_end: Buffer.from(prefixEnd(first)) };
    const state = {
      queue: [] as (WatchEvent | undefined)[],
      head: 0,
      failure: undefined as RpcError | undefined,
      wake: undefined as (() => void) | undefined,
      // Position of the last queued event: its revision and how many events of
      // that revision are queued (one txn writes several keys at one revision).
      acceptedRev: start - 1,
      acceptedCount: 0,
      stream: undefined as WatchStream | undefined,
      generation: 0,
      timer: undefined as NodeJS.Timeout | undefined,
      outageSince: Date.now() as number | undefined,
      backoffMs: WATCH_BACKOFF_MS.first,
      stopped: false,
    };
    const notify = () => {
      const wake = state.wake;
      state.wake = undefined;
      wake?.();
    };
    const dropStream = () => {
      state.generation++;
      clearTimeout(state.timer);
      state.timer = undefined;
      const stream = state.stream;
      state.stream = undefined;
      if (stream) {
        // end() first: etcd3 resets every connection to the host when a still
        // writable stream reports the cancellation as an error.
        stream.end();
        stream.cancel();
      }
    };
    const fail = (err: RpcError) => {
      if (state.stopped || state.failure) return;
      state.failure = err;
      dropStream();
      notify();
    };
    const retry = (cause: unknown) => {
      if (state.stopped || state.failure) return;
      dropStream();
      state.outageSince ??= Date.now();
      const left = state.outageSince + config.dialTimeoutMs - Date.now();
      if (left <= 0) return fail(new RpcError("STORE_UNAVAILABLE", { cause }));
      const wait = Math.min(state.backoffMs, left);
      state.backoffMs = Math.min(state.backoffMs * 2, WATCH_BACKOFF_MS.max);
      state.timer = setTimeout(connect, wait);
    };
    const onResponse = (res: IWatchResponse, position: { rev: number; index: number }) => {
      if (res.canceled) {
        const compacted = Number(res.compact_revision);
        return fail(
          compacted > 0
            ? new RpcError("WATCH_COMPACTED", {
                cause: new Error(`etcd history is compacted up to revision ${compacted}`),
              })
            : new RpcError("STORE_UNAVAILABLE", {
                cause: new Error(`etcd cancelled the watch: ${res.cancel_reason}`),
              }),
        );
      }
      if (res.created) {
        clearTimeout(state.timer);
        state.timer = undefined;
        state.outageSince = undefined;
        state.backoffMs = WATCH_BACKOFF_MS.first;
      }
      for (const ev of res.events) {
        const rev = Number(ev.kv.mod_revision);
        if (rev === position.rev) position.index++;
        else {
          position.rev = rev;
          position.index = 0;
        }
        // A resumed stream replays the last revision: skip what was queued already.
        if (rev < state.acceptedRev) continue;
        if (rev === state.acceptedRev && position.index < state.acceptedCount) continue;
        if (rev > state.acceptedRev) {
          state.acceptedRev = rev;
          state.acceptedCount = 0;
        }
        state.acceptedCount++;
        state.queue.push(toWatchEvent(ev));
      }
      if (state.queue.length - state.head > MAX_WATCH_BACKLOG) {
        return fail(
          new RpcError("STORE_UNAVAILABLE", {
            message: "watcher fell too far behind; watch again",
          }),
        );
      }
      notify();
    };
    const connect = () => {
      state.timer = undefined;
      if (state.stopped || state.failure) return;
      const generation = ++state.generation;
      const current = () => generation === state.generation;
      // Resume at the last queued revision when only part of it may have arrived.
      const resumeFrom = state.acceptedCount > 0 ? state.acceptedRev : state.acceptedRev + 1;
      const position = { rev: 0, index: 0 };
      client.watchClient.watch().then(
        (stream) => {
          if (!current()) {
            stream.end();
            stream.cancel();
            return;
          }
          state.stream = stream;
          stream.on("data", (res) => current() && onResponse(res, position));
          stream.on("error", (err) => current() && retry(castGrpcError(err)));
          stream.on("end", () => current() && retry(new Error("etcd ended the watch stream")));
          stream.write({
            create_request: { ...range, start_revision: resumeFrom, progress_notify: false },
          });
          const left = (state.outageSince ?? Date.now()) + config.dialTimeoutMs - Date.now();
          state.timer = setTimeout(
            () => current() && retry(new Error("etcd did not confirm the watch in time")),
            Math.max(left, 1),
          );
        },
        (err: unknown) => current() && retry(err),
      );
    };

    const onAbort = () => notify();
    signal.addEventListener("abort", onAbort);
    watches.add(fail);
    connect();
    try {
      for (;;) {
        if (signal.aborted) return;
        if (state.head < state.queue.length) {
          const ev = state.queue[state.head] as WatchEvent;
          state.queue[state.head] = undefined;
          state.head++;
          if (state.head >= 1024 && state.head * 2 >= state.queue.length) {
            state.queue.splice(0, state.head);
            state.head = 0;
          }
          yield ev;
          continue;
        }
        // Events queued before a failure are still delivered: they are in order and complete.
        if (state.failure) throw state.failure;
        await new Promise<void>((resolve) => {
          state.wake = resolve;
        });
      }
    } finally {
      state.stopped = true;
      watches.delete(fail);
      signal.removeEventListener("abort", onAbort);
      dropStream();
    }
  }

  const toWatchEvent = (ev: IEvent): WatchEvent => {
    const put = String(ev.type).toLowerCase() === "put";
    return {
      type: put ? "put" : "delete",
      key: stripKey(ev.kv.key),
      value: put ? new Uint8Array(ev.kv.value) : EMPTY,
      revision: Number(ev.kv.mod_revision),
    };
  };

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
      return watchEvents(prefix, fromRevision, opts.signal);
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
        for (const stop of [...watches]) stop(err);
        await Promise.allSettled([...inflight]);
        client.close();
      })();
      return closing;
    },
  };
  return store;
}

/** Validates and defaults the options once, into a frozen config. */
function resolveOptions(options: EtcdStoreOptions): EtcdStoreConfig {
  if (!Array.isArray(options?.endpoints) || options.endpoints.length === 0) {
    throw new TypeError("etcd store: endpoints must list at least one URL");
  }
  const endpoints = options.endpoints.map((e: unknown) => {
    const m = typeof e === "string" ? ENDPOINT.exec(e) : null;
    if (m === null || Number(m[3]) < 1 || Number(m[3]) > 65535) {
      throw new TypeError(`etcd store: endpoint must be http(s)://host:port: ${String(e)}`);
    }
    return `${m[1]}://${m[2]}:${m[3]}`;
  });
  const https = endpoints.filter((e) => e.startsWith("https:")).length;
  if (https !== 0 && https !== endpoints.length) {
    throw new TypeError("etcd store: endpoints must all be http or all be https");
  }
  const tls = options.tls;
  if (tls !== undefined) {
    if (https === 0) throw new TypeError("etcd store: tls needs https endpoints");
    if (typeof tls.caPem !== "string" || tls.caPem === "") {
      throw new TypeError("etcd store: tls.caPem is required");
    }
    if ((tls.certPem === undefined) !== (tls.keyPem === undefined)) {
      throw new TypeError("etcd store: tls.certPem and tls.keyPem go together");
    }
  }
  const prefix = options.prefix ?? "/debvisor/";
  if (typeof prefix !== "string" || prefix.length > 256 || !PRINTABLE.test(prefix)) {
    throw new TypeError("etcd store: prefix must be at most 256 printable ASCII characters");
  }
  return Object.freeze({
    endpoints: Object.freeze(endpoints),
    prefix,
    tls:
      tls === undefined
        ? undefined
        : Object.freeze({ caPem: tls.caPem, certPem: tls.certPem, keyPem: tls.keyPem }),
    dialTimeoutMs: timeout("dialTimeoutMs", options.dialTimeoutMs, 5000),
    callTimeoutMs: timeout("callTimeoutMs", options.callTimeoutMs, 10_000),
  });
}

function timeout(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (!Number.isInteger(value) || value < 1 || value > 2 ** 31 - 1) {
    throw new TypeError(`etcd store: ${name} must be a positive integer of milliseconds`);
  }
  return value;
}

/** A lease id this store could have granted; anything else cannot exist in etcd. */
function leaseId(id: string): string {
  if (typeof id !== "string" || !LEASE_ID.test(id) || BigInt(id) > MAX_LEASE_ID) {
    throw new RpcError("LEASE_NOT_FOUND");
  }
  return id;
}

function toBuffer(value: Uint8Array): Buffer {
  return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
}

function closedError(): RpcError {
  return new RpcError("STORE_UNAVAILABLE", { cause: new Error("etcd store is closed") });
}

/** Failures worth another attempt of a read; a missed deadline means the budget is spent. */
function isTransient(err: unknown): boolean {
  return (
    err instanceof Error && isRecoverableError(err) && !(err instanceof GRPCDeadlineExceededError)
  );
}

function toRpcError(err: unknown): RpcError {
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
function abortable<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
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

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
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
