import type { AuditFields } from "../audit/index.js";
import { type Clock, type Logger, type Principal, RpcError } from "../core/index.js";
import { type AccessPolicy, decide } from "../security/index.js";
import type { LoginThrottle } from "./login-throttle.js";
import { COOKIES, isPanelRequest, parseCookies, setCookie } from "./panel-cookies.js";
import type { PanelSessions } from "./panel-sessions.js";
import { checkCredentials, type PanelUsers, userPrincipal } from "./panel-users.js";
import { verifyPassword } from "./password-hashing.js";

/** Permission an admin needs to manage panel users and end their sessions (admin holds auth:*). */
export const MANAGE_USERS = "auth:user:manage";

/** A sign-in request as the panel's HTTP listener hands it over. */
export interface AuthRequest {
  readonly method: string;
  /** Path below /auth/, e.g. `login`. */
  readonly path: string;
  readonly headers: { get(name: string): string | undefined };
  /** Origins this request may come from: the panel's own (scheme://host:port). */
  readonly origins: readonly string[];
  /** Remote address (no port). */
  readonly source: string;
  /** Parsed JSON body (at most a few KiB), or undefined. */
  readonly body: unknown;
}

/** What to answer. */
export interface AuthResponse {
  readonly status: number;
  readonly json: unknown;
  readonly cookies: readonly string[];
}

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

const HTTP: Record<number, number> = { 3: 400, 5: 404, 7: 403, 8: 429, 16: 401 };
const str = (v: unknown, max: number) => (typeof v === "string" && v.length <= max ? v : undefined);

/**
 * Sign-in, refresh, sign-out and user administration for the web panel.
 * Every request must come from the panel's own page (custom header and
 * Origin); every outcome is audited without the password or any token.
 */
export function createPanelAuth(o: PanelAuthOptions): PanelAuth {
  const audit = async (f: Partial<AuditFields> & Pick<AuditFields, "method" | "code">) => {
    await o.audit?.({
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
  };
  const fail = (
    reason: ConstructorParameters<typeof RpcError>[0],
    message?: string,
    retryAfterMs?: number,
  ) => {
    const e = new RpcError(reason, { message, retryAfterMs });
    return {
      status: HTTP[e.code] ?? 400,
      json: { reason: e.reason, message: e.clientMessage, retryAfterMs },
      cookies: [],
    };
  };
  const sessionCookies = (t: {
    accessToken: string;
    refreshToken: string;
    accessExpiresAtMs: number;
    sessionExpiresAtMs: number;
  }) => {
    const now = o.clock.now();
    return [
      setCookie(COOKIES.access, t.accessToken, t.accessExpiresAtMs - now),
      setCookie(COOKIES.refresh, t.refreshToken, t.sessionExpiresAtMs - now),
    ];
  };
  const cleared = [setCookie(COOKIES.access, "", 0), setCookie(COOKIES.refresh, "", 0)];

  async function login(req: AuthRequest, cookies: Map<string, string>): Promise<AuthResponse> {
    const body = (req.body ?? {}) as Record<string, unknown>;
    const user = str(body.user, 63) ?? "";
    const password = str(body.password, 256);
    const peer = req.source;
    const verdict = o.throttle.check(peer, user, cookies.get(COOKIES.device));
    if (!verdict.allowed) {
      await audit({
        method: "Login",
        principal: userPrincipal(user),
        peer,
        code: "RESOURCE_EXHAUSTED",
        decision: "deny",
        reason: `too many attempts per ${verdict.scope}`,
      });
      return fail(
        "RATE_LIMITED",
        `too many sign-in attempts; try again in ${Math.ceil(verdict.retryAfterMs / 1000)} s`,
        verdict.retryAfterMs,
      );
    }
    const record = password === undefined ? undefined : await o.users.get(user);
    const ok = await verifyPassword(
      password ?? "",
      record?.disabled ? undefined : record?.passwordHash,
    );
    if (!ok || record === undefined || record.disabled) {
      await audit({
        method: "Login",
        principal: userPrincipal(user),
        peer,
        code: "UNAUTHENTICATED",
        decision: "unauthenticated",
        reason:
          record === undefined
            ? "unknown user"
            : record.disabled
              ? "user disabled"
              : "wrong password",
      });
      return fail("LOGIN_FAILED");
    }
    const tokens = await o.sessions.start(user, peer);
    await audit({
      method: "Login",
      principal: userPrincipal(user),
      peer,
      code: "OK",
      decision: "allow",
      reason: "password",
      args: `session=${tokens.sessionId}`,
    });
    return {
      status: 200,
      json: { user, principal: userPrincipal(user) },
      cookies: [
        ...sessionCookies(tokens),
        setCookie(COOKIES.device, o.throttle.deviceTokenFor(user), 400 * 86_400_000),
      ],
    };
  }

  async function refresh(req: AuthRequest, cookies: Map<string, string>): Promise<AuthResponse> {
    const token = cookies.get(COOKIES.refresh) ?? "";
    const r = await o.sessions.refresh(token);
    if ("failure" in r) {
      await audit({
        method: "Refresh",
        principal: r.principal ?? "",
        peer: req.source,
        code: "UNAUTHENTICATED",
        decision: "unauthenticated",
        reason: `refresh refused: ${r.failure}`,
        args: r.sessionId === undefined ? "" : `session=${r.sessionId}`,
      });
      const f = fail(
        "UNAUTHENTICATED",
        r.failure === "reused"
          ? "session ended: a refresh token was used twice; sign in again"
          : "session ended; sign in again",
      );
      return { ...f, cookies: cleared };
    }
    await audit({
      method: "Refresh",
      principal: r.principal,
      peer: req.source,
      code: "OK",
      decision: "allow",
      args: `session=${r.tokens.sessionId}`,
    });
    return { status: 200, json: { user: r.user }, cookies: sessionCookies(r.tokens) };
  }

  async function logout(req: AuthRequest, cookies: Map<string, string>): Promise<AuthResponse> {
    const sid =
      o.sessions.sessionIdOf(cookies.get(COOKIES.refresh) ?? "") ??
      o.sessions.sessionIdOf(cookies.get(COOKIES.access) ?? "");
    const ended = sid !== undefined && (await o.sessions.end(sid, "signed out"));
    await audit({
      method: "Logout",
      peer: req.source,
      code: "OK",
      decision: "allow",
      args: sid === undefined ? "" : `session=${sid}`,
      reason: ended ? "session ended" : "no live session",
    });
    return { status: 200, json: {}, cookies: cleared };
  }

  async function admin(req: AuthRequest, principal: Principal): Promise<AuthResponse> {
    const d = decide(o.policy(), principal, MANAGE_USERS);
    const base = {
      principal: principal.id,
      authMethod: principal.method,
      peer: req.source,
      permission: MANAGE_USERS,
      tenant: d.tenant ?? "",
    };
    // Tenant-bound admins manage nobody: panel users are cluster-wide.
    if (!d.allowed || d.tenant !== undefined) {
      await audit({
        ...base,
        method: `Users.${req.method}`,
        code: "PERMISSION_DENIED",
        decision: "deny",
        reason: d.reason,
      });
      return fail("PERMISSION_DENIED");
    }
    if (req.method === "GET") {
      const users = (await o.users.list()).map((u) => ({
        name: u.name,
        disabled: u.disabled,
        principal: userPrincipal(u.name),
      }));
      return { status: 200, json: { users }, cookies: [] };
    }
    const body = (req.body ?? {}) as Record<string, unknown>;
    // Any length reaches checkCredentials (the body is at most 8 KiB), so the answer names the limit.
    const name = str(body.user, 8192) ?? "";
    const action = str(body.action, 16);
    if (action === "set-password") {
      const password = str(body.password, 8192) ?? "";
      const problem = checkCredentials(name, password);
      if (problem !== undefined) return fail("INVALID_ARGUMENT", problem);
      await o.users.setPassword(name, password, principal.id);
      await audit({
        ...base,
        method: "Users.SetPassword",
        code: "OK",
        decision: "allow",
        reason: d.reason,
        args: `user=${name}`,
      });
      return { status: 200, json: { user: name }, cookies: [] };
    }
    if (action === "disable" || action === "end-sessions") {
      if (action === "disable" && !(await o.users.disable(name)))
        return fail("PANEL_USER_NOT_FOUND");
      const ended = await o.sessions.endAllOf(name, `ended by ${principal.id}`);
      await audit({
        ...base,
        method: action === "disable" ? "Users.Disable" : "Users.EndSessions",
        code: "OK",
        decision: "allow",
        reason: d.reason,
        args: `user=${name} sessions=${ended}`,
      });
      return { status: 200, json: { user: name, sessionsEnded: ended }, cookies: [] };
    }
    return fail("INVALID_ARGUMENT", "action: one of set-password, disable, end-sessions");
  }

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
