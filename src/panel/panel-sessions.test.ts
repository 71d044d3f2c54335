import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { createManualClock, type ManualClock, silentLogger } from "../core/index.js";
import { PanelSessionRecordSchema } from "../gen/debvisor/store/v1/panel_records_pb.js";
import { createSqliteStore, decodeMessage, type KvStore, rangeAll } from "../store/index.js";
import type { SessionTokens } from "./panel-access-tokens.js";
import {
  createPanelSessions,
  MAX_SESSIONS_PER_USER,
  type PanelSessions,
  REFRESH_REUSE_GRACE_MS,
} from "./panel-sessions.js";

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
    let t: SessionTokens = await sessions.start("dave", "10.0.0.2");
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
  it("gives two refreshes at once with one token (two tabs) the same session, not a reuse", async () => {
    const t = await sessions.start("gwen", "10.0.0.5");
    clock.advance(61_000);
    const [a, b] = await Promise.all([
      sessions.refresh(t.refreshToken),
      sessions.refresh(t.refreshToken),
    ]);
    assert.ok("tokens" in a && "tokens" in b, JSON.stringify([a, b]));
    assert.equal(await sessions.isLive(t.sessionId), true, "the session lives on");
    // Exactly one of them rotated: the other brings an access token only, of the same session.
    const rotated = [a, b].filter((r) => r.tokens.refreshToken !== "");
    assert.equal(rotated.length, 1);
    const next = rotated[0]?.tokens;
    assert.ok(next !== undefined);
    for (const r of [a, b]) {
      assert.equal(r.tokens.sessionId, t.sessionId);
      const v = await sessions.verifier.verify(r.tokens.accessToken);
      assert.ok("identity" in v && v.identity.sessionId === t.sessionId);
      // No later than the successor's: the grace gives nothing the rotation did not.
      assert.ok(r.tokens.accessExpiresAtMs <= next.accessExpiresAtMs);
    }
    // Later in the grace, once more: still the same session; the successor still refreshes.
    clock.advance(REFRESH_REUSE_GRACE_MS - 1);
    const late = await sessions.refresh(t.refreshToken);
    assert.ok("tokens" in late && late.tokens.refreshToken === "", JSON.stringify(late));
    const after = await sessions.refresh(next.refreshToken);
    assert.ok("tokens" in after && after.tokens.refreshToken !== "");
  });

  it("still ends the session for a rotated token past the grace", async () => {
    const t = await sessions.start("hank", "10.0.0.6");
    const r = await sessions.refresh(t.refreshToken);
    assert.ok("tokens" in r);
    clock.advance(REFRESH_REUSE_GRACE_MS);
    const stolen = await sessions.refresh(t.refreshToken);
    assert.ok("failure" in stolen && stolen.failure === "reused", JSON.stringify(stolen));
    assert.equal(await sessions.isLive(t.sessionId), false);
    assert.ok("failure" in (await sessions.refresh(r.tokens.refreshToken)));
  });

  it("still ends the session for a rotated token once its successor was rotated too, grace or not", async () => {
    const t = await sessions.start("ivy", "10.0.0.7");
    const r1 = await sessions.refresh(t.refreshToken);
    assert.ok("tokens" in r1);
    const r2 = await sessions.refresh(r1.tokens.refreshToken);
    assert.ok("tokens" in r2);
    const stolen = await sessions.refresh(t.refreshToken);
    assert.ok("failure" in stolen && stolen.failure === "reused", JSON.stringify(stolen));
    assert.equal(await sessions.isLive(t.sessionId), false);
  });

  it("ends a user's oldest sessions past the cap, keeping the newest and at most the cap in the store", async () => {
    const started = [];
    for (let i = 0; i < MAX_SESSIONS_PER_USER + 5; i++) {
      started.push(await sessions.start("jane", "10.0.0.8"));
      clock.advance(1);
    }
    const ended = started.flatMap((t) => t.endedOlder);
    assert.deepEqual(
      ended,
      started.slice(0, 5).map((t) => t.sessionId),
      "one oldest session ended per sign-in past the cap",
    );
    for (const [i, t] of started.entries())
      assert.equal(await sessions.isLive(t.sessionId), i >= 5, `session ${i}`);
    let stored = 0;
    for await (const kv of rangeAll(store, "panel/sessions/"))
      if (decodeMessage(PanelSessionRecordSchema, kv).user === "jane") stored++;
    assert.equal(stored, MAX_SESSIONS_PER_USER);
    assert.equal(await sessions.endAllOf("jane", "done"), MAX_SESSIONS_PER_USER);
  });
  it("drops a user's ended sessions' records before ending a live one", async () => {
    const small = await createPanelSessions({ store, clock, maxSessionsPerUser: 3 });
    const [a, b, c] = [
      await small.start("kate", "10.0.0.9"),
      await small.start("kate", "10.0.0.9"),
      await small.start("kate", "10.0.0.9"),
    ];
    assert.ok(a !== undefined && b !== undefined && c !== undefined);
    assert.equal(await small.end(b.sessionId, "signed out"), true);
    const d = await small.start("kate", "10.0.0.9");
    assert.deepEqual(d.endedOlder, [], "the signed-out session's record made room");
    assert.deepEqual(await Promise.all([a, c, d].map((t) => small.isLive(t.sessionId))), [
      true,
      true,
      true,
    ]);
    assert.deepEqual(await small.refresh(b.refreshToken), { failure: "unknown-session" });
    const e = await small.start("kate", "10.0.0.9");
    assert.equal(e.endedOlder.length, 1, "then the oldest live one");
    assert.equal(await small.isLive(e.endedOlder[0] ?? ""), false);
    assert.equal(await small.endAllOf("kate", "done"), 3);
  });
  it("never has two sign-ins at once end each other past the cap: the newer ones stay", async () => {
    // Each sign-in took the other's brand-new session for an older one and ended it:
    // both browsers got cookies of an ended session, the user was signed out of both.
    const one = await createPanelSessions({ store, clock, maxSessionsPerUser: 1 });
    const pair = await Promise.all([
      one.start("liam", "10.0.0.10"),
      one.start("liam", "10.0.0.10"),
    ]);
    const livePair = await Promise.all(pair.map((t) => one.isLive(t.sessionId)));
    assert.equal(livePair.filter(Boolean).length, 1, JSON.stringify(livePair));
    const [gone] = pair.filter((_, i) => !livePair[i]);
    assert.deepEqual(
      pair.flatMap((t) => t.endedOlder),
      [gone?.sessionId],
      "only the older one ended, by the newer",
    );
    const two = await createPanelSessions({ store, clock, maxSessionsPerUser: 2 });
    const three = await Promise.all([1, 2, 3].map(() => two.start("mia", "10.0.0.11")));
    const liveThree = await Promise.all(three.map((t) => two.isLive(t.sessionId)));
    assert.equal(liveThree.filter(Boolean).length, 2, JSON.stringify(liveThree));
  });
});
