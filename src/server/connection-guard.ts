import { readFileSync } from "node:fs";
import {
  type Http2SecureServer,
  type Http2Session,
  constants as h2,
  type IncomingHttpHeaders,
  type ServerHttp2Stream,
} from "node:http2";
import type { Socket } from "node:net";
import type { Logger } from "../core/index.js";
import { checkCompression } from "./compression-check.js";

/** Why a connection or stream was cut off before it proved itself. */
export type DropReason = "total" | "per-address" | "first-message-deadline";

/** Options of {@link guardConnections}. */
export interface ConnectionGuardOptions {
  /** Open connections at most (lowered to leave `reservedFds` of the fd limit free). */
  readonly maxConnections: number;
  /** Open connections from one source address at most. */
  readonly maxConnectionsPerAddress: number;
  /** A stream must have sent its whole first message by then; a connection, its first one. */
  readonly firstMessageTimeoutMs: number;
  /** File descriptors left free for everything else (health endpoints, store, audit, logs). */
  readonly reservedFds: number;
  /** Called once per drop (a counter metric). */
  readonly onDrop: (reason: DropReason) => void;
  readonly logger: Logger;
  /** How often drops are logged, summed (default 10000). */
  readonly logEveryMs?: number;
}

/** A guard in force on a server's listeners. */
export interface ConnectionGuard {
  /** The total limit in force after the fd reserve. */
  readonly maxConnections: number;
  /**
   * Puts another listener (the panel's HTTPS port, which takes HTTP/1.1 too)
   * under the same bounds: its connections count toward the same total and
   * per-address limits, since they spend the same descriptors, and its
   * HTTP/2 connections and streams get the same first-message deadline.
   */
  add(server: Http2SecureServer): void;
  close(): void;
}

/**
 * Bounds what an unauthenticated peer can hold: connections in total (net's
 * maxConnections, kept below the process's fd limit minus a reserve) and per
 * source address, counted from the raw socket before any TLS work; and a
 * deadline by which every stream must have sent its complete first message
 * (its headers, and with them any credential, come first) and every
 * connection must have done so on one stream, else the stream is reset or the
 * connection closed. Drops are counted per reason and logged as one summed
 * line per interval, never one line per drop. Its stream listener also holds
 * each request to the gRPC compression rules before grpc-js sees it
 * (see checkCompression).
 */
export function guardConnections(
  servers: readonly Http2SecureServer[],
  options: ConnectionGuardOptions,
): ConnectionGuard {
  const fdLimit = openFileLimit();
  const maxConnections =
    fdLimit === undefined
      ? options.maxConnections
      : Math.max(1, Math.min(options.maxConnections, fdLimit - options.reservedFds));
  const perAddress = new Map<string, number>();
  const pending = new Map<DropReason, number>();
  const drop = (reason: DropReason) => {
    pending.set(reason, (pending.get(reason) ?? 0) + 1);
    options.onDrop(reason);
  };
  const flushLog = () => {
    if (pending.size === 0) return;
    options.logger.warn(
      { dropped: Object.fromEntries(pending), maxConnections, ...perAddressTop(perAddress) },
      "connections or streams dropped before they sent a first message",
    );
    pending.clear();
  };
  const logTimer = setInterval(flushLog, options.logEveryMs ?? 10_000);
  logTimer.unref();

  // Open connections of every listener guarded: net's maxConnections counts each one alone.
  let open = 0;
  const onConnection = (socket: Socket) => {
    const address = socket.remoteAddress ?? "";
    const count = (perAddress.get(address) ?? 0) + 1;
    if (count > options.maxConnectionsPerAddress || open >= maxConnections) {
      drop(open >= maxConnections ? "total" : "per-address");
      socket.destroy();
      return;
    }
    perAddress.set(address, count);
    open++;
    socket.once("close", () => {
      open--;
      const left = (perAddress.get(address) ?? 1) - 1;
      if (left <= 0) perAddress.delete(address);
      else perAddress.set(address, left);
    });
  };
  const onSession = (session: Http2Session) => {
    const timer = setTimeout(() => {
      if (provenSessions.has(session)) return;
      drop("first-message-deadline");
      session.destroy();
    }, options.firstMessageTimeoutMs);
    timer.unref();
    session.once("close", () => clearTimeout(timer));
  };
  const provenSessions = new WeakSet<Http2Session>();
  const onStream = (stream: ServerHttp2Stream) => {
    let header: Buffer = Buffer.alloc(0);
    let received = 0;
    let done = false;
    const proven = () => {
      done = true;
      clearTimeout(timer);
      stream.off("data", onData);
      if (stream.session !== undefined) provenSessions.add(stream.session);
    };
    // grpc-js reads the stream itself; this listener only watches what it reads.
    const onData = (chunk: Buffer) => {
      received += chunk.length;
      if (header.length < 5) header = Buffer.concat([header, chunk.subarray(0, 5 - header.length)]);
      if (header.length === 5 && received >= 5 + header.readUInt32BE(1)) proven();
    };
    const timer = setTimeout(() => {
      if (done || stream.closed) return;
      drop("first-message-deadline");
      stream.close(h2.NGHTTP2_CANCEL);
    }, options.firstMessageTimeoutMs);
    timer.unref();
    stream.on("data", onData);
    // A request without a body (END_STREAM with the headers) is complete too.
    stream.once("end", () => {
      if (!done) proven();
    });
    stream.once("close", () => clearTimeout(timer));
  };
  const onDropped = () => drop("total");
  // grpc-js's stream listeners run inside ours, after the compression check
  // and only if it let the request through (see checkCompression).
  const grpcListeners = new Map<Http2SecureServer, StreamListener[]>();
  const onGrpcStream: StreamListener = function (this: Http2SecureServer, stream, headers, flags) {
    if (!checkCompression(stream, headers)) return;
    onStream(stream);
    for (const listener of grpcListeners.get(this) ?? [])
      listener.call(this, stream, headers, flags);
  };
  const others: Http2SecureServer[] = [];
  const guard = (server: Http2SecureServer) => {
    server.maxConnections = maxConnections;
    server.prependListener("connection", onConnection);
    server.on("session", onSession);
    server.on("drop", onDropped);
  };
  for (const server of servers) {
    guard(server);
    grpcListeners.set(server, server.listeners("stream") as StreamListener[]);
    server.removeAllListeners("stream");
    server.on("stream", onGrpcStream);
  }
  return {
    maxConnections,
    add(server) {
      guard(server);
      server.on("stream", onStream);
      others.push(server);
    },
    close() {
      clearInterval(logTimer);
      flushLog();
      for (const server of [...servers, ...others]) {
        server.off("connection", onConnection);
        server.off("session", onSession);
        server.off("drop", onDropped);
      }
      for (const server of servers) {
        server.off("stream", onGrpcStream);
        for (const listener of grpcListeners.get(server) ?? []) server.on("stream", listener);
      }
      for (const server of others) server.off("stream", onStream);
    },
  };
}

type StreamListener = (
  this: Http2SecureServer,
  stream: ServerHttp2Stream,
  headers: IncomingHttpHeaders,
  flags: number,
) => void;

/** The address holding the most connections, for the log line. */
function perAddressTop(perAddress: ReadonlyMap<string, number>): Record<string, unknown> {
  let top: [string, number] | undefined;
  for (const entry of perAddress) if (top === undefined || entry[1] > top[1]) top = entry;
  return top === undefined ? {} : { busiestAddress: top[0], itsConnections: top[1] };
}

/** The soft RLIMIT_NOFILE of this process (Linux /proc), when it can be read. */
function openFileLimit(): number | undefined {
  try {
    const m = /^Max open files\s+(\d+)/m.exec(readFileSync("/proc/self/limits", "utf8"));
    return m === null ? undefined : Number(m[1]);
  } catch {
    return undefined;
  }
}
