// The panel's password sessions: signing in (throttled), refreshing the
// access token with the rotating refresh token, and signing out, each
// outcome audited.

import type { Clock, Principal } from "../core/index.js";
import type { Take } from "../security/index.js";
import type { LoginThrottle } from "./login-throttle.js";
import type { PanelAuthAudit } from "./panel-auth-audit.js";
import type { AuthRequest, AuthResponse } from "./panel-auth-http.js";
import { createPanelLogin } from "./panel-login.js";
import { createPanelLogout } from "./panel-logout.js";
import { createPanelRefresh } from "./panel-refresh.js";
import { createSessionCookies } from "./panel-session-cookies.js";
import type { PanelSessions } from "./panel-sessions.js";
import type { PanelUsers } from "./panel-users.js";

/** What {@link createPanelSignIn} needs. */
export interface PanelSignInDeps {
  readonly users: PanelUsers;
  readonly sessions: PanelSessions;
  readonly throttle: LoginThrottle;
  readonly clock: Clock;
  readonly audit: PanelAuthAudit;
  /** Spends from a principal's rate limit (undefined: no limit). */
  readonly rateLimit: ((principal: Principal) => Take) | undefined;
}

/** The sign-in endpoints; each takes the request and its parsed cookies. */
export interface PanelSignIn {
  login(req: AuthRequest, cookies: Map<string, string>): Promise<AuthResponse>;
  refresh(req: AuthRequest, cookies: Map<string, string>): Promise<AuthResponse>;
  logout(req: AuthRequest, cookies: Map<string, string>): Promise<AuthResponse>;
}

/**
 * Creates the sign-in endpoints: sign-in (panel-login.ts), refresh
 * (panel-refresh.ts) and sign-out (panel-logout.ts), sharing one audit and
 * one session cookie builder.
 */
export function createPanelSignIn(o: PanelSignInDeps): PanelSignIn {
  const sessionCookies = createSessionCookies(o.clock);
  const login = createPanelLogin({
    users: o.users,
    sessions: o.sessions,
    throttle: o.throttle,
    audit: o.audit,
    sessionCookies,
  });
  const refresh = createPanelRefresh({
    sessions: o.sessions,
    audit: o.audit,
    rateLimit: o.rateLimit,
    sessionCookies,
  });
  const logout = createPanelLogout({ sessions: o.sessions, audit: o.audit, sessionCookies });
  return { login, refresh, logout };
}
