/**
 * The delivery of a node's operations to its stream here: the process's one
 * watch on `operations/` routes each record to the session holding its node,
 * which notes its latest version, holds it while the node's open operations
 * are read (a resync), and otherwise offers it (sends its dispatch or cancel
 * once, or refuses a kind the agent did not announce).
 */
import { type Clock, type Logger, type RpcError, timestampFromMs } from "../core/index.js";
import { OperationPhase, type OperationRecord } from "../gen/debvisor/store/v1/agent_records_pb.js";
import { OperationOutcome } from "../gen/debvisor/v1/agent_pb.js";
import type { KvStore, Versioned } from "../store/index.js";
import { watchOperations } from "./agent-operation-watch.js";
import type { AgentOperations } from "./agent-operations.js";
import { checkCapability } from "./agent-presence.js";
import type { AgentSession } from "./agent-session.js";

/** Options of {@link createAgentDelivery}. */
export interface AgentDeliveryOptions {
  readonly store: KvStore;
  readonly operations: AgentOperations;
  readonly clock: Clock;
  /** This control-plane process, recorded on deliveries. */
  readonly serverId: string;
  /** The hub's stop: ends the watch and the writes in flight. */
  readonly signal: AbortSignal;
  readonly logger: Logger;
  /** For lines that come with the traffic (see repeatLimitedLogger). */
  readonly quiet: Logger;
  /** The streams held here, by node. */
  readonly sessions: ReadonlyMap<string, AgentSession>;
}

/** Operations delivered to the streams held here. */
export interface AgentDelivery {
  /** Settles once the watch is up: a resync after it misses no operation. */
  readonly ready: Promise<void>;
  /** Notes this process's own write of an operation still open on the stream (not one done since). */
  noteOwn(session: AgentSession, written: Versioned<OperationRecord> | undefined): void;
  /** Reads the node's open operations and offers them, then the watch's records held meanwhile. */
  resync(session: AgentSession): Promise<void>;
}

/**
 * Starts the process's operation watch for the hub's streams. One watch per
 * process routes operations to the streams it holds; a lost watch resyncs
 * every stream.
 */
export function createAgentDelivery(options: AgentDeliveryOptions): AgentDelivery {
  const { operations, clock, sessions, signal, logger: log, quiet } = options;

  /** Notes the latest version of an operation of the session's node the watch has shown. */
  function note(session: AgentSession, record: OperationRecord, modRevision: number): void {
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

  function noteOwn(session: AgentSession, written: Versioned<OperationRecord> | undefined): void {
    const id = written?.message.dispatch?.operationId ?? "";
    if (written !== undefined && session.sent.has(id))
      note(session, written.message, written.modRevision);
  }

  /** A finished operation leaves the stream's sets (they would grow for the stream's life). */
  function forget(session: AgentSession, id: string): void {
    session.known.delete(id);
    session.reports.delete(id);
    session.sent.delete(id);
    session.cancelled.delete(id);
  }

  function offer(session: AgentSession, record: OperationRecord): void {
    const dispatch = record.dispatch;
    const id = dispatch?.operationId ?? "";
    if (record.phase === OperationPhase.DONE || dispatch === undefined || id === "") return;
    if (!session.sent.has(id)) {
      session.sent.add(id);
      if (refuseUnannounced(session, dispatch.kind, id)) return;
      if (!session.queue.push({ kind: { case: "dispatch", value: dispatch } })) return;
      operations
        .delivered(session.nodeId, id, options.serverId, signal, session.known.get(id))
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
    signal,
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

  /**
   * An operation of a kind the agent did not name in its Hello is never
   * sent: it ends here, FAILED with AGENT_CAPABILITY_MISSING.
   */
  function refuseUnannounced(session: AgentSession, kind: number, id: string): boolean {
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
          signal,
        )
        .catch((e: unknown) =>
          quiet.warn({ err: e, node: session.nodeId, id }, "refusal not recorded"),
        );
      return true;
    }
  }

  async function resync(session: AgentSession): Promise<void> {
    // A stream that ended before the watch was up has nothing to be sent.
    if (sessions.get(session.nodeId) !== session) return;
    if (session.rereading !== undefined) {
      session.rereading.again = true;
      return;
    }
    const rereading = { again: true };
    session.rereading = rereading;
    const held = session.held ?? [];
    session.held = held;
    try {
      while (rereading.again && !signal.aborted) {
        rereading.again = false;
        try {
          for (const r of await operations.open(session.nodeId, signal)) offer(session, r);
        } catch (err) {
          quiet.warn({ err, node: session.nodeId }, "pending operations not read");
        }
      }
    } finally {
      session.rereading = undefined;
      session.held = undefined;
      for (const r of held) offer(session, r);
      for (const id of session.doneWhileHeld.splice(0)) forget(session, id);
      // A report of no operation sent on the stream waits for a result that is not its own.
      for (const id of session.reports.keys())
        if (!session.sent.has(id)) session.reports.delete(id);
    }
  }

  return { ready: watching.ready, noteOwn, resync };
}
