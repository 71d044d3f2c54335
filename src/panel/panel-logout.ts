// The panel's sign-out (POST /auth/logout): ends the session whose token the
// request holds and clears its cookies; an ended session is recorded, a
// sign-out that ended nothing counted.

import type { PanelAuthAudit } from "./panel-auth-audit.js";
import type { AuthRequest, AuthResponse } from "./panel-auth-http.js";
import { COOKIES } from "./panel-cookies.js";
import type { SessionCookies } from "./panel-session-cookies.js";
import type { PanelSessions } from "./panel-sessions.js";

/** What {@link createPanelLogout} needs. */
export interface PanelLogoutDeps {
  readonly sessions: PanelSessions;
  readonly audit: PanelAuthAudit;
  readonly sessionCookies: SessionCookies;
}

/** Creates the sign-out endpoint; it takes the request and its parsed cookies. */
export function createPanelLogout(
  o: PanelLogoutDeps,
): (req: AuthRequest, cookies: Map<string, string>) => Promise<AuthResponse> {
  const { audit } = o;
  const { cleared } = o.sessionCookies;

  return async function logout(
    req: AuthRequest,
    cookies: Map<string, string>,
  ): Promise<AuthResponse> {
    // Only a session whose token the request holds: its id alone is no proof.
    const sid = await o.sessions.heldSession(
      cookies.get(COOKIES.refresh) ?? "",
      cookies.get(COOKIES.access) ?? "",
    );
    const ended = sid !== undefined && (await o.sessions.end(sid, "signed out"));
    const outcome = { method: "Logout", peer: req.source, code: "OK", decision: "allow" };
    // Ending a session is recorded; a sign-out that ended nothing anyone can repeat: counted.
    if (ended) await audit.record({ ...outcome, args: `session=${sid}`, reason: "session ended" });
    else audit.count({ ...outcome, reason: "no live session" });
    return { status: 200, json: {}, cookies: cleared };
  };
}
