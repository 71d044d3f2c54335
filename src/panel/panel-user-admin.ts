// The panel's user administration: listing users, setting a password,
// disabling a user and ending a user's sessions, for cluster-wide admins
// only, each outcome audited.

import type { Principal } from "../core/index.js";
import { type AccessPolicy, decide } from "../security/index.js";
import { byWhom, type PanelAuthAudit } from "./panel-auth-audit.js";
import { type AuthRequest, type AuthResponse, fail, str } from "./panel-auth-http.js";
import type { PanelSessions } from "./panel-sessions.js";
import { checkCredentials, type PanelUsers, USER_NAME, userPrincipal } from "./panel-users.js";

/** Permission an admin needs to manage panel users and end their sessions (admin holds auth:*). */
export const MANAGE_USERS = "auth:user:manage";

/** What {@link createPanelUserAdmin} needs. */
export interface PanelUserAdminDeps {
  readonly users: PanelUsers;
  readonly sessions: PanelSessions;
  readonly policy: () => AccessPolicy;
  readonly audit: PanelAuthAudit;
}

/** Answers a GET or POST of /auth/users by `principal`. */
export type PanelUserAdmin = (req: AuthRequest, principal: Principal) => Promise<AuthResponse>;

/** Creates the /auth/users endpoint. */
export function createPanelUserAdmin(o: PanelUserAdminDeps): PanelUserAdmin {
  const { audit } = o;
  return async function admin(req, principal) {
    const d = decide(o.policy(), principal, MANAGE_USERS);
    const base = {
      ...byWhom(req, principal),
      permission: MANAGE_USERS,
      tenant: d.tenant ?? "",
      reason: d.reason,
    };
    // Tenant-bound admins manage nobody: panel users are cluster-wide.
    if (!d.allowed || d.tenant !== undefined) {
      await audit.record({
        ...base,
        method: `Users.${req.method}`,
        code: "PERMISSION_DENIED",
        decision: "deny",
      });
      return fail("PERMISSION_DENIED");
    }
    if (req.method === "GET") {
      const users = (await o.users.list()).map((u) => ({
        name: u.name,
        disabled: u.disabled,
        principal: userPrincipal(u.name),
      }));
      await audit.record({
        ...base,
        method: "Users.List",
        code: "OK",
        decision: "allow",
        args: `users=${users.length}`,
      });
      return { status: 200, json: { users }, cookies: [] };
    }
    const body = (req.body ?? {}) as Record<string, unknown>;
    // Any length reaches checkCredentials (the body is at most 8 KiB), so the answer names the limit.
    const name = str(body.user, 8192) ?? "";
    const action = str(body.action, 16);
    // The name as the trail keeps it: bounded, and only when it is one a user can have.
    const user = USER_NAME.test(name) ? name : "(invalid)";
    /** Records an allowed admin's request that changed nothing, and answers it. */
    const refused = async (method: string, r: AuthResponse) => {
      const { reason } = r.json as { reason: string };
      await audit.record({
        ...base,
        method,
        code: reason === "PANEL_USER_NOT_FOUND" ? "NOT_FOUND" : "INVALID_ARGUMENT",
        decision: "allow",
        error: reason,
        args: `user=${user}`,
      });
      return r;
    };
    if (action === "set-password") {
      const password = str(body.password, 8192) ?? "";
      const problem = checkCredentials(name, password);
      if (problem !== undefined)
        return refused("Users.SetPassword", fail("INVALID_ARGUMENT", problem));
      await o.users.setPassword(name, password, principal.id);
      // A new password ends the user's sessions: an admin sets one when the old one is
      // forgotten or may have leaked, and whoever signed in with a leaked one must not
      // keep refreshing a session for up to its 12 hours.
      const ended = await o.sessions.endAllOf(name, `password set by ${principal.id}`);
      await audit.record({
        ...base,
        method: "Users.SetPassword",
        code: "OK",
        decision: "allow",
        args: `user=${name} sessions=${ended}`,
      });
      return { status: 200, json: { user: name, sessionsEnded: ended }, cookies: [] };
    }
    if (action === "disable" || action === "end-sessions") {
      const method = action === "disable" ? "Users.Disable" : "Users.EndSessions";
      if (action === "disable" && !(await o.users.disable(name)))
        return refused(method, fail("PANEL_USER_NOT_FOUND"));
      const ended = await o.sessions.endAllOf(name, `ended by ${principal.id}`);
      await audit.record({
        ...base,
        method,
        code: "OK",
        decision: "allow",
        args: `user=${name} sessions=${ended}`,
      });
      return { status: 200, json: { user: name, sessionsEnded: ended }, cookies: [] };
    }
    return refused(
      "Users.Unknown",
      fail("INVALID_ARGUMENT", "action: one of set-password, disable, end-sessions"),
    );
  };
}
