// The etcd backend's client: one etcd3 client per store, with the gRPC
// settings a long-lived control-plane connection needs.

import type { Etcd3 } from "etcd3";
import type { EtcdHosts } from "./etcd-hosts.js";
import type { EtcdStoreConfig } from "./etcd-options.js";
import { etcd3 } from "./etcd3-module.js";

/** Creates the etcd3 client of a store (loading etcd3 if needed); `hosts` decides its fault handling. */
export function createEtcdClient(config: EtcdStoreConfig, hosts: EtcdHosts): Etcd3 {
  return new (etcd3().Etcd3)({
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
}
