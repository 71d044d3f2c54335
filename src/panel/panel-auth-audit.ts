// The audit records of the panel's /auth/ endpoints: `panel.auth` events,
// never with the password or any token. As for gRPC calls, an outcome with
// someone behind it gets its own record; a refusal anyone on the network can
// repeat (before anyone is known, or throttled) is counted instead, so a flood
// can neither fill the disk nor cost an fsync per request.

import type { AuditFields } from "../audit/index.js";
import type { Principal } from "../core/index.js";

/** Where the panel's sign-in outcomes go (the daemon's audit trail and its refusal counts). */
export interface PanelAuditSink {
  /** Appends one record, durably. */
  append(fields: AuditFields): Promise<void>;
  /** Counts a refusal: one record per source, reason, principal and method per interval. */
  count(fields: AuditFields): void;
}

type Outcome = Partial<AuditFields> & Pick<AuditFields, "method" | "code">;

/** Records /auth/ outcomes; the fields not given are empty. */
export interface PanelAuthAudit {
  /** An outcome of its own record, written before the answer goes out. */
  record(f: Outcome): Promise<void>;
  /** A refusal that is counted; its `reason` must come from a small fixed set, never the request's text. */
  count(f: Outcome): void;
}

/** Creates the recorder over `sink` (undefined when audit is off: records nothing). */
export function createPanelAuthAudit(sink: PanelAuditSink | undefined): PanelAuthAudit {
  const fields = (f: Outcome): AuditFields => ({
    event: "panel.auth",
    requestId: "",
    principal: "",
    authMethod: "password",
    keyId: "",
    tenant: "",
    peer: "",
    service: "debvisor.panel.Auth",
    permission: "",
    decision: "",
    reason: "",
    args: "",
    error: "",
    durationMs: 0,
    ...f,
  });
  return {
    async record(f) {
      await sink?.append(fields(f));
    },
    count(f) {
      sink?.count(fields(f));
    },
  };
}

/** The fields naming who made a request: its principal and source. */
export const byWhom = (req: { readonly source: string }, principal: Principal) => ({
  principal: principal.id,
  authMethod: principal.method,
  peer: req.source,
});

/**
 * Records each older session a sign-in of `principal` ended past the
 * per-user cap, naming the new session: its own record, as a sign-in is throttled.
 */
export async function recordSessionLimit(
  audit: PanelAuthAudit,
  principal: string,
  peer: string,
  started: { readonly sessionId: string; readonly endedOlder: readonly string[] },
): Promise<void> {
  for (const sid of started.endedOlder)
    await audit.record({
      method: "Login.SessionLimit",
      principal,
      peer,
      code: "OK",
      decision: "allow",
      reason: "oldest session ended",
      args: `session=${sid} newer=${started.sessionId}`,
    });
}
