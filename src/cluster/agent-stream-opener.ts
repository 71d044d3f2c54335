/**
 * The opening of an agent's stream: its Hello read within the hello timeout,
 * the node authorized from the client certificate, registered, and its
 * report and presence written, before the hub holds the stream.
 */
import { create } from "@bufbuild/protobuf";
import {
  type CallContext,
  type Clock,
  type Logger,
  principalOf,
  RpcError,
  throwIfAborted,
} from "../core/index.js";
import { AgentPresenceRecordSchema } from "../gen/debvisor/store/v1/agent_presence_records_pb.js";
import type { AgentMessage, Hello } from "../gen/debvisor/v1/agent_pb.js";
import { ownHealth } from "./agent-heartbeat.js";
import type { AgentPresence } from "./agent-presence.js";
import { type AgentSession, newAgentSession } from "./agent-session.js";
import type { OpeningStream, StreamGuard } from "./agent-stream-guard.js";
import { checkMessage } from "./agent-stream-reader.js";
import type { Inventory } from "./inventory.js";

/** A stream refused because its identity is not the node it claims (for the audit trail). */
export interface AgentRefusal {
  readonly requestId: string;
  readonly principal: string;
  /** How the principal authenticated (mtls, apikey, jwt). */
  readonly authMethod: string;
  readonly peer: string;
  readonly claimedNode: string;
  readonly detail: string;
}

/** Options of {@link createStreamOpener}. */
export interface StreamOpenerOptions {
  readonly inventory: Inventory;
  readonly presence: AgentPresence;
  readonly guard: StreamGuard;
  readonly clock: Clock;
  /** This control-plane process, recorded in the agent's presence. */
  readonly serverId: string;
  readonly helloTimeoutMs: number;
  readonly sendQueueMax: number;
  /** For lines that come with the traffic (see repeatLimitedLogger). */
  readonly quiet: Logger;
  /** Told of every refused stream, so the daemon can audit it. */
  readonly onRefused?: (refusal: AgentRefusal) => void;
}

/** A stream whose Hello is recorded, not yet held by the hub. */
export interface OpenedStream {
  readonly session: AgentSession;
  /** The store revision of the presence record the Hello wrote. */
  readonly presenceRevision: number;
  /** The agent's version, from its Hello. */
  readonly version: string;
  /** Told when the stream is registered (see agent-stream-guard.ts). */
  readonly opening: OpeningStream;
}

/** Opens agents' streams. */
export interface StreamOpener {
  /**
   * Reads and records a stream's Hello: the node registered, its report and
   * presence written. Apart from connect so that the decoded Hello (the
   * node's whole inventory) is not held for the stream's life by its frame.
   */
  open(it: AsyncIterator<AgentMessage>, ctx: CallContext): Promise<OpenedStream>;
}

/** Builds the hub's Hello step. */
export function createStreamOpener(options: StreamOpenerOptions): StreamOpener {
  const { inventory, presence, guard, clock, quiet } = options;

  async function open(it: AsyncIterator<AgentMessage>, ctx: CallContext): Promise<OpenedStream> {
    const hello = await readHello(it, ctx.signal);
    const nodeId = authorize(hello, ctx);
    if (hello.info === undefined) throw new RpcError("INVALID_ARGUMENT");
    await inventory.register(hello.info, principalOf(ctx).id, ctx.signal);
    const session = newAgentSession(nodeId, hello, options.sendQueueMax);
    // Before the presence is written: a connection elsewhere after it is kept for the session.
    const opening = guard.opening(nodeId);
    // The Hello's report and the agent's presence are written at once: a
    // Hello waits for the slower of the two, not for both in turn.
    const [reported, present] = await Promise.allSettled([
      // A Hello stamped in the future renews the node's lease; its report is refused, the stream stays.
      inventory.heartbeat(ownHealth(hello.health, nodeId), ctx.signal).catch((err: unknown) => {
        if (!(err instanceof RpcError) || err.reason !== "REPORT_FROM_FUTURE") throw err;
        quiet.warn({ node: nodeId }, "agent hello from the future: its report is refused");
      }),
      presence.connected(
        nodeId,
        create(AgentPresenceRecordSchema, {
          capabilities: [...session.capabilities],
          serverId: options.serverId,
          connectedAtMs: BigInt(clock.now()),
          agentVersion: hello.agentVersion,
        }),
        ctx.signal,
      ),
    ]);
    if (reported.status === "rejected" || present.status === "rejected") {
      opening.abandoned();
      // No stream: a presence written for it goes again (unless the agent has connected since).
      if (present.status === "fulfilled")
        await presence.gone(nodeId, present.value).catch((err: unknown) => {
          quiet.warn({ err, node: nodeId }, "agent presence not removed");
        });
      throw reported.status === "rejected"
        ? reported.reason
        : (present as PromiseRejectedResult).reason;
    }
    return { session, presenceRevision: present.value, version: hello.agentVersion, opening };
  }

  /** Reads the Hello, within the hello timeout. */
  async function readHello(it: AsyncIterator<AgentMessage>, signal: AbortSignal): Promise<Hello> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new RpcError("DEADLINE_EXCEEDED", { message: "no hello in time" })),
        options.helloTimeoutMs,
      );
    });
    try {
      const first = await Promise.race([it.next(), timeout]);
      throwIfAborted(signal);
      if (first.done === true || first.value.kind.case !== "hello")
        throw new RpcError("INVALID_ARGUMENT", { message: "the first message must be hello" });
      checkMessage(first.value);
      return first.value.kind.value;
    } finally {
      clearTimeout(timer);
    }
  }

  /** The node the stream acts for: the certificate's CN, which must be the Hello's node. */
  function authorize(hello: Hello, ctx: CallContext): string {
    const principal = principalOf(ctx);
    const cn = ctx.peer.certificate?.commonName ?? "";
    const claimed = hello.info?.id?.id ?? "";
    if (principal.method === "mtls" && cn !== "" && cn === principal.id && cn === claimed)
      return cn;
    const detail =
      principal.method !== "mtls"
        ? `a node stream needs a client certificate, not ${principal.method}`
        : `certificate ${cn} may not speak for node ${claimed}`;
    ctx.notes.decision = "deny";
    ctx.notes.reason = detail;
    quiet.warn(
      { requestId: ctx.requestId, principal: principal.id, claimed },
      "agent stream refused",
    );
    options.onRefused?.({
      requestId: ctx.requestId,
      principal: principal.id,
      authMethod: principal.method,
      peer: ctx.peer.address,
      claimedNode: claimed,
      detail,
    });
    throw new RpcError("PERMISSION_DENIED", { cause: new Error(detail) });
  }

  return { open };
}
