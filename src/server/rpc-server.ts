import type { Http2SecureServer } from "node:http2";
import * as grpc from "@grpc/grpc-js";
import type { CallObserver, Logger, ServiceBinding, Stage } from "../core/index.js";
import { bindError } from "./bind-error.js";
import type { Config } from "./config-schema.js";
import { type DropReason, guardConnections } from "./connection-guard.js";
import { createGrpcAdapter } from "./grpc-adapter.js";
import { ReloadableServerCredentials } from "./reloadable-credentials.js";
import type { TlsMaterial } from "./tls-material.js";

/**
 * The only suites offered: ECDHE key exchange (forward secrecy) with AEAD
 * ciphers. TLS 1.3's three are AEAD by design; for TLS 1.2 (tls.minVersion)
 * this leaves out RSA key exchange, CBC and SHA-1 MACs.
 */
export const TLS_CIPHERS = [
  "TLS_AES_128_GCM_SHA256",
  "TLS_AES_256_GCM_SHA384",
  "TLS_CHACHA20_POLY1305_SHA256",
  "ECDHE-ECDSA-AES128-GCM-SHA256",
  "ECDHE-ECDSA-AES256-GCM-SHA384",
  "ECDHE-ECDSA-CHACHA20-POLY1305",
  "ECDHE-RSA-AES128-GCM-SHA256",
  "ECDHE-RSA-AES256-GCM-SHA384",
  "ECDHE-RSA-CHACHA20-POLY1305",
].join(":");

/** Options of {@link startRpcServer}. */
export interface RpcServerOptions {
  /** HOST:PORT; port 0 picks a free port. */
  readonly listen: string;
  readonly tls: TlsMaterial;
  readonly tlsOptions: Config["tls"];
  readonly limits: Config["limits"];
  readonly services: readonly ServiceBinding[];
  readonly stages: readonly Stage[];
  readonly observer: CallObserver;
  readonly logger: Logger;
  /** Called for each connection or stream cut off by the limits (see guardConnections). */
  readonly onConnectionDrop?: (reason: DropReason) => void;
}

/** A serving gRPC endpoint. */
export interface RpcServer {
  /** HOST:PORT actually bound. */
  readonly address: string;
  /** New TLS files for new handshakes; open connections are kept. */
  reloadTls(tls: TlsMaterial): void;
  /** Open HTTP/2 connections. */
  connections(): number;
  /** Calls in flight. */
  inFlight(): number;
  /** Puts another listener (the panel's) under this port's connection limits (see ConnectionGuard.add). */
  guard(server: Http2SecureServer): void;
  /**
   * Stops taking calls, lets calls in flight finish for up to `drainTimeoutMs`,
   * then cuts off whatever is left. Resolves with whether everything finished.
   */
  shutdown(drainTimeoutMs: number): Promise<{ drained: boolean }>;
}

/**
 * Starts grpc-js over TLS with every limit bounded: TLS 1.3 by default, a
 * client certificate requested (verified against the client CA; unverified
 * ones never become identities), message sizes, concurrent streams, session
 * memory, header size and count, keepalive, idle and connection age.
 */
export async function startRpcServer(options: RpcServerOptions): Promise<RpcServer> {
  const { limits, tlsOptions } = options;
  const context = (tls: TlsMaterial) => ({
    cert: tls.certPem,
    key: tls.keyPem,
    ca: tls.clientCaPem,
    minVersion: tlsOptions.minVersion,
    ciphers: TLS_CIPHERS,
    honorCipherOrder: true,
  });
  const credentials = new ReloadableServerCredentials(
    {
      requestCert: true,
      rejectUnauthorized: false,
      minVersion: tlsOptions.minVersion,
      ciphers: TLS_CIPHERS,
      honorCipherOrder: true,
      handshakeTimeout: tlsOptions.handshakeTimeoutMs,
      allowHTTP1: false,
      maxSessionMemory: limits.maxSessionMemoryMib,
      maxHeaderListPairs: limits.maxHeaderPairs,
      maxSendHeaderBlockLength: 64 * 1024,
      unknownProtocolTimeout: 10_000,
      settings: {
        maxConcurrentStreams: limits.maxConcurrentStreams,
        maxHeaderListSize: limits.maxMetadataBytes,
      },
    },
    context(options.tls),
  );
  const server = new grpc.Server({
    "grpc.max_receive_message_length": limits.maxRequestBytes,
    // The adapter refuses oversize responses itself with a clear reason; this is the backstop.
    "grpc.max_send_message_length": limits.maxResponseBytes + 64 * 1024,
    "grpc.max_concurrent_streams": limits.maxConcurrentStreams,
    "grpc-node.max_session_memory": limits.maxSessionMemoryMib,
    "grpc.keepalive_time_ms": limits.keepaliveTimeMs,
    "grpc.keepalive_timeout_ms": limits.keepaliveTimeoutMs,
    "grpc.max_connection_idle_ms": limits.maxConnectionIdleMs,
    "grpc.max_connection_age_ms": limits.maxConnectionAgeMs,
    "grpc.max_connection_age_grace_ms": limits.maxConnectionAgeGraceMs,
    "grpc.enable_channelz": 0,
  });
  const adapter = createGrpcAdapter({
    services: options.services,
    stages: options.stages,
    observer: options.observer,
    logger: options.logger,
    maxResponseBytes: limits.maxResponseBytes,
    writeStallMs: limits.streamWriteStallMs,
  });
  adapter.register(server);
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(options.listen, credentials, (err, bound) =>
      err ? reject(bindError("--listen", "listen", options.listen, err)) : resolve(bound),
    );
  });
  // grpc-js keeps its HTTP/2 servers in a private map; the guard needs their listeners.
  const http2Servers = (server as unknown as { http2Servers?: Map<Http2SecureServer, unknown> })
    .http2Servers;
  const guard = guardConnections([...(http2Servers?.keys() ?? [])], {
    maxConnections: limits.maxConnections,
    maxConnectionsPerAddress: limits.maxConnectionsPerAddress,
    firstMessageTimeoutMs: limits.firstMessageTimeoutMs,
    reservedFds: limits.reservedFds,
    onDrop: options.onConnectionDrop ?? (() => {}),
    logger: options.logger,
  });
  const host = options.listen.slice(0, options.listen.lastIndexOf(":"));
  // grpc-js keeps its HTTP/2 sessions per listening server in a private map
  // (its `sessions` map is filled only with channelz on); reading it is the only way to count them.
  const listeners = (
    server as unknown as { http2Servers?: Map<unknown, { sessions: Set<unknown> }> }
  ).http2Servers;
  const countSessions = () => {
    let n = 0;
    for (const l of listeners?.values() ?? []) n += l.sessions.size;
    return n;
  };
  return {
    address: `${host}:${port}`,
    reloadTls: (tls) => credentials.reload(context(tls)),
    connections: countSessions,
    inFlight: () => adapter.inFlight(),
    guard: (s) => guard.add(s),
    shutdown(drainTimeoutMs) {
      return new Promise((resolve) => {
        let settled = false;
        const finish = (drained: boolean) => {
          if (settled) return;
          settled = true;
          guard.close();
          clearTimeout(timer);
          resolve({ drained });
        };
        const timer = setTimeout(() => {
          adapter.abortAll("drain deadline passed");
          server.forceShutdown();
          finish(false);
        }, drainTimeoutMs);
        server.tryShutdown(() => finish(true));
      });
    },
  };
}
