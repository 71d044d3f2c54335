// The gRPC transport of the daemon: grpc-js service definitions for the
// bound services, whose calls run through the transport-neutral pipeline.
// Composed of the call tracker (grpc-call-tracker.ts), the handlers
// (grpc-handlers.ts), the codec (grpc-codec.ts), statuses (grpc-status.ts),
// flow control (grpc-stream-flow.ts) and the peer certificate
// (grpc-peer-certificate.ts).

import type * as grpc from "@grpc/grpc-js";
import type { CallObserver, Logger, ServiceBinding, Stage } from "../core/index.js";
import { createGrpcCallTracker } from "./grpc-call-tracker.js";
import { createGrpcHandlers } from "./grpc-handlers.js";

/** Options of {@link createGrpcAdapter}. */
export interface GrpcAdapterOptions {
  readonly services: readonly ServiceBinding[];
  /** Pipeline stages, outermost first. */
  readonly stages: readonly Stage[];
  readonly observer: CallObserver;
  readonly logger: Logger;
  /** Responses larger than this fail with RESOURCE_EXHAUSTED instead of being sent. */
  readonly maxResponseBytes: number;
  /**
   * A streaming response whose client reads nothing for this long (the
   * transport stays full) ends with RESOURCE_EXHAUSTED STREAM_STALLED, so a
   * peer that stops reading holds no handler and no buffers. Unset: no limit.
   */
  readonly writeStallMs?: number;
  readonly now?: () => number;
}

/** Service definitions and handlers for grpc-js, plus the calls in flight. */
export interface GrpcAdapter {
  /** Adds every service to a grpc-js server. */
  register(server: grpc.Server): void;
  /** Calls started and not yet finished. */
  inFlight(): number;
  /** Resolves when no call is in flight. */
  idle(): Promise<void>;
  /** Aborts the signal of every call in flight (hard stop). */
  abortAll(reason: string): void;
}

/**
 * Maps grpc-js calls onto the transport-neutral pipeline: metadata, the
 * verified peer certificate, deadline and cancellation go in; responses and
 * RpcErrors come out as gRPC messages and statuses. Messages are carried as
 * raw bytes through grpc-js and decoded by grpc-codec.ts, so a malformed
 * request is an INVALID_ARGUMENT from our catalogue rather than a library
 * error.
 */
export function createGrpcAdapter(options: GrpcAdapterOptions): GrpcAdapter {
  const now = options.now ?? Date.now;
  const calls = createGrpcCallTracker({ observer: options.observer, logger: options.logger, now });
  const { unary, streaming } = createGrpcHandlers({
    stages: options.stages,
    observer: options.observer,
    maxResponseBytes: options.maxResponseBytes,
    writeStallMs: options.writeStallMs,
    calls,
  });

  return {
    register(server) {
      for (const service of options.services) {
        const definition: Record<string, grpc.MethodDefinition<Buffer, Buffer>> = {};
        const impl: grpc.UntypedServiceImplementation = {};
        for (const method of service.methods) {
          const { kind, name, path, desc } = method.spec;
          definition[name] = {
            path,
            requestStream: kind === "client_streaming" || kind === "bidi_streaming",
            responseStream: kind === "server_streaming" || kind === "bidi_streaming",
            requestSerialize: (b: Buffer) => b,
            requestDeserialize: (b: Buffer) => b,
            responseSerialize: (b: Buffer) => b,
            responseDeserialize: (b: Buffer) => b,
            originalName: desc.localName,
          };
          impl[name] = kind === "unary" ? unary(method) : streaming(method);
        }
        server.addService(definition as grpc.ServiceDefinition, impl);
      }
    },
    inFlight: calls.inFlight,
    idle: calls.idle,
    abortAll: calls.abortAll,
  };
}
