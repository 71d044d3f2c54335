import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { createManualClock, type ManualClock, silentLogger } from "../core/index.js";
import { createSqliteStore, type KvStore } from "../store/index.js";
import { createPanelSessions, type PanelSessions } from "./panel-sessions.js";

describe("createPanelSessions", () => {
  let dir: string;
  let store: KvStore;
  let clock: ManualClock;
  let sessions: PanelSessions;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "dv-sessions-"));
    clock = createManualClock(Date.now());
    store = createSqliteStore({ path: join(dir, "state.db"), logger: silentLogger, clock });
    sessions = await createPanelSessions({
      store,
      clock,
      accessTtlMs: 60_000,
      sessionTtlMs: 600_000,
    });
  });
  after(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("accepts an access token until it expires, then a refresh brings a new one", async () => {
    const t = await sessions.start("carol", "10.0.0.1");
    const ok = await sessions.verifier.verify(t.accessToken);
    assert.ok("identity" in ok && ok.identity.subject === "user:carol");
    clock.advance(61_000);
    const late = await sessions.verifier.verify(t.accessToken);
    assert.ok("failure" in late, "expired access token refused");
    const r = await sessions.refresh(t.refreshToken);
    assert.ok("tokens" in r);
    assert.ok("identity" in (await sessions.verifier.verify(r.tokens.accessToken)));
  });

  it("ends at its absolute lifetime whatever the refreshes, and the sweep forgets it", async () => {
    let t = await sessions.start("dave", "10.0.0.2");
    for (let i = 0; i < 9; i++) {
      clock.advance(59_000);
      const r = await sessions.refresh(t.refreshToken);
      assert.ok("tokens" in r, `refresh ${i}`);
      t = r.tokens;
    }
    clock.advance(100_000);
    assert.deepEqual(await sessions.refresh(t.refreshToken), {
      failure: "expired",
      sessionId: t.sessionId,
      user: "dave",
      principal: "user:dave",
    });
    assert.equal(await sessions.isLive(t.sessionId), false);
    assert.ok((await sessions.sweep()) >= 1);
    assert.deepEqual(await sessions.refresh(t.refreshToken), { failure: "unknown-session" });
  });

  it("refuses a token of one session presented with another's id", async () => {
    const a = await sessions.start("erin", "10.0.0.3");
    const b = await sessions.start("erin", "10.0.0.3");
    const mixed = `${b.sessionId}.${a.refreshToken.split(".")[1]}`;
    const r = await sessions.refresh(mixed);
    assert.ok("failure" in r && r.failure === "unknown-token");
    assert.equal(await sessions.isLive(b.sessionId), true, "a guess does not end the session");
  });

  it("acts as the principal it was started for (an OpenID Connect person), refreshes included", async () => {
    const who = "oidc:https://idp.example#frank";
    const t = await sessions.start(who, "10.0.0.4", who);
    const ok = await sessions.verifier.verify(t.accessToken);
    assert.ok("identity" in ok && ok.identity.subject === who);
    const r = await sessions.refresh(t.refreshToken);
    assert.ok("tokens" in r && r.principal === who);
    const again = await sessions.verifier.verify(r.tokens.accessToken);
    assert.ok("identity" in again && again.identity.subject === who);
    assert.equal(await sessions.endAllOf(who, "admin"), 1);
    assert.equal(await sessions.isLive(t.sessionId), false);
  });
});
