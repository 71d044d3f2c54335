/**
 * The delivery of a node's operations to its stream here: the process's one
 * watch on `operations/` routes each record to the session holding its node,
 * which notes its latest version, holds it while the node's open operations
 * are read (a resync), and otherwise offers it (sends its dispatch or cancel
 * once, or refuses a kind the agent did not announce). A start under a
 * generation is sent the first time once its delivery is written
 * (agent-start-claims.ts), the stream's later records of its VM waiting
 * meanwhile.
 */
import type { Clock, Logger } from "../core/index.js";
import { OperationPhase, type OperationRecord } from "../gen/debvisor/store/v1/agent_records_pb.js";
import type { OperationDispatch } from "../gen/debvisor/v1/agent_pb.js";
import type { KvStore, Versioned } from "../store/index.js";
import { watchOperations } from "./agent-operation-watch.js";
import type { AgentOperations } from "./agent-operations.js";
import type { AgentSession } from "./agent-session.js";
import { note, noteOwn, release } from "./agent-session-notes.js";
import { createStartClaims } from "./agent-start-claims.js";
import { refuseUnannounced } from "./agent-unannounced.js";

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
  /** The VM's placement generation now, if known (see agent-start-claims.ts). */
  readonly placedGeneration: (vmId: string) => bigint | undefined;
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
  const { operations, sessions, signal, logger: log, quiet } = options;
  const claims = createStartClaims(options);

  function offer(session: AgentSession, record: OperationRecord): void {
    const waiting = session.claiming?.get(record.dispatch?.vmId ?? "");
    if (waiting !== undefined) {
      waiting.push(record);
      return;
    }
    const dispatch = record.dispatch;
    const id = dispatch?.operationId ?? "";
    if (record.phase === OperationPhase.DONE || dispatch === undefined || id === "") return;
    // Seen DONE while records waited (abandoned, say): an earlier record of it is no offer.
    if (session.doneWhileHeld.has(id)) return;
    if (!session.sent.has(id)) {
      session.sent.add(id);
      if (refuseUnannounced(options, session, dispatch.kind, id)) return;
      if (claims.needed(record)) {
        claimThenSend(session, record, dispatch);
        return;
      }
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

  /**
   * A start under a generation, never sent: its delivery is written first
   * (or it ends there, stale); the stream's later records of the same VM
   * wait meanwhile, in order, then are offered after it (its own cancel,
   * if asked, first). Other VMs' go on: the agent orders operations per VM.
   */
  function claimThenSend(
    session: AgentSession,
    record: OperationRecord,
    dispatch: OperationDispatch,
  ): void {
    const { operationId: id, vmId } = dispatch;
    const waiting: OperationRecord[] = [];
    const claiming = session.claiming ?? new Map<string, OperationRecord[]>();
    session.claiming = claiming;
    claiming.set(vmId, waiting);
    const current = () => sessions.get(session.nodeId) === session && !signal.aborted;
    void claims
      .claim(session.nodeId, record, session.known.get(id), current)
      .then((w) => {
        if (w !== undefined && w.message.phase !== OperationPhase.DONE) {
          // Written as given to a stream and given to none (it ended): a later stream sends
          // it as one given before, unchecked (docs/cluster.md says so).
          if (current() && session.queue.push({ kind: { case: "dispatch", value: dispatch } }))
            noteOwn(session, w);
          return;
        }
        // Refused, or ended meanwhile (a lagging watch can offer it again): never sent
        // here, so a cancel asked meanwhile has nothing to stop.
        session.cancelled.add(id);
        if (w === undefined) return;
        log.warn({ node: session.nodeId, id, vm: vmId }, "stale start not sent");
        noteOwn(session, w);
      })
      .finally(() => {
        claiming.delete(vmId);
        if (claiming.size === 0 && session.claiming === claiming) session.claiming = undefined;
        for (const r of [record, ...waiting]) offer(session, r);
        release(session);
      });
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
      release(session);
      // A report of no operation sent on the stream waits for a result that is not its own.
      for (const id of session.reports.keys())
        if (!session.sent.has(id)) session.reports.delete(id);
    }
  }

  return { ready: watching.ready, noteOwn, resync };
}
