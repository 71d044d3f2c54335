// A drain started from the panel, its access token and its session (found by
// a third review of the stream checks): a reload does not cut it for a token
// past exp while the session lives, and a session ended on another daemon
// ends it. Two session keepers over one store stand for two daemons. Also:
// the authorization stage on policySlice decides as on the whole policy.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import {
  type CallResult,
  type Invocation,
  type RpcError,
  silentLogger,
  systemClock,
} from "../src/core/index.js";
import { createPanelSessions, type PanelSessions } from "../src/panel/index.js";
import { createAuthenticationStage, createLockout } from "../src/security/index.js";
import { createSqliteStore, type KvStore } from "../src/store/index.js";
import { changes, nextWithin, noKeys, streamCall } from "./helpers/stage-call.js";

/** A streaming call as an adapter builds it, with the panel's token. */
const panelCall = (name: string, token: string, signal: AbortSignal): Invocation =>
  streamCall(
    {
      name,
      permission: name === "DrainNode" ? "node:drain" : "vm:list",
      target: "cluster",
      headers: { authorization: `Bearer ${token}` },
    },
    signal,
  );

/** A long drain (or a watch): one message, then it runs until aborted. */
const longStream = async (inv: Invocation): Promise<CallResult> => ({
  kind: "stream",
  responses: (async function* () {
    yield "moved 1";
    await new Promise<void>((resolve) =>
      inv.ctx.signal.addEventListener("abort", () => resolve(), { once: true }),
    );
  })(),
});

/** How a stream's next message turns out, read at any time ("still open" until it settles). */
function outcome(it: AsyncIterator<unknown>): { now: string } {
  const o = { now: "still open" };
  it.next().then(
    (r) => {
      o.now = r.done ? "completed" : `message ${String(r.value)}`;
    },
    (e: unknown) => {
      o.now = `ended ${(e as RpcError).reason}`;
    },
  );
  return o;
}

// exp is in whole seconds: 2 s gives a token that lives 1-2 s.
const ACCESS_TTL_MS = 2000;

describe("a panel drain, its access token and its session", () => {
  let dir: string;
  let store: KvStore;
  // Two daemons of one cluster: one store, each its own panel session keeper (as security-setup makes).
  let daemonA: PanelSessions;
  let daemonB: PanelSessions;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "dv-panel-drain-"));
    store = createSqliteStore({
      path: join(dir, "state.db"),
      logger: silentLogger,
      clock: systemClock,
    });
    const o = { store, clock: systemClock, accessTtlMs: ACCESS_TTL_MS, sessionTtlMs: 3_600_000 };
    daemonA = await createPanelSessions(o);
    daemonB = await createPanelSessions(o);
  });
  after(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** Daemon B's authentication stage, wired as services-setup wires it. */
  const stageOfB = (reloads = changes()) =>
    createAuthenticationStage({
      apiKeys: noKeys,
      jwt: () => daemonB.verifier,
      lockout: createLockout({ clock: systemClock }),
      sessionEnds: daemonB.onEnd,
      credentialChanges: reloads.subscribe,
      clock: systemClock,
      sessionRecheckMs: 500,
    });

  it("a config reload does not cut a drain whose access token is past exp while its session lives", async () => {
    const reloads = changes();
    const stage = stageOfB(reloads);
    const t = await daemonB.start("ops", "10.0.0.1");
    const stop = new AbortController();
    const result = await stage(panelCall("DrainNode", t.accessToken, stop.signal), longStream);
    const it = (result as { responses: AsyncIterable<unknown> }).responses[Symbol.asyncIterator]();
    try {
      assert.equal(await nextWithin(it, 10_000), "message moved 1");
      const end = outcome(it);
      // The drain runs past its 5-minute access token (as 090aa26 means it to); the session lives.
      await new Promise((r) => setTimeout(r, ACCESS_TTL_MS + 200));
      assert.equal(await daemonB.isLive(t.sessionId), true);
      assert.equal(end.now, "still open", "expiry alone does not cut it");
      // An operator reloads the config for an unrelated setting (same issuers, same everything).
      reloads.fire();
      await new Promise((r) => setTimeout(r, 500));
      assert.equal(
        end.now,
        "still open",
        "any config reload ends every panel drain older than the access token's 5 minutes " +
          "(verifyAgain runs verify() now, which refuses the expired token), and the panel starts a second drain",
      );
    } finally {
      stop.abort();
      void it.return?.();
    }
  });

  it("a drain ends when its panel session is ended on another daemon (docs: elsewhere at the access token's exp)", async () => {
    const stage = stageOfB();
    // Signed in through daemon B (its tokens verify on B only: each keeper signs with its own key).
    const t = await daemonB.start("mallory", "10.0.0.2");
    const stop = new AbortController();
    const drain = await stage(panelCall("DrainNode", t.accessToken, stop.signal), longStream);
    const watch = await stage(panelCall("WatchVms", t.accessToken, stop.signal), longStream);
    const dIt = (drain as { responses: AsyncIterable<unknown> }).responses[Symbol.asyncIterator]();
    const wIt = (watch as { responses: AsyncIterable<unknown> }).responses[Symbol.asyncIterator]();
    try {
      assert.equal(await nextWithin(dIt, 10_000), "message moved 1");
      assert.equal(await nextWithin(wIt, 10_000), "message moved 1");
      // An admin revokes the session through daemon A (or A sees its refresh token reused).
      assert.equal(await daemonA.end(t.sessionId, "revoked by an admin"), true);
      assert.equal(await daemonB.isLive(t.sessionId), false, "the store says it ended");
      // Well past the access token's exp (at most ACCESS_TTL_MS away; the rest is slack for a
      // loaded machine). The drain has no exp: only its session recheck (every 500 ms) ends it,
      // so without that recheck it stays open however long this waits.
      const watchEnd = await nextWithin(wIt, ACCESS_TTL_MS + 10_000);
      const drainEnd = await nextWithin(dIt, 10_000);
      assert.equal(watchEnd, "ended UNAUTHENTICATED", "control: the watch ends at its token's exp");
      assert.equal(
        drainEnd,
        "ended UNAUTHENTICATED",
        "the drain of a session revoked on another daemon runs on forever: expiry no longer ends a work stream, " +
          "and the re-verification that would see the ended session now runs on config reloads only",
      );
    } finally {
      stop.abort();
      void dIt.return?.();
      void wIt.return?.();
    }
  });
});

describe("the authorization stage on policySlice decides as on the whole policy", () => {
  it("for principals with token roles, unknown roles, tenant bindings, case-different bindings and a node's self-only role", async () => {
    const { createAccessPolicy, createAuthorizationStage, decide } = await import(
      "../src/security/index.js"
    );
    const policy = createAccessPolicy({
      roles: [{ name: "vm-reader", grants: ["vm:get", "vm:list"] }],
      bindings: [
        { principal: "alice", roles: ["operator"], tenant: "acme" },
        { principal: "alice", roles: ["no-such-role", "vm-reader"] },
        { principal: "Bob", roles: ["operator"] },
        { principal: "node-1", roles: ["node"] },
        { principal: "NODE-2", roles: ["node"] },
        { principal: "carol", roles: ["viewer"], tenant: "globex" },
      ],
    });
    const stage = createAuthorizationStage(() => policy);
    const principals = [
      { id: "alice", method: "jwt", roles: [] },
      { id: "alice", method: "apikey", roles: ["monitor"], tenant: "acme" },
      { id: "bob", method: "mtls", roles: [] },
      { id: "jwt:https://idp:dave", method: "jwt", roles: ["viewer", "ghost"] },
      { id: "node-1", method: "mtls", roles: [] },
      { id: "node-2", method: "mtls", roles: [] },
      { id: "carol", method: "jwt", roles: [], tenant: "globex" },
    ];
    const permissions = [
      "vm:list",
      "vm:delete",
      "node:connect",
      "node:drain",
      "auth:apikey:create",
    ];
    const resources = [{}, { nodeId: "node-1" }, { nodeId: "NODE-2" }];
    const differ: string[] = [];
    let allowed = 0;
    for (const principal of principals)
      for (const permission of permissions)
        for (const resource of resources) {
          const inv = {
            ctx: {
              requestId: "r",
              method: {
                access: "authenticated",
                kind: "unary",
                name: "X",
                permission,
                target: { kind: "any" },
                resource: () => resource,
              },
              principal,
              peer: { address: "192.0.2.1:1" },
              headers: { get: () => undefined },
              signal: new AbortController().signal,
              startedAt: Date.now(),
              log: silentLogger,
              notes: {},
            },
            request: {},
          } as unknown as Invocation;
          const staged = await stage(
            inv,
            async () => ({ kind: "unary", response: {} }) as CallResult,
          ).then(
            () => true,
            () => false,
          );
          const whole = decide(policy, principal as never, permission, resource).allowed;
          if (staged) allowed++;
          if (staged !== whole)
            differ.push(
              `${principal.id}/${principal.method} ${permission} ${JSON.stringify(resource)}: ${staged} vs ${whole}`,
            );
        }
    assert.deepEqual(differ, []);
    assert.ok(allowed > 10 && allowed < 105, `not vacuous: ${allowed} of 105 allowed`);
  });
});
