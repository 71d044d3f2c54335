// The panel's token refresh (POST /auth/refresh): the rotating refresh
// token traded for a new access token, spending the principal's rate limit;
// a reused token ends its session and is recorded (the one just rotated away,
// within the grace, gets an access token), other refusals counted.

import type { Principal } from "../core/index.js";
import type { Take } from "../security/index.js";
import type { PanelAuthAudit } from "./panel-auth-audit.js";
import { type AuthRequest, type AuthResponse, fail } from "./panel-auth-http.js";
import { COOKIES } from "./panel-cookies.js";
import type { SessionCookies } from "./panel-session-cookies.js";
import type { PanelSessions } from "./panel-sessions.js";

/** What {@link createPanelRefresh} needs. */
export interface PanelRefreshDeps {
  readonly sessions: PanelSessions;
  readonly audit: PanelAuthAudit;
  /** Spends from a principal's rate limit (undefined: no limit). */
  readonly rateLimit: ((principal: Principal) => Take) | undefined;
  readonly sessionCookies: SessionCookies;
}

/** Creates the refresh endpoint; it takes the request and its parsed cookies. */
export function createPanelRefresh(
  o: PanelRefreshDeps,
): (req: AuthRequest, cookies: Map<string, string>) => Promise<AuthResponse> {
  const { audit, sessionCookies } = o;
  const { cleared } = sessionCookies;

  return async function refresh(
    req: AuthRequest,
    cookies: Map<string, string>,
  ): Promise<AuthResponse> {
    const token = cookies.get(COOKIES.refresh) ?? "";
    const { rateLimit } = o;
    const r = await o.sessions.refresh(
      token,
      rateLimit === undefined
        ? undefined
        : (principal) => rateLimit({ id: principal, method: "jwt", roles: [] }),
    );
    if ("failure" in r && r.failure === "rate-limited") {
      // The token is still the session's: the cookies stay. Counted, as past any rate limit.
      audit.count({
        method: "Refresh",
        principal: r.principal ?? "",
        authMethod: "jwt",
        peer: req.source,
        code: "RESOURCE_EXHAUSTED",
        decision: "deny",
        reason: "RATE_LIMITED",
      });
      return fail("RATE_LIMITED", undefined, r.retryAfterMs);
    }
    if ("failure" in r) {
      const refused = {
        method: "Refresh",
        principal: r.principal ?? "",
        peer: req.source,
        code: "UNAUTHENTICATED",
        decision: "unauthenticated",
        reason: `refresh refused: ${r.failure}`,
      };
      // A reused token (a stolen copy; the session ends now) is recorded on its own, once per
      // session; any other refusal is counted: refresh is not throttled, anyone can repeat it.
      if (r.failure === "reused")
        await audit.record({ ...refused, args: `session=${r.sessionId ?? ""}` });
      else audit.count(refused);
      const f = fail(
        "UNAUTHENTICATED",
        r.failure === "reused"
          ? "session ended: a refresh token was used twice; sign in again"
          : "session ended; sign in again",
      );
      return { ...f, cookies: cleared };
    }
    await audit.record({
      method: "Refresh",
      principal: r.principal,
      peer: req.source,
      code: "OK",
      decision: "allow",
      // An access token only: the token was rotated away just before (two tabs at once).
      ...(r.tokens.refreshToken === "" ? { reason: "within the reuse grace" } : {}),
      args: `session=${r.tokens.sessionId}`,
    });
    return { status: 200, json: { user: r.user }, cookies: sessionCookies.issue(r.tokens) };
  };
}
