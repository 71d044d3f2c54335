// The etcd backend's leases: granting and revoking them, and keeping them
// alive over a few long-lived LeaseKeepAlive streams.

import type { Etcd3 } from "etcd3";
import { RpcError } from "../core/index.js";
import type { EtcdCall } from "./etcd-call-runner.js";
import type { EtcdHosts } from "./etcd-hosts.js";
import { createKeepAlives, type KeepAlives } from "./etcd-keepalive.js";
import { etcd3 } from "./etcd3-module.js";
import type { Lease, StoreCallOptions } from "./kv-store.js";

/** LeaseKeepAlive streams a store spreads its leases over (each opened on first use). */
const KEEPALIVE_STREAMS = 16;
/**
 * A keepalive stream silent this long with keepalives waiting has them sent
 * again on a new stream (at most a third of the call's deadline, so a
 * renewal can try three members).
 */
const KEEPALIVE_SILENT_MS = 3000;

/** What {@link createEtcdLeases} needs from the store. */
export interface EtcdLeasesDeps {
  readonly client: Etcd3;
  readonly hosts: EtcdHosts;
  readonly call: EtcdCall;
  /** Deadline of one store call. */
  readonly callTimeoutMs: number;
}

/** The lease part of the etcd store. */
export interface EtcdLeases {
  /** See {@link KvStore.grantLease}. */
  grantLease(ttlMs: number, opts: StoreCallOptions | undefined): Promise<Lease>;
  /** A handle on lease `id`; see {@link KvStore.lease}. */
  lease(id: string, ttlMs: number): Lease;
  /** Ends every keepalive stream, failing the keepalives waiting on them with `err`. */
  close(err: Error): void;
}

/** Creates the lease part (its keepalive streams are opened on first use). */
export function createEtcdLeases(deps: EtcdLeasesDeps): EtcdLeases {
  const { client, hosts, call } = deps;

  // A lease's keepalives always ride the same stream of a few: etcd answers one
  // stream's keepalives one by one, so one stream for thousands of nodes queued
  // them past their deadline on a loaded host (and a missed deadline fails every
  // keepalive waiting on that stream); several are answered side by side.
  const keepAliveStreams = Array.from({ length: KEEPALIVE_STREAMS }, () =>
    createKeepAlives({
      open: (avoid) => hosts.openAvoiding(avoid, () => client.leaseClient.leaseKeepAlive()),
      toError: (err) =>
        err instanceof Error ? etcd3().castGrpcError(err) : new Error(String(err)),
      silentMs: Math.min(KEEPALIVE_SILENT_MS, Math.floor(deps.callTimeoutMs / 3)),
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

  return {
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
    lease: makeLease,
    close(err) {
      for (const k of keepAliveStreams) k.close(err);
    },
  };
}
