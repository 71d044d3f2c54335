import { readFileSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { create, fromBinary, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { type AgentFiles, openChannel, type RevokedServers } from "../client/index.js";
import type { Logger } from "../core/index.js";
import {
  AgentMessageSchema,
  type ControlMessage,
  ControlMessageSchema,
  type Welcome,
} from "../gen/debvisor/v1/agent_pb.js";
import { createReportDedupe } from "./report-dedupe.js";

const CONNECT = "/debvisor.v1.AgentService/Connect";

/** Options of {@link runAgentLink}. */
export interface AgentLinkOptions {
  readonly files: AgentFiles;
  readonly servers: readonly string[];
  readonly tlsServerName?: string;
  readonly reconnect: { readonly initialMs: number; readonly maxMs: number };
  readonly heartbeatIntervalMs: number;
  readonly logger: Logger;
  readonly signal: AbortSignal;
  /** The Hello to send on each new stream (a fresh inventory). */
  hello(): Promise<MessageInitShape<typeof AgentMessageSchema>>;
  /** A heartbeat's content now. */
  heartbeat(sequence: bigint): Promise<MessageInitShape<typeof AgentMessageSchema>>;
  /**
   * The revoked server certificates: a server presenting one is refused,
   * and the lists servers send replace it. Unset: not checked.
   */
  readonly revokedServers?: RevokedServers;
  /** `serverCertificate`: the serial of the certificate the server presented. */
  onWelcome(welcome: Welcome, server: string, serverCertificate?: string): void;
  onMessage(message: ControlMessage): void;
  /** The stream is down (it will be retried). */
  onDown(reason: string): void;
  /** While true, no stream is opened (a partition injected as a fault). */
  held?(): boolean;
  /**
   * A tighter cap on the wait before the next attempt, asked each time
   * (the self-fence: an agent must be back well inside its window).
   */
  maxRetryMs?(): number;
}

/** The agent's end of its one stream. */
export interface AgentLink {
  /** Sends when a stream is up; false when it is not (the message is dropped). */
  send(message: MessageInitShape<typeof AgentMessageSchema>): boolean;
  /** The server holding the stream now, if any. */
  server(): string | undefined;
  /** Ends the current stream at once, as a cut network would (it is retried unless held). */
  interrupt(): void;
  /**
   * Sends a heartbeat now, out of turn, with the node's report as it is
   * (the next sequence number): resolves once it is written, or at once
   * when no stream is up or the report cannot be built.
   */
  beat(): Promise<void>;
  /** Resolves when the loop has stopped (after the signal aborted). */
  readonly done: Promise<void>;
}

/**
 * Keeps one mTLS stream to the control plane: connects to the servers in
 * turn, says Hello, heartbeats at the interval the Welcome sets, hands
 * everything the server sends to `onMessage`, and after any loss waits a
 * jittered, exponentially growing delay (full jitter, capped at maxMs;
 * reset by a Welcome) before the next server. The certificate files are
 * read for every connection, so a renewal takes effect on the next one.
 */
export function runAgentLink(options: AgentLinkOptions): AgentLink {
  const { logger: log, signal } = options;
  let current: grpc.ClientDuplexStream<Uint8Array, ControlMessage> | undefined;
  let currentServer: string | undefined;
  /** The current stream's heartbeat, once it is welcomed. */
  let beatNow: (() => Promise<void>) | undefined;

  async function once(server: string): Promise<{ welcomed: boolean; reason: string }> {
    // A revoked server certificate is refused in the handshake: nothing is sent to its holder.
    const guard = options.revokedServers?.guard(server);
    const channel = openChannel(
      {
        name: "agent",
        server,
        caPem: readFileSync(options.files.ca, "utf8"),
        certPem: readFileSync(options.files.cert, "utf8"),
        keyPem: readFileSync(options.files.key, "utf8"),
        tlsServerName: options.tlsServerName,
      },
      {},
      guard?.verify,
    );
    const call = channel.makeBidiStreamRequest(
      CONNECT,
      (m: Uint8Array) => Buffer.from(m),
      (b: Buffer) => fromBinary(ControlMessageSchema, b),
      new grpc.Metadata(),
      {},
    );
    let welcomed = false;
    let timer: NodeJS.Timeout | undefined;
    const report = createReportDedupe();
    const write = (m: MessageInitShape<typeof AgentMessageSchema>) =>
      call.write(toBinary(AgentMessageSchema, report.outgoing(create(AgentMessageSchema, m))));
    const onAbort = () => call.cancel();
    signal.addEventListener("abort", onAbort, { once: true });
    try {
      return await new Promise((resolve) => {
        let sequence = 0n;
        let sent = 0n;
        // Two heartbeats may be built at once (one out of turn before a result): one that
        // started before another was written is dropped, so no report older than one sent
        // (listed before an operation's result) follows it.
        const beat = () => {
          const n = ++sequence;
          return options
            .heartbeat(n)
            .then((m) => {
              if (current !== call || n < sent) return;
              sent = n;
              write(m);
            })
            .catch((err: unknown) => log.warn({ err }, "heartbeat not built"));
        };
        call.on("data", (m: ControlMessage) => {
          if (m.kind.case === "revokedServers") {
            if (guard?.learn(m.kind.value) === true) call.cancel();
          } else if (m.kind.case === "welcome") {
            // Cut off while connecting: the partition applies to this stream too; and a
            // server whose own certificate is revoked now (it renews it) is connected to again.
            if (options.held?.() === true || guard?.learn(m.kind.value.revokedServers) === true) {
              call.cancel();
              return;
            }
            welcomed = true;
            report.accepted(m.kind.value.acceptsUnchangedVms);
            current = call;
            currentServer = server;
            beatNow = beat;
            const every = m.kind.value.heartbeatIntervalMs || options.heartbeatIntervalMs;
            clearInterval(timer);
            timer = setInterval(beat, every);
            options.onWelcome(m.kind.value, server, guard?.presented());
          } else if (welcomed) options.onMessage(m);
        });
        call.on("error", (err: grpc.ServiceError) =>
          resolve({ welcomed, reason: `${grpc.status[err.code] ?? err.code}: ${err.details}` }),
        );
        call.on("end", () => resolve({ welcomed, reason: "stream ended by the server" }));
        options.hello().then(
          (hello) => write(hello),
          (err: unknown) => {
            log.error({ err }, "hello not built");
            call.cancel();
          },
        );
      });
    } finally {
      clearInterval(timer);
      signal.removeEventListener("abort", onAbort);
      if (current === call) {
        current = undefined;
        currentServer = undefined;
        beatNow = undefined;
      }
      call.removeAllListeners("data");
      channel.close();
    }
  }

  const done = (async () => {
    let attempt = 0;
    let index = 0;
    while (!signal.aborted) {
      if (options.held?.() === true) {
        await sleep(100, undefined, { signal }).catch(() => undefined);
        continue;
      }
      const server = options.servers[index % options.servers.length] as string;
      index++;
      let outcome: { welcomed: boolean; reason: string };
      try {
        outcome = await once(server);
      } catch (err) {
        outcome = { welcomed: false, reason: (err as Error).message };
      }
      if (signal.aborted) break;
      if (outcome.welcomed) attempt = 0;
      options.onDown(outcome.reason);
      const cap = Math.min(
        options.reconnect.maxMs,
        options.maxRetryMs?.() ?? Number.POSITIVE_INFINITY,
        options.reconnect.initialMs * 2 ** attempt,
      );
      attempt = Math.min(attempt + 1, 30);
      const wait = Math.round(Math.random() * cap);
      log.warn({ server, reason: outcome.reason, retryInMs: wait }, "control-plane stream lost");
      await sleep(wait, undefined, { signal }).catch(() => undefined);
    }
  })();

  return {
    send(message) {
      if (current === undefined) return false;
      current.write(toBinary(AgentMessageSchema, create(AgentMessageSchema, message)));
      return true;
    },
    server: () => currentServer,
    interrupt: () => current?.cancel(),
    beat: () => beatNow?.() ?? Promise.resolve(),
    done,
  };
}
