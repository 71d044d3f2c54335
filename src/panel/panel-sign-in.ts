// The panel's password sessions: signing in (throttled), refreshing the
// access token with the rotating refresh token, and signing out, each
// outcome audited.

import type { Clock, Principal } from "../core/index.js";
import type { Take } from "../security/index.js";
import type { LoginThrottle } from "./login-throttle.js";
import type { PanelAuthAudit } from "./panel-auth-audit.js";
import { type AuthRequest, type AuthResponse, fail, str } from "./panel-auth-http.js";
import { COOKIES, setCookie } from "./panel-cookies.js";
import type { PanelSessions } from "./panel-sessions.js";
import { type PanelUsers, USER_NAME, userPrincipal } from "./panel-users.js";
import { verifyPassword } from "./password-hashing.js";

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

/** Creates the sign-in endpoints. */
export function createPanelSignIn(o: PanelSignInDeps): PanelSignIn {
  const { audit } = o;
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
    // The name as the trail keeps it: only one a user can have, so a record cannot
    // show a look-alike (`аdmin`, a right-to-left override reversing `nimda`).
    const named = userPrincipal(USER_NAME.test(user) ? user : "(invalid)");
    const verdict = o.throttle.check(peer, user, cookies.get(COOKIES.device));
    if (!verdict.allowed) {
      // Counted: past the throttle anyone can repeat it at will.
      audit.count({
        method: "Login",
        // Past its address's budget the name is anyone's text, a bucket per name: none.
        principal: verdict.scope === "account" ? named : "",
        peer,
        code: "RESOURCE_EXHAUSTED",
        decision: "deny",
        reason: "RATE_LIMITED",
        error: `too many attempts per ${verdict.scope}`,
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
    // Its own record: the throttle bounds how often anyone gets here.
    if (!ok || record === undefined || record.disabled) {
      await audit.record({
        method: "Login",
        principal: named,
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
    // An admin who disabled the user or set a new password while this sign-in checked the
    // old one ended the user's sessions before this one existed: look again now that it does.
    const now = await o.users.get(user);
    if (now === undefined || now.disabled || now.passwordHash !== record.passwordHash) {
      await o.sessions.end(tokens.sessionId, "user changed during sign-in");
      await audit.record({
        method: "Login",
        principal: named,
        peer,
        code: "UNAUTHENTICATED",
        decision: "unauthenticated",
        reason: "user changed during sign-in",
      });
      return fail("LOGIN_FAILED");
    }
    await audit.record({
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
      args: `session=${r.tokens.sessionId}`,
    });
    return { status: 200, json: { user: r.user }, cookies: sessionCookies(r.tokens) };
  }

  async function logout(req: AuthRequest, cookies: Map<string, string>): Promise<AuthResponse> {
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
  }

  return { login, refresh, logout };
}
