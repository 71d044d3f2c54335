import * as grpc from "@grpc/grpc-js";
import type { CallObserver, Logger, ServiceBinding, Stage } from "../core/index.js";
import type { Config } from "./config-schema.js";
import { createGrpcAdapter } from "./grpc-adapter.js";
import { ReloadableServerCredentials } from "./reloadable-credentials.js";
import type { TlsMaterial } from "./tls-material.js";

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
  });
  const credentials = new ReloadableServerCredentials(
    {
      requestCert: true,
      rejectUnauthorized: false,
      minVersion: tlsOptions.minVersion,
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
      err ? reject(err) : resolve(bound),
    );
  });
  const host = options.listen.slice(0, options.listen.lastIndexOf(":"));
  // grpc-js keeps its HTTP/2 sessions in a private map; reading its size is the only way to count them.
  const sessions = (server as unknown as { sessions?: Map<unknown, unknown> }).sessions;
  return {
    address: `${host}:${port}`,
    reloadTls: (tls) => credentials.reload(context(tls)),
    connections: () => sessions?.size ?? 0,
    inFlight: () => adapter.inFlight(),
    shutdown(drainTimeoutMs) {
      return new Promise((resolve) => {
        let settled = false;
        const finish = (drained: boolean) => {
          if (settled) return;
          settled = true;
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
