import { setTimeout as sleep } from "node:timers/promises";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import {
  type CallContext,
  type Clock,
  defineService,
  type Logger,
  msFromTimestamp,
  principalOf,
  RpcError,
  repeatLimitedLogger,
  rethrowAborted,
  type ServiceBinding,
  silentLogger,
  throwIfAborted,
  timestampFromMs,
  validateMessage,
} from "../core/index.js";
import { AgentPresenceRecordSchema } from "../gen/debvisor/store/v1/agent_presence_records_pb.js";
import { OperationPhase, type OperationRecord } from "../gen/debvisor/store/v1/agent_records_pb.js";
import {
  type AgentHeartbeat,
  type AgentMessage,
  AgentMessageSchema,
  AgentService,
  type ControlMessageSchema,
  type Hello,
  OperationOutcome,
  type StorageReport,
} from "../gen/debvisor/v1/agent_pb.js";
import type { Health } from "../gen/debvisor/v1/node_pb.js";
import type { VmInfo } from "../gen/debvisor/v1/vm_pb.js";
import { type BucketLimit, createRateLimiter } from "../security/index.js";
import type { KvStore, Versioned } from "../store/index.js";
import { watchOperations } from "./agent-operation-watch.js";
import { type AgentOperations, createAgentOperations } from "./agent-operations.js";
import { checkCapability, createAgentPresence } from "./agent-presence.js";
import { type GuardedStream, guardStreams, type OpeningStream } from "./agent-stream-guard.js";
import { noteSelfFenced } from "./ha-restore.js";
import type { Inventory } from "./inventory.js";
import { createSendQueue, type SendQueue } from "./send-queue.js";
import { createTransferHandlers } from "./transfer-handlers.js";
import { createTransferRelay, type TransferRelay } from "./transfer-relay.js";

type Outgoing = MessageInitShape<typeof ControlMessageSchema>;

/** A warning that comes with the traffic is written at most this often (with a count). */
const REPEATS_MS = 10_000;

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
}

/**
 * A heartbeat confirmed to its agent, not confirmed (the store did not take
 * it in time: the agent counts toward fencing itself), confirmed with its
 * report refused as from the future, or failed otherwise (the stream ends).
 */
export type HeartbeatOutcome = "confirmed" | "unconfirmed" | "from_future" | "failed";

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

interface Session extends GuardedStream {
  readonly nodeId: string;
  /** The store revision of the presence record this stream wrote (0 until written). */
  presenceRevision: number;
  readonly queue: SendQueue<Outgoing>;
  /** Operation ids sent on this stream and not done (a watch event repeats them). */
  readonly sent: Set<string>;
  /**
   * The node's open operations as the watch last showed them, with their
   * revisions: its delivery, progress and result are written on them without
   * a read first (a stale one costs the read). Dropped when done.
   */
  readonly known: Map<string, Versioned<OperationRecord>>;
  readonly cancelled: Set<string>;
  readonly capabilities: readonly string[];
  /** StorageReports waiting for their operation's result, by operation id (of operations in `sent`). */
  readonly reports: Map<string, StorageReport>;
  /**
   * The VMs of the stream's last report that listed them (its Hello or a
   * heartbeat): what a heartbeat with vms_unchanged reports. The array the
   * inventory stores only while the report is stored as sent: where the
   * control plane's facts (tenant, labels, managed) differ from the node's
   * report, or a VM is left out, the inventory stores a copy and this list
   * is a second one (one list per stream).
   */
  vms: VmInfo[];
  /**
   * While the node's open operations are read (a resync), the watch's
   * records for it wait here, offered after those read: an operation
   * submitted during the read never overtakes an older one.
   */
  held?: OperationRecord[];
  /**
   * Operations seen DONE while records were held: forgotten only once those
   * are offered, or a held earlier record of one would be sent again.
   */
  readonly doneWhileHeld: string[];
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
  const sessions = new Map<string, Session>();
  const stopping = new AbortController();
  const presence = createAgentPresence(options.store);
  const relay = createTransferRelay({ clock, logger: log, relayId: options.serverId });
  /** One budget per node, shared by its streams here (a new stream does not refill it). */
  const budgets = createRateLimiter(clock);
  let relayAddress: string | undefined;
  options.closing?.addEventListener("abort", () => close(), { once: true });

  /** Notes the latest version of an operation of the session's node the watch has shown. */
  function note(session: Session, record: OperationRecord, modRevision: number): void {
    const id = record.dispatch?.operationId ?? "";
    if (id === "") return;
    if (record.phase === OperationPhase.DONE) {
      session.known.delete(id);
      if (session.held !== undefined) session.doneWhileHeld.push(id);
      else forget(session, id);
      return;
    }
    if ((session.known.get(id)?.modRevision ?? 0) < modRevision)
      session.known.set(id, { message: record, modRevision });
  }

  /** Notes this process's own write of an operation still open on the stream (not one done since). */
  function noteOwn(session: Session, written: Versioned<OperationRecord> | undefined): void {
    const id = written?.message.dispatch?.operationId ?? "";
    if (written !== undefined && session.sent.has(id))
      note(session, written.message, written.modRevision);
  }

  /** A finished operation leaves the stream's sets (they would grow for the stream's life). */
  function forget(session: Session, id: string): void {
    session.known.delete(id);
    session.reports.delete(id);
    session.sent.delete(id);
    session.cancelled.delete(id);
  }

  function offer(session: Session, record: OperationRecord): void {
    const dispatch = record.dispatch;
    const id = dispatch?.operationId ?? "";
    if (record.phase === OperationPhase.DONE || dispatch === undefined || id === "") return;
    if (!session.sent.has(id)) {
      session.sent.add(id);
      if (refuseUnannounced(session, dispatch.kind, id)) return;
      if (!session.queue.push({ kind: { case: "dispatch", value: dispatch } })) return;
      operations
        .delivered(session.nodeId, id, options.serverId, stopping.signal, session.known.get(id))
        // Its result, often back before the watch shows this write, is written on it.
        .then((w) => noteOwn(session, w))
        .catch((err: unknown) =>
          quiet.warn({ err, node: session.nodeId, id }, "delivery not recorded"),
        );
    }
    if (record.cancelRequested && !session.cancelled.has(id)) {
      session.cancelled.add(id);
      session.queue.push({ kind: { case: "cancel", value: { operationId: id } } });
    }
  }

  const watching = watchOperations({
    store: options.store,
    signal: stopping.signal,
    logger: log,
    onRecord: (record, modRevision) => {
      const s = sessions.get(record.nodeId);
      if (s !== undefined) note(s, record, modRevision);
      if (s?.held !== undefined) s.held.push(record);
      else if (s !== undefined) offer(s, record);
    },
    onResync: () => {
      for (const s of sessions.values()) void resync(s);
    },
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

  /**
   * An operation of a kind the agent did not name in its Hello is never
   * sent: it ends here, FAILED with AGENT_CAPABILITY_MISSING.
   */
  function refuseUnannounced(session: Session, kind: number, id: string): boolean {
    try {
      checkCapability(session.capabilities, kind, session.nodeId);
      return false;
    } catch (err) {
      const refusal = err as RpcError;
      log.warn({ node: session.nodeId, id, kind }, "operation the agent does not run refused");
      operations
        .finish(
          session.nodeId,
          {
            $typeName: "debvisor.v1.OperationResult",
            operationId: id,
            outcome: OperationOutcome.FAILED,
            reason: refusal.reason,
            message: refusal.message,
            finishedAt: timestampFromMs(clock.now()),
            replayed: false,
          },
          undefined,
          stopping.signal,
        )
        .catch((e: unknown) =>
          quiet.warn({ err: e, node: session.nodeId, id }, "refusal not recorded"),
        );
      return true;
    }
  }

  async function resync(session: Session): Promise<void> {
    const held = session.held ?? [];
    session.held = held;
    try {
      for (const r of await operations.open(session.nodeId, stopping.signal)) offer(session, r);
    } catch (err) {
      quiet.warn({ err, node: session.nodeId }, "pending operations not read");
    } finally {
      if (session.held === held) {
        session.held = undefined;
        for (const r of held) offer(session, r);
        for (const id of session.doneWhileHeld.splice(0)) forget(session, id);
        // A report of no operation sent on the stream waits for a result that is not its own.
        for (const id of session.reports.keys())
          if (!session.sent.has(id)) session.reports.delete(id);
      }
    }
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

  /** A node reports only for itself: the report's node id is the stream's. */
  const own = (health: Health | undefined, nodeId: string): Health => {
    if (health === undefined)
      throw new RpcError("INVALID_ARGUMENT", { message: "health: required" });
    return { ...health, nodeId: { $typeName: "debvisor.v1.NodeId", id: nodeId } };
  };

  /**
   * Records a heartbeat and confirms the lease renewal to the agent. A report
   * from the future renewed the lease all the same (its content is refused):
   * confirmed, and the stream stays. A heartbeat the store did not take (down,
   * or too slow to answer) is not confirmed, and the stream stays too: the
   * next heartbeat tries again, and the agent, counting only confirmed
   * renewals, fences itself if none comes within its window. Closing the
   * stream instead sent every node of an overloaded store to reconnect at
   * once (10,000 streams in the agents benchmark), which loaded it further.
   */
  async function heartbeat(
    session: Session,
    beat: AgentHeartbeat,
    signal: AbortSignal,
  ): Promise<void> {
    let outcome: HeartbeatOutcome = "confirmed";
    try {
      await inventory.heartbeat(own(withVms(session, beat), session.nodeId), signal);
    } catch (err) {
      const reason = err instanceof RpcError ? err.reason : undefined;
      if (reason === "STORE_UNAVAILABLE" && !signal.aborted) {
        options.onHeartbeat?.("unconfirmed");
        quiet.warn({ node: session.nodeId, err }, "agent heartbeat not recorded; not confirmed");
        return;
      }
      if (reason !== "REPORT_FROM_FUTURE") {
        options.onHeartbeat?.("failed");
        throw err;
      }
      outcome = "from_future";
      quiet.warn(
        { node: session.nodeId },
        "agent report from the future refused; its clock is ahead",
      );
    }
    options.onHeartbeat?.(outcome);
    session.queue.push({
      kind: {
        case: "leaseRenewed",
        value: { sequence: beat.sequence, ttlMs: options.livenessTtlMs ?? 0 },
      },
    });
  }

  /**
   * Handles a stream's messages in order. Each is read and handled by a call
   * of its own, so that nothing here holds the last message while waiting
   * for the next: a heartbeat carries the node's whole report.
   */
  async function read(
    session: Session,
    it: AsyncIterator<AgentMessage>,
    signal: AbortSignal,
  ): Promise<void> {
    while (await readOne(session, it, signal)) {
      // Each turn reads and handles one message.
    }
  }

  /** Reads one message of the stream and handles it; false once the stream has ended. */
  async function readOne(
    session: Session,
    it: AsyncIterator<AgentMessage>,
    signal: AbortSignal,
  ): Promise<boolean> {
    await paced(session.nodeId, signal);
    const next = await it.next();
    if (next.done === true || signal.aborted) return false;
    await handle(session, next.value, signal);
    return true;
  }

  /**
   * Waits for the node's next message token (see messageRate). Before the
   * read: a stream over its budget holds no message meanwhile, and HTTP/2
   * flow control stops its agent's sends once the transport's window fills.
   */
  async function paced(nodeId: string, signal: AbortSignal): Promise<void> {
    const limit = options.messageRate;
    if (limit === undefined) return;
    for (let take = budgets.take(nodeId, 1, limit); !take.allowed; ) {
      await sleep(take.retryAfterMs, undefined, { signal }).catch(rethrowAborted(signal));
      take = budgets.take(nodeId, 1, limit);
    }
  }

  async function handle(session: Session, m: AgentMessage, signal: AbortSignal): Promise<void> {
    const node = session.nodeId;
    try {
      checkMessage(m);
    } catch (err) {
      if (m.kind.case === "heartbeat") options.onHeartbeat?.("failed");
      throw err;
    }
    switch (m.kind.case) {
      case "heartbeat":
        await heartbeat(session, m.kind.value, signal);
        break;
      case "progress": {
        const known = session.known.get(m.kind.value.operationId);
        noteOwn(session, await operations.progress(node, m.kind.value, signal, known));
        break;
      }
      case "result": {
        const id = m.kind.value.operationId;
        const report = session.reports.get(id);
        session.reports.delete(id);
        const known = session.known.get(id);
        const recorded = await operations.finish(node, m.kind.value, report, signal, known);
        log.info(
          { node, operation: m.kind.value.operationId, outcome: m.kind.value.outcome, recorded },
          "agent operation finished",
        );
        break;
      }
      case "storageReport":
        // Kept until its result, with which it is written; a bounded few per stream, and only
        // of an operation sent on it (while its open operations are read, any: see resync).
        if (
          (session.held !== undefined || session.sent.has(m.kind.value.operationId)) &&
          session.reports.size < 64
        )
          session.reports.set(m.kind.value.operationId, m.kind.value);
        break;
      case "event":
        log.info({ node, event: m.kind.value.kind, vm: m.kind.value.vmId }, "agent event");
        if (m.kind.value.kind === "self-fenced") await selfFenced(node, m.kind.value.vmId, signal);
        break;
      default:
        throw new RpcError("INVALID_ARGUMENT", { message: "hello only once, first" });
    }
  }

  /** HA as desired state: a VM its node stopped on its own clock is to run again. */
  async function selfFenced(node: string, vmId: string, signal: AbortSignal) {
    try {
      // The stream is read in order: the report stored now is the last one the node sent
      // before the event, made before (or at) the fence. Only a later one says whether
      // the VM runs.
      const stored = await inventory.readNode(node, signal);
      const reportMs = msFromTimestamp(stored?.summary.health?.timestamp);
      if (await noteSelfFenced(options.store, node, vmId, reportMs, signal))
        log.info({ node, vm: vmId }, "self-fenced HA vm marked to start again");
    } catch (err) {
      log.warn({ err, node, vm: vmId }, "self-fenced vm not marked to start again");
    }
  }

  /**
   * Reads and records a stream's Hello: the node registered, its report and
   * presence written. Apart from connect so that the decoded Hello (the
   * node's whole inventory) is not held for the stream's life by its frame.
   */
  async function open(
    it: AsyncIterator<AgentMessage>,
    ctx: CallContext,
  ): Promise<{
    session: Session;
    presenceRevision: number;
    version: string;
    opening: OpeningStream;
  }> {
    const hello = await readHello(it, ctx.signal);
    const nodeId = authorize(hello, ctx);
    if (hello.info === undefined) throw new RpcError("INVALID_ARGUMENT");
    await inventory.register(hello.info, principalOf(ctx).id, ctx.signal);
    const queue = createSendQueue<Outgoing>(options.sendQueueMax);
    const session: Session = {
      nodeId,
      presenceRevision: 0,
      queue,
      replace: () => queue.close(new RpcError("AGENT_STREAM_REPLACED")),
      sent: new Set(),
      known: new Map(),
      doneWhileHeld: [],
      cancelled: new Set(),
      capabilities: [...hello.capabilities],
      reports: new Map(),
      vms: hello.health?.vms ?? [],
      // Held from the start: nothing is sent before the open operations are read.
      held: [],
    };
    // Before the presence is written: a connection elsewhere after it is kept for the session.
    const opening = guard.opening(nodeId);
    // The Hello's report and the agent's presence are written at once: a
    // Hello waits for the slower of the two, not for both in turn.
    const [reported, present] = await Promise.allSettled([
      // A Hello stamped in the future renews the node's lease; its report is refused, the stream stays.
      inventory.heartbeat(own(hello.health, nodeId), ctx.signal).catch((err: unknown) => {
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

  async function* connect(
    requests: AsyncIterable<AgentMessage>,
    ctx: CallContext,
  ): AsyncIterable<Outgoing> {
    if (stopping.signal.aborted) throw new RpcError("SHUTTING_DOWN");
    const it = requests[Symbol.asyncIterator]();
    const { session, presenceRevision, version, opening } = await open(it, ctx);
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
      session.queue.push({
        kind: {
          case: "welcome",
          value: {
            heartbeatIntervalMs: options.heartbeatIntervalMs,
            serverTime: timestampFromMs(clock.now()),
            selfFenceWindowMs: options.selfFenceWindowMs ?? 0,
            serverId: options.serverId,
            acceptsUnchangedVms: true,
          },
        },
      });
      // The welcome goes out at once; the node's pending operations follow it
      // once read (the watch is up first, so none falls in between).
      void watching.ready.then(() => resync(session));
      read(session, it, ctx.signal).then(
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
    for (const s of sessions.values()) s.queue.close();
  }

  const service = defineService(
    AgentService,
    {
      // Authorized on the certificate identity in the handler's Hello check (see above).
      // Only cluster identities (nodes) hold streams: never a tenant-confined caller.
      connect: { permission: "node:connect", mutating: true, target: { kind: "cluster" } },
      // A transfer's ticket names the node whose certificate may present it (transfer-handlers.ts).
      uploadTransfer: {
        permission: "node:connect",
        mutating: true,
        target: { kind: "cluster" },
      },
      downloadTransfer: {
        permission: "node:connect",
        mutating: false,
        target: { kind: "cluster" },
      },
    },
    { connect, ...createTransferHandlers(relay) },
  );
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
 * A heartbeat's report with its VMs: those it lists (then the stream's new
 * last list), or with vms_unchanged those of the stream's last list. An
 * agent that repeats its VMs on every heartbeat costs the daemon their
 * decoding, checking and comparing each time; with vms_unchanged it sends
 * them when they change.
 */
function withVms(session: Session, beat: AgentHeartbeat): Health | undefined {
  const { health } = beat;
  if (!beat.vmsUnchanged || health === undefined) {
    if (health !== undefined) session.vms = health.vms;
    return health;
  }
  if (health.vms.length > 0)
    throw new RpcError("INVALID_ARGUMENT", {
      message: "heartbeat.health.vms: must be empty when vms_unchanged is set",
    });
  return { ...health, vms: session.vms };
}

/** Checks an agent's message against the rules declared in the protos. */
function checkMessage(m: AgentMessage): void {
  const violations = validateMessage(AgentMessageSchema, m);
  const first = violations[0];
  if (first !== undefined)
    throw new RpcError("INVALID_ARGUMENT", {
      message: `${first.field}: ${first.description}`,
      fieldViolations: violations,
    });
}
