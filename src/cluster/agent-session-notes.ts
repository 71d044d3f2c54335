/**
 * What the delivery notes on a stream's session (agent-delivery.ts): the
 * latest version of each operation, and the operations finished, which
 * leave its sets once no records wait.
 */
import { OperationPhase, type OperationRecord } from "../gen/debvisor/store/v1/agent_records_pb.js";
import type { Versioned } from "../store/index.js";
import type { AgentSession } from "./agent-session.js";

/** Notes the latest version of an operation of the session's node the watch has shown. */
export function note(session: AgentSession, record: OperationRecord, modRevision: number): void {
  const id = record.dispatch?.operationId ?? "";
  if (id === "") return;
  if (record.phase === OperationPhase.DONE) {
    session.known.delete(id);
    if (holding(session)) session.doneWhileHeld.add(id);
    else forget(session, id);
    return;
  }
  if ((session.known.get(id)?.modRevision ?? 0) < modRevision)
    session.known.set(id, { message: record, modRevision });
}

/** Notes this process's own write of an operation still open on the stream (not one done since). */
export function noteOwn(
  session: AgentSession,
  written: Versioned<OperationRecord> | undefined,
): void {
  const id = written?.message.dispatch?.operationId ?? "";
  if (written !== undefined && session.sent.has(id))
    note(session, written.message, written.modRevision);
}

/** Forgets the operations seen DONE while records waited, once none wait. */
export function release(session: AgentSession): void {
  if (holding(session)) return;
  for (const id of session.doneWhileHeld) forget(session, id);
  session.doneWhileHeld.clear();
}

/** Records wait (a resync reads, a start's claim is written): DONE ones are forgotten after. */
const holding = (s: AgentSession) => s.held !== undefined || (s.claiming?.size ?? 0) > 0;

/** A finished operation leaves the stream's sets (they would grow for the stream's life). */
function forget(session: AgentSession, id: string): void {
  session.known.delete(id);
  session.reports.delete(id);
  session.sent.delete(id);
  session.cancelled.delete(id);
}
