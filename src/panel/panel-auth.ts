// The panel's /auth/ endpoints: requests are refused unless they come from
// the panel's own page, then routed to sign-in (panel-sign-in.ts), user
// administration (panel-user-admin.ts) or the small read-only answers here.

import type { AuditFields } from "../audit/index.js";
import type { Clock, Logger, Principal } from "../core/index.js";
import { type AccessPolicy, decide } from "../security/index.js";
import type { LoginThrottle } from "./login-throttle.js";
import { createPanelAuthAudit } from "./panel-auth-audit.js";
import { type AuthRequest, type AuthResponse, fail } from "./panel-auth-http.js";
import { COOKIES, isPanelRequest, parseCookies } from "./panel-cookies.js";
import type { PanelSessions } from "./panel-sessions.js";
import { createPanelSignIn } from "./panel-sign-in.js";
import { createPanelUserAdmin, MANAGE_USERS } from "./panel-user-admin.js";
import type { PanelUsers } from "./panel-users.js";

export type { AuthRequest, AuthResponse } from "./panel-auth-http.js";
export { MANAGE_USERS } from "./panel-user-admin.js";

/** Options of {@link createPanelAuth}. */
export interface PanelAuthOptions {
  readonly users: PanelUsers;
  readonly sessions: PanelSessions;
  readonly throttle: LoginThrottle;
  readonly policy: () => AccessPolicy;
  /** Appends to the audit trail; undefined when audit is off. */
  readonly audit: ((fields: AuditFields) => Promise<void>) | undefined;
  readonly clock: Clock;
  readonly logger: Logger;
  /** The OpenID Connect issuer's name for the sign-in page, when one is configured. */
  readonly oidcName?: string;
  /** Resolves the principal of a live access token (the authentication stage's own verifier). */
  readonly principalOf: (accessToken: string) => Promise<Principal | undefined>;
}

/** The /auth/ endpoints of the panel. */
export interface PanelAuth {
  handle(req: AuthRequest): Promise<AuthResponse>;
}

/**
 * Sign-in, refresh, sign-out and user administration for the web panel.
 * Every request must come from the panel's own page (custom header and
 * Origin); every outcome is audited without the password or any token.
 */
export function createPanelAuth(o: PanelAuthOptions): PanelAuth {
  const audit = createPanelAuthAudit(o.audit);
  const { login, refresh, logout } = createPanelSignIn({
    users: o.users,
    sessions: o.sessions,
    throttle: o.throttle,
    clock: o.clock,
    audit,
  });
  const admin = createPanelUserAdmin({
    users: o.users,
    sessions: o.sessions,
    policy: o.policy,
    audit,
  });

  return {
    async handle(req) {
      if (!isPanelRequest(req.method, req.headers, req.origins)) {
        await audit({
          method: req.path,
          peer: req.source,
          code: "PERMISSION_DENIED",
          decision: "deny",
          reason:
            `cross-origin or unmarked request (origin ${JSON.stringify(req.headers.get("origin") ?? "")})`.slice(
              0,
              200,
            ),
        });
        return fail("PANEL_REQUEST_REFUSED");
      }
      const cookies = parseCookies(req.headers.get("cookie"));
      try {
        if (req.method === "POST" && req.path === "login") return await login(req, cookies);
        if (req.method === "POST" && req.path === "refresh") return await refresh(req, cookies);
        if (req.method === "POST" && req.path === "logout") return await logout(req, cookies);
        if (req.method === "GET" && req.path === "providers")
          return { status: 200, json: { oidc: o.oidcName ?? null }, cookies: [] };
        const principal = await o.principalOf(cookies.get(COOKIES.access) ?? "");
        if (principal === undefined) return fail("UNAUTHENTICATED");
        if (req.method === "GET" && req.path === "me") {
          const d = decide(o.policy(), principal, MANAGE_USERS);
          return {
            status: 200,
            json: {
              principal: principal.id,
              tenant: d.tenant ?? "",
              manageUsers: d.allowed && d.tenant === undefined,
            },
            cookies: [],
          };
        }
        if (req.path === "users" && (req.method === "GET" || req.method === "POST"))
          return await admin(req, principal);
        return fail("SERVICE_UNKNOWN", "no such endpoint");
      } catch (err) {
        o.logger.error({ err, path: req.path }, "panel auth request failed");
        return fail("INTERNAL");
      }
    },
  };
}
