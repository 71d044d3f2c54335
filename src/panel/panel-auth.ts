// The panel's /auth/ endpoints: requests are refused unless they come from
// the panel's own page, then routed to sign-in (panel-sign-in.ts), user
// administration (panel-user-admin.ts) or the small read-only answers here.

import type { Clock, Logger, Principal } from "../core/index.js";
import { type AccessPolicy, decide, rolesOf, type Take } from "../security/index.js";
import type { LoginThrottle } from "./login-throttle.js";
import { byWhom, createPanelAuthAudit, type PanelAuditSink } from "./panel-auth-audit.js";
import { type AuthRequest, type AuthResponse, fail } from "./panel-auth-http.js";
import { COOKIES, isPanelRequest, parseCookies } from "./panel-cookies.js";
import type { PanelSessions } from "./panel-sessions.js";
import { createPanelSignIn } from "./panel-sign-in.js";
import { createPanelUserAdmin, MANAGE_USERS } from "./panel-user-admin.js";
import type { PanelUsers } from "./panel-users.js";

export type { PanelAuditSink } from "./panel-auth-audit.js";
export type { AuthRequest, AuthResponse } from "./panel-auth-http.js";
export { MANAGE_USERS } from "./panel-user-admin.js";

/** Options of {@link createPanelAuth}. */
export interface PanelAuthOptions {
  readonly users: PanelUsers;
  readonly sessions: PanelSessions;
  readonly throttle: LoginThrottle;
  readonly policy: () => AccessPolicy;
  /** The audit trail and its refusal counts; undefined when audit is off. */
  readonly audit: PanelAuditSink | undefined;
  readonly clock: Clock;
  readonly logger: Logger;
  /** The OpenID Connect issuer's name for the sign-in page, when one is configured. */
  readonly oidcName?: string;
  /** Resolves the principal of a live access token (the authentication stage's own verifier). */
  readonly principalOf: (accessToken: string) => Promise<Principal | undefined>;
  /**
   * Spends from a principal's rate limit, the one its gRPC and /rpc/ calls
   * spend from; undefined when rate limits are off (benchmark mode).
   */
  readonly rateLimit: ((principal: Principal) => Take) | undefined;
  /**
   * Spends from a source's rate limit (an address without port), the one
   * calls spend from before authentication; undefined when rate limits are off.
   */
  readonly sourceLimit: ((source: string) => Take) | undefined;
}

/** The endpoints below /auth/ (the OpenID Connect ones aside). */
const ENDPOINTS = new Set(["login", "refresh", "logout", "providers", "me", "users"]);

/**
 * The endpoint a counted refusal names: one the panel has, or `(other)`,
 * never the request's own path: each distinct text would be a bucket of its
 * own, and one source could push every other one's refusals into the overflow.
 */
const endpointOf = (req: AuthRequest) => (ENDPOINTS.has(req.path) ? req.path : "(other)");

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
    rateLimit: o.rateLimit,
  });
  const admin = createPanelUserAdmin({
    users: o.users,
    sessions: o.sessions,
    policy: o.policy,
    audit,
  });

  /** GET /auth/me: who the caller is and whether it may manage users; recorded like WhoAmI. */
  async function me(req: AuthRequest, principal: Principal): Promise<AuthResponse> {
    const d = decide(o.policy(), principal, MANAGE_USERS);
    const manageUsers = d.allowed && d.tenant === undefined;
    // The caller's tenant as WhoAmI tells it, not the scope of the user-management
    // decision (undefined, so "cluster-wide", for a tenant's viewer who may not manage users).
    const tenant = rolesOf(o.policy(), principal).tenant ?? "";
    await audit.record({
      ...byWhom(req, principal),
      method: "Me",
      code: "OK",
      decision: "allow",
      tenant,
    });
    return {
      status: 200,
      json: { principal: principal.id, tenant, manageUsers },
      cookies: [],
    };
  }

  return {
    async handle(req) {
      if (!isPanelRequest(req.method, req.headers, req.origins)) {
        audit.count({
          method: endpointOf(req),
          peer: req.source,
          code: "PERMISSION_DENIED",
          decision: "deny",
          reason: "PANEL_REQUEST_REFUSED",
          error:
            `cross-origin or unmarked request (origin ${JSON.stringify(req.headers.get("origin") ?? "")})`.slice(
              0,
              200,
            ),
        });
        return fail("PANEL_REQUEST_REFUSED");
      }
      // As for a call, before any credential is looked at; a sign-in has its own throttle.
      const fromSource = req.path === "login" ? undefined : o.sourceLimit?.(req.source);
      if (fromSource !== undefined && !fromSource.allowed) {
        audit.count({
          method: endpointOf(req),
          peer: req.source,
          code: "RESOURCE_EXHAUSTED",
          decision: "deny",
          reason: "RATE_LIMITED",
        });
        return fail("RATE_LIMITED", undefined, fromSource.retryAfterMs);
      }
      const cookies = parseCookies(req.headers.get("cookie"));
      let principal: Principal | undefined;
      try {
        if (req.method === "POST" && req.path === "login") return await login(req, cookies);
        if (req.method === "POST" && req.path === "refresh") return await refresh(req, cookies);
        if (req.method === "POST" && req.path === "logout") return await logout(req, cookies);
        if (req.method === "GET" && req.path === "providers")
          return { status: 200, json: { oidc: o.oidcName ?? null }, cookies: [] };
        principal = await o.principalOf(cookies.get(COOKIES.access) ?? "");
        if (principal === undefined) {
          audit.count({
            method: endpointOf(req),
            peer: req.source,
            code: "UNAUTHENTICATED",
            decision: "unauthenticated",
            reason: "UNAUTHENTICATED",
          });
          return fail("UNAUTHENTICATED");
        }
        // Each request below has its own record: as for a call, the principal's rate limit
        // bounds how many; past it, refusals are counted.
        const limited = o.rateLimit?.(principal);
        if (limited !== undefined && !limited.allowed) {
          audit.count({
            ...byWhom(req, principal),
            method: endpointOf(req),
            code: "RESOURCE_EXHAUSTED",
            decision: "deny",
            reason: "RATE_LIMITED",
          });
          return fail("RATE_LIMITED", undefined, limited.retryAfterMs);
        }
        if (req.method === "GET" && req.path === "me") return await me(req, principal);
        if (req.path === "users" && (req.method === "GET" || req.method === "POST"))
          return await admin(req, principal);
        await audit.record({
          ...byWhom(req, principal),
          method: `${req.method} ${req.path}`.slice(0, 64),
          code: "NOT_FOUND",
          reason: "SERVICE_UNKNOWN",
        });
        return fail("SERVICE_UNKNOWN", "no such endpoint");
      } catch (err) {
        o.logger.error({ err, path: req.path }, "panel auth request failed");
        // Its own record if the trail takes it (the failure may be the trail's).
        await audit
          .record({
            ...(principal === undefined ? { peer: req.source } : byWhom(req, principal)),
            method: `${req.method} ${req.path}`.slice(0, 64),
            code: "INTERNAL",
            reason: "INTERNAL",
          })
          .catch(() => {});
        return fail("INTERNAL");
      }
    },
  };
}
