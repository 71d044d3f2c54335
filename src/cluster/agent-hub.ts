/**
 * The control plane's end of the agents' streams: a composition of the Hello
 * step (agent-stream-opener.ts), the reading of the agent's messages
 * (agent-stream-reader.ts, agent-heartbeat.ts), the delivery of operations
 * (agent-delivery.ts), the guard of one stream per node across processes
 * (agent-stream-guard.ts) and the service binding (agent-service-binding.ts),
 * around the streams held here.
 */
import {
  type CallContext,
  type Clock,
  type Logger,
  RpcError,
  repeatLimitedLogger,
  type ServiceBinding,
  silentLogger,
  timestampFromMs,
} from "../core/index.js";
import type { AgentMessage } from "../gen/debvisor/v1/agent_pb.js";
import type { BucketLimit, RevokedServerCertificates } from "../security/index.js";
import type { KvStore } from "../store/index.js";
import { createAgentDelivery } from "./agent-delivery.js";
import { createHeartbeatRecorder, type HeartbeatOutcome } from "./agent-heartbeat.js";
import { type AgentOperations, createAgentOperations } from "./agent-operations.js";
import { createAgentPresence } from "./agent-presence.js";
import { tellRevokedServers } from "./agent-revoked-servers.js";
import { agentServiceBinding } from "./agent-service-binding.js";
import type { AgentSession, Outgoing } from "./agent-session.js";
import { guardStreams } from "./agent-stream-guard.js";
import { type AgentRefusal, createStreamOpener } from "./agent-stream-opener.js";
import { createAgentStreamReader } from "./agent-stream-reader.js";
import type { Inventory } from "./inventory.js";
import { createTransferRelay, type TransferRelay } from "./transfer-relay.js";
import type { VmFacts } from "./vm-records.js";

/** A warning that comes with the traffic is written at most this often (with a count). */
const REPEATS_MS = 10_000;

/** Options of {@link createAgentHub}. */
export interface AgentHubOptions {
  readonly store: KvStore;
  readonly inventory: Inventory;
  readonly clock: Clock;
  /** This control-plane process, as told to agents and recorded on deliveries. */
  readonly serverId: string;
  readonly heartbeatIntervalMs: number;
  /** Told to agents (Welcome.self_fence_window_ms): with no confirmed lease renewal for this long they stop their HA VMs. 0: not enforced. */
  readonly selfFenceWindowMs?: number;
  /** The node's liveness TTL, told to agents with each renewal (LeaseRenewed.ttl_ms). */
  readonly livenessTtlMs?: number;
  readonly helloTimeoutMs: number;
  readonly sendQueueMax: number;
  /**
   * Messages read from one node's streams: past the burst, the next is read
   * only once its token is there. Each message is a store write or read, so
   * a node's stream (a stolen certificate, a buggy agent) cannot write at
   * the rate it sends. Unset: not limited.
   */
  readonly messageRate?: BucketLimit;
  readonly logger?: Logger;
  /** Aborted at shutdown: every stream ends cleanly and agents reconnect elsewhere. */
  readonly closing?: AbortSignal;
  /** Told of every refused stream, so the daemon can audit it. */
  readonly onRefused?: (refusal: AgentRefusal) => void;
  /** Told of every heartbeat's outcome, for a metric (the log tells only some). */
  readonly onHeartbeat?: (outcome: HeartbeatOutcome) => void;
  /**
   * The server certificates agents must refuse: told in each Welcome, and
   * on every stream when the list changes. Unset: agents are told nothing
   * (they keep the list they have).
   */
  readonly revokedServers?: Pick<RevokedServerCertificates, "current" | "onChange">;
}

/** The control plane's end of the agents' streams. */
export interface AgentHub {
  /** AgentService bound to its handler and policy. */
  readonly service: ServiceBinding;
  readonly operations: AgentOperations;
  /** Nodes with a stream on this process. */
  connectedNodes(): string[];
  /** The relay of send streams between agents (UploadTransfer, DownloadTransfer). */
  readonly relay: TransferRelay;
  /** This process's id (runner and relay id). */
  readonly serverId: string;
  /** Where agents reach this process for transfers it relays; undefined before {@link advertise}. */
  relayAddress(): string | undefined;
  /** Sets the address agents dial for transfers this process relays (host:port). */
  advertise(address: string): void;
  /** The capabilities the node's agent named in its Hello, when its stream is on this process. */
  capabilitiesOf(nodeId: string): readonly string[] | undefined;
  /** The same, wherever the stream is (read from the store); undefined when no agent is connected. */
  agentCapabilities(nodeId: string, signal?: AbortSignal): Promise<readonly string[] | undefined>;
  /** Queues a message on the node's stream (here); false when this process holds none. */
  push(nodeId: string, message: Outgoing): boolean;
  close(): void;
}

/**
 * Serves AgentService.Connect. The node is authorized from the Hello: the
 * stream is accepted only from a verified client certificate whose common
 * name is the node the Hello names (the pipeline has checked node:connect
 * already, but a bidi call has no request to name a node before it runs).
 * Hello and heartbeats go through the inventory exactly like
 * NodeService.RegisterNode and Heartbeat. Operations come from the store:
 * one watch per process routes them to the streams it holds.
 */
export function createAgentHub(options: AgentHubOptions): AgentHub {
  const { inventory, clock } = options;
  const log = options.logger ?? silentLogger;
  /** For lines that come with the traffic (per heartbeat, operation or stream): see repeatLimitedLogger. */
  const quiet = repeatLimitedLogger(log, { intervalMs: REPEATS_MS, collect: "node" });
  const operations = createAgentOperations(options.store, clock);
  const sessions = new Map<string, AgentSession>();
  const stopping = new AbortController();
  const presence = createAgentPresence(options.store);
  const relay = createTransferRelay({ clock, logger: log, relayId: options.serverId });
  let relayAddress: string | undefined;
  options.closing?.addEventListener("abort", () => close(), { once: true });
  const revokedServers = tellRevokedServers(options.revokedServers, sessions);

  const delivery = createAgentDelivery({
    store: options.store,
    operations,
    clock,
    serverId: options.serverId,
    signal: stopping.signal,
    logger: log,
    quiet,
    sessions,
    placedGeneration: placedGenerations(inventory, quiet),
  });

  const guard = guardStreams({
    store: options.store,
    presence,
    serverId: options.serverId,
    signal: stopping.signal,
    logger: quiet,
    held: (nodeId) => sessions.get(nodeId),
    all: () => sessions.entries(),
  });

  const reader = createAgentStreamReader({
    store: options.store,
    inventory,
    operations,
    clock,
    messageRate: options.messageRate,
    logger: log,
    quiet,
    heartbeats: createHeartbeatRecorder({
      inventory,
      livenessTtlMs: options.livenessTtlMs,
      quiet,
      onHeartbeat: options.onHeartbeat,
    }),
    delivery,
    onHeartbeat: options.onHeartbeat,
  });

  const opener = createStreamOpener({
    inventory,
    presence,
    guard,
    clock,
    serverId: options.serverId,
    helloTimeoutMs: options.helloTimeoutMs,
    sendQueueMax: options.sendQueueMax,
    quiet,
    onRefused: options.onRefused,
  });

  async function* connect(
    requests: AsyncIterable<AgentMessage>,
    ctx: CallContext,
  ): AsyncIterable<Outgoing> {
    if (stopping.signal.aborted) throw new RpcError("SHUTTING_DOWN");
    const it = requests[Symbol.asyncIterator]();
    const { session, presenceRevision, version, opening } = await opener.open(it, ctx);
    const { nodeId } = session;
    session.presenceRevision = presenceRevision;
    // The newer connection holds the node, not the Hello that finished last: an
    // older stream whose report was slower to record ends here instead.
    const current = sessions.get(nodeId);
    if (current !== undefined && current.presenceRevision > presenceRevision) {
      opening.abandoned();
      throw new RpcError("AGENT_STREAM_REPLACED");
    }
    current?.replace(options.serverId);
    sessions.set(nodeId, session);
    opening.registered(session);
    const stop = () => session.queue.close();
    ctx.signal.addEventListener("abort", stop, { once: true });
    log.info({ node: nodeId, version, peer: ctx.peer.address }, "agent connected");
    try {
      // A Hello that finished after close(): its queue would never be closed by the hub.
      if (stopping.signal.aborted) throw new RpcError("SHUTTING_DOWN");
      session.queue.push({
        kind: {
          case: "welcome",
          value: {
            heartbeatIntervalMs: options.heartbeatIntervalMs,
            serverTime: timestampFromMs(clock.now()),
            selfFenceWindowMs: options.selfFenceWindowMs ?? 0,
            serverId: options.serverId,
            acceptsUnchangedVms: true,
            revokedServers: revokedServers.welcome(),
          },
        },
      });
      // The welcome goes out at once; the node's pending operations follow it
      // once read (the watch is up first, so none falls in between).
      void delivery.ready.then(() => delivery.resync(session));
      reader.read(session, it, ctx.signal).then(
        () => session.queue.close(),
        (err: unknown) => session.queue.close(err instanceof Error ? err : new Error(String(err))),
      );
      yield* session.queue;
    } catch (err) {
      quiet.warn({ node: nodeId, err }, "agent stream closed with an error");
      throw err;
    } finally {
      ctx.signal.removeEventListener("abort", stop);
      if (sessions.get(nodeId) === session) sessions.delete(nodeId);
      // Unless the agent has connected again meanwhile (here or elsewhere): that record stays.
      await presence
        .gone(nodeId, presenceRevision)
        .catch((err: unknown) => quiet.warn({ err, node: nodeId }, "agent presence not removed"));
      log.info({ node: nodeId }, "agent disconnected");
    }
  }

  function close(): void {
    if (stopping.signal.aborted) return;
    stopping.abort();
    revokedServers.stop();
    for (const s of sessions.values()) s.queue.close();
  }

  const service = agentServiceBinding(connect, relay);
  return {
    service,
    operations,
    connectedNodes: () => [...sessions.keys()].sort(),
    relay,
    serverId: options.serverId,
    relayAddress: () => relayAddress,
    advertise: (address) => {
      relayAddress = address;
    },
    capabilitiesOf: (nodeId) => sessions.get(nodeId)?.capabilities,
    agentCapabilities: async (nodeId, signal) =>
      sessions.get(nodeId)?.capabilities ?? presence.capabilities(nodeId, signal),
    push: (nodeId, message) => sessions.get(nodeId)?.queue.push(message) ?? false,
    close,
  };
}

/**
 * A VM's placement generation as this process's copy of the records shows
 * it, once loaded (from now on; loaded again at an ask after a failed
 * load); undefined until then.
 */
function placedGenerations(
  inventory: Pick<Inventory, "vmRecords">,
  logger: Logger,
): (vmId: string) => bigint | undefined {
  let facts: VmFacts | undefined;
  let loading = false;
  const load = () => {
    loading = true;
    inventory.vmRecords.all().then(
      (f) => {
        facts = f;
      },
      (err: unknown) => {
        loading = false;
        logger.warn({ err }, "vm records not loaded for the delivery's checks");
      },
    );
  };
  load();
  return (vmId) => {
    if (facts === undefined && !loading) load();
    return facts?.get(vmId)?.rec.generation;
  };
}
