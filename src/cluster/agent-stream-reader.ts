/**
 * The reading of an agent's messages after its Hello: paced to the node's
 * message rate, checked against the protos, and handled in order
 * (heartbeats, operation progress and results, storage reports, events).
 */
import { setTimeout as sleep } from "node:timers/promises";
import {
  type Clock,
  type Logger,
  msFromTimestamp,
  RpcError,
  rethrowAborted,
  validateMessage,
} from "../core/index.js";
import { type AgentMessage, AgentMessageSchema } from "../gen/debvisor/v1/agent_pb.js";
import { type BucketLimit, createRateLimiter } from "../security/index.js";
import type { KvStore } from "../store/index.js";
import type { AgentDelivery } from "./agent-delivery.js";
import type { HeartbeatOutcome, HeartbeatRecorder } from "./agent-heartbeat.js";
import type { AgentOperations } from "./agent-operations.js";
import type { AgentSession } from "./agent-session.js";
import { noteSelfFenced } from "./ha-restore.js";
import type { Inventory } from "./inventory.js";

/** Options of {@link createAgentStreamReader}. */
export interface AgentStreamReaderOptions {
  readonly store: KvStore;
  readonly inventory: Inventory;
  readonly operations: AgentOperations;
  readonly clock: Clock;
  /** Messages read from one node's streams (see AgentHubOptions.messageRate). Unset: not limited. */
  readonly messageRate?: BucketLimit;
  readonly logger: Logger;
  /**
   * For lines a node's messages make at its will (its events, results of
   * operations it was not sent, failed marks): each written at most once per
   * interval, with the nodes left out. The plain logger wrote one per message,
   * words the node chose, about 100 a second per stolen certificate (an
   * adversarial review, 8 December 2026).
   */
  readonly quiet: Logger;
  readonly heartbeats: HeartbeatRecorder;
  /** Notes the writes of progress on the stream's operations. */
  readonly delivery: Pick<AgentDelivery, "noteOwn">;
  /** Told of every heartbeat's outcome, for a metric (the log tells only some). */
  readonly onHeartbeat?: (outcome: HeartbeatOutcome) => void;
}

/** Reads the streams held here. */
export interface AgentStreamReader {
  /** Handles a stream's messages in order; settles when the stream ends, rejects when it fails. */
  read(session: AgentSession, it: AsyncIterator<AgentMessage>, signal: AbortSignal): Promise<void>;
}

/** Builds the hub's reader of agents' messages. */
export function createAgentStreamReader(options: AgentStreamReaderOptions): AgentStreamReader {
  const { inventory, operations, heartbeats, delivery, logger: log, quiet } = options;
  /** One budget per node, shared by its streams here (a new stream does not refill it). */
  const budgets = createRateLimiter(options.clock);

  /**
   * Handles a stream's messages in order. Each is read and handled by a call
   * of its own, so that nothing here holds the last message while waiting
   * for the next: a heartbeat carries the node's whole report.
   */
  async function read(
    session: AgentSession,
    it: AsyncIterator<AgentMessage>,
    signal: AbortSignal,
  ): Promise<void> {
    while (await readOne(session, it, signal)) {
      // Each turn reads and handles one message.
    }
  }

  /** Reads one message of the stream and handles it; false once the stream has ended. */
  async function readOne(
    session: AgentSession,
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

  async function handle(
    session: AgentSession,
    m: AgentMessage,
    signal: AbortSignal,
  ): Promise<void> {
    const node = session.nodeId;
    try {
      checkMessage(m);
    } catch (err) {
      if (m.kind.case === "heartbeat") options.onHeartbeat?.("failed");
      throw err;
    }
    switch (m.kind.case) {
      case "heartbeat":
        await heartbeats.record(session, m.kind.value, signal);
        break;
      case "progress": {
        const known = session.known.get(m.kind.value.operationId);
        delivery.noteOwn(session, await operations.progress(node, m.kind.value, signal, known));
        break;
      }
      case "result": {
        const id = m.kind.value.operationId;
        const report = session.reports.get(id);
        session.reports.delete(id);
        const known = session.known.get(id);
        const recorded = await operations.finish(node, m.kind.value, report, signal, known);
        // One of its own operations ended: told. Anything else (one it was not sent, or ended
        // already) is the node's word alone.
        (recorded ? log : quiet).info(
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
        quiet.info({ node, event: m.kind.value.kind, vm: m.kind.value.vmId }, "agent event");
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
      quiet.warn({ err, node, vm: vmId }, "self-fenced vm not marked to start again");
    }
  }

  return { read };
}

/** Checks an agent's message against the rules declared in the protos. */
export function checkMessage(m: AgentMessage): void {
  const violations = validateMessage(AgentMessageSchema, m);
  const first = violations[0];
  if (first !== undefined)
    throw new RpcError("INVALID_ARGUMENT", {
      message: `${first.field}: ${first.description}`,
      fieldViolations: violations,
    });
}
