// The panel's password sign-in (POST /auth/login): throttled per address,
// account and device, the password checked, the user looked at again once
// the session exists, and every outcome audited.

import type { LoginThrottle } from "./login-throttle.js";
import { type PanelAuthAudit, recordSessionLimit } from "./panel-auth-audit.js";
import { type AuthRequest, type AuthResponse, fail, str } from "./panel-auth-http.js";
import { COOKIES, setCookie } from "./panel-cookies.js";
import type { SessionCookies } from "./panel-session-cookies.js";
import type { PanelSessions } from "./panel-sessions.js";
import { type PanelUsers, USER_NAME, userPrincipal } from "./panel-users.js";
import { verifyPassword } from "./password-hashing.js";

/** What {@link createPanelLogin} needs. */
export interface PanelLoginDeps {
  readonly users: PanelUsers;
  readonly sessions: PanelSessions;
  readonly throttle: LoginThrottle;
  readonly audit: PanelAuthAudit;
  readonly sessionCookies: SessionCookies;
}

/** Creates the sign-in endpoint; it takes the request and its parsed cookies. */
export function createPanelLogin(
  o: PanelLoginDeps,
): (req: AuthRequest, cookies: Map<string, string>) => Promise<AuthResponse> {
  const { audit, sessionCookies } = o;

  return async function login(
    req: AuthRequest,
    cookies: Map<string, string>,
  ): Promise<AuthResponse> {
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
    await recordSessionLimit(audit, userPrincipal(user), peer, tokens);
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
        ...sessionCookies.issue(tokens),
        setCookie(COOKIES.device, o.throttle.deviceTokenFor(user), 400 * 86_400_000),
      ],
    };
  };
}
