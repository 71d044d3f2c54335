// The etcd state store: etcd behind the KvStore contract, composed of its
// client (etcd-client.ts), call runner (etcd-call-runner.ts), key
// conversions (etcd-keys.ts), leases (etcd-leases.ts) and watches
// (etcd-watch.ts).

import { createEtcdCallRunner } from "./etcd-call-runner.js";
import { closedError, leaseId, toBuffer } from "./etcd-calls.js";
import { createEtcdClient } from "./etcd-client.js";
import { createEtcdHosts } from "./etcd-hosts.js";
import { createEtcdKeys } from "./etcd-keys.js";
import { createEtcdLeases } from "./etcd-leases.js";
import { type EtcdStoreOptions, resolveOptions } from "./etcd-options.js";
import { createEtcdWatch } from "./etcd-watch.js";
import type { KvStore, PutOptions, RangeOptions, TxnRequest } from "./kv-store.js";
import {
  checkKey,
  checkPrefix,
  checkTxn,
  checkValue,
  prefixEnd,
  rangeLimit,
} from "./store-checks.js";

/** Options of {@link createEtcdStore}; defined in etcd-options.ts, exported here with the factory. */
export type { EtcdStoreOptions } from "./etcd-options.js";

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
  const client = createEtcdClient(config, hosts);
  const inflight = new Set<Promise<unknown>>();
  let closing: Promise<void> | undefined;
  const { fullKey, rangeStart, stripKey, toKeyValue, toOp } = createEtcdKeys(base);
  const call = createEtcdCallRunner({
    callTimeoutMs: config.callTimeoutMs,
    inflight,
    isClosing: () => closing !== undefined,
  });
  const leases = createEtcdLeases({ client, hosts, call, callTimeoutMs: config.callTimeoutMs });

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
    grantLease: leases.grantLease,
    lease: (id, ttlMs) => leases.lease(id, ttlMs),
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
        leases.close(err);
        hosts.close();
        await Promise.allSettled([...inflight]);
        client.close();
      })();
      return closing;
    },
  };
  return store;
}
