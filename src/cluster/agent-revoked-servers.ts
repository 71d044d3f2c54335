/**
 * The revoked server certificates the agent hub tells its agents: in each
 * Welcome, and pushed to every stream it holds when the list changes (an
 * agent connected to a certificate now revoked drops it and reconnects;
 * its daemon renews a revoked certificate of its own).
 */
import type { RevokedServerCertificates } from "../security/index.js";
import type { AgentSession } from "./agent-session.js";

/** What the hub needs of the list: the Welcome's field, and the push's end. */
export interface RevokedServersTelling {
  /** For a Welcome: unset while the list is unknown, so the agent keeps its own. */
  welcome(): { serials: string[] } | undefined;
  stop(): void;
}

/** Tells the streams of `sessions` every new list of `source` (none when unset). */
export function tellRevokedServers(
  source: Pick<RevokedServerCertificates, "current" | "onChange"> | undefined,
  sessions: ReadonlyMap<string, AgentSession>,
): RevokedServersTelling {
  const stop = source?.onChange((serials) => {
    for (const s of sessions.values())
      s.queue.push({ kind: { case: "revokedServers", value: { serials: [...serials] } } });
  });
  return {
    welcome() {
      const serials = source?.current();
      return serials === undefined ? undefined : { serials: [...serials] };
    },
    stop: () => stop?.(),
  };
}
