import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { createManualClock, type ManualClock, silentLogger } from "../core/index.js";
import { createSqliteStore, type KvStore } from "../store/index.js";
import { createLoginThrottle } from "./login-throttle.js";
import { createPanelAuthAudit } from "./panel-auth-audit.js";
import type { AuthRequest } from "./panel-auth-http.js";
import { createPanelSessions, type PanelSessions } from "./panel-sessions.js";
import { createPanelSignIn } from "./panel-sign-in.js";
import { createPanelUsers, type PanelUsers } from "./panel-users.js";

const PASSWORD = "a-long-enough-password";

describe("panel sign-in against an admin's change of the user", () => {
  let dir: string;
  let store: KvStore;
  let clock: ManualClock;
  let users: PanelUsers;
  let sessions: PanelSessions;
  const request = (user: string): AuthRequest => ({
    method: "POST",
    path: "login",
    headers: { get: () => undefined },
    origins: [],
    source: "10.0.0.1",
    body: { user, password: PASSWORD },
  });

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "dv-sign-in-"));
    clock = createManualClock(Date.now());
    store = createSqliteStore({ path: join(dir, "state.db"), logger: silentLogger, clock });
    users = createPanelUsers(store, clock);
    sessions = await createPanelSessions({ store, clock });
  });
  after(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  // The admin's change lands after the sign-in read the user and before it made the session
  // (while argon2 checks the password, a store round trip, the token's signature): the
  // admin's endAllOf finds no session yet, and the sign-in must not then make one.
  for (const [user, what, change] of [
    ["dana", "disables the user", (name: string) => users.disable(name)],
    [
      "erin",
      "sets a new password",
      (name: string) => users.setPassword(name, "another-long-password", "admin"),
    ],
  ] as const)
    it(`leaves no live session when an admin ${what} during the sign-in`, async () => {
      await users.setPassword(user, PASSWORD, "admin");
      let ended: number | undefined;
      const racing: PanelUsers = {
        ...users,
        async get(name) {
          const before = await users.get(name);
          if (ended === undefined) {
            await change(name);
            ended = await sessions.endAllOf(name, "by admin");
          }
          return before;
        },
      };
      const signIn = createPanelSignIn({
        users: racing,
        sessions,
        throttle: createLoginThrottle({ clock }),
        clock,
        audit: createPanelAuthAudit(undefined),
        rateLimit: undefined,
      });
      const r = await signIn.login(request(user), new Map());
      assert.equal(ended, 0, "the admin found no session yet");
      const live = await sessions.endAllOf(user, "checking");
      assert.equal(live, 0, `a session made with the old credentials outlived the change`);
      assert.equal(r.status, 401);
      assert.deepEqual(r.cookies, []);
    });
});
