// A panel drain's session revoked on another daemon is found by the
// periodic recheck. Re-verifications are judged by the verifier that made
// them: every refusal by the verifier in force ends the stream, however many
// rechecks are under way (one slower than the recheck interval, a store
// read that hangs). Found by an adversarial review of 489fdfb, which counted
// verifications instead of verifiers and so dropped such refusals.
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
import {
  createAuthenticationStage,
  createLockout,
  type JwtVerifier,
} from "../src/security/index.js";
import { createSqliteStore, type KvStore } from "../src/store/index.js";
import { eventually } from "./helpers/eventually.js";
import { changes, nextWithin, noKeys, streamCall } from "./helpers/stage-call.js";

const drainCall = (token: string, signal: AbortSignal): Invocation =>
  streamCall(
    {
      name: "DrainNode",
      permission: "node:drain",
      target: "cluster",
      headers: { authorization: `Bearer ${token}` },
    },
    signal,
  );

const longStream = async (inv: Invocation): Promise<CallResult> => ({
  kind: "stream",
  responses: (async function* () {
    yield "moved 1";
    await new Promise<void>((resolve) =>
      inv.ctx.signal.addEventListener("abort", () => resolve(), { once: true }),
    );
  })(),
});

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

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("a refusal by the verifier in force ends a work stream while other rechecks are under way", () => {
  let dir: string;
  let store: KvStore;
  let daemonA: PanelSessions;
  let daemonB: PanelSessions;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "dv-jwt-recheck-"));
    store = createSqliteStore({
      path: join(dir, "s.db"),
      logger: silentLogger,
      clock: systemClock,
    });
    const o = { store, clock: systemClock, accessTtlMs: 300_000, sessionTtlMs: 3_600_000 };
    daemonA = await createPanelSessions(o);
    daemonB = await createPanelSessions(o);
  });
  after(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("a revoked session's drain never ends when each session lookup takes longer than the recheck interval", async () => {
    let calls = 0;
    // The first verify (the call's own authentication) is quick; the rechecks' store reads
    // take 450 ms, longer than the 300 ms recheck interval (30 s vs. a slow store in production).
    const slowStore: JwtVerifier = {
      verify: async (t, at) => {
        if (++calls > 1) await sleep(450);
        return daemonB.verifier.verify(t, at);
      },
    };
    const stage = createAuthenticationStage({
      apiKeys: noKeys,
      jwt: () => slowStore,
      lockout: createLockout({ clock: systemClock }),
      sessionEnds: daemonB.onEnd,
      credentialChanges: changes().subscribe,
      clock: systemClock,
      sessionRecheckMs: 300,
    });
    const t = await daemonB.start("mallory", "10.0.0.2");
    const stop = new AbortController();
    const res = await stage(drainCall(t.accessToken, stop.signal), longStream);
    const it = (res as { responses: AsyncIterable<unknown> }).responses[Symbol.asyncIterator]();
    try {
      assert.equal(await nextWithin(it, 10_000), "message moved 1");
      const end = outcome(it);
      // Revoked through daemon A: daemon B is not told; only its rechecks can see it.
      assert.equal(await daemonA.end(t.sessionId, "revoked by an admin"), true);
      // The first recheck's answer (~0.75 s) should end it; a drain that runs on stays open
      // through dozens of rechecks, each answering "panel session ended".
      await eventually(
        () =>
          assert.equal(
            end.now,
            "ended UNAUTHENTICATED",
            `every "panel session ended" answer was superseded by the next recheck before it landed (${calls} verifications, none counted): the revoked session's drain runs on`,
          ),
        { timeoutMs: 15_000 },
      );
    } finally {
      stop.abort();
      void it.return?.();
    }
  });

  it("a reload's refusal is dropped because a recheck started after it and has not answered", async () => {
    let hang = false;
    const verifier: JwtVerifier = {
      verify: async (t, at) => {
        // The recheck's session read hangs (a partitioned store).
        if (hang) return new Promise(() => {});
        return daemonB.verifier.verify(t, at);
      },
    };
    const refusing: JwtVerifier = {
      // The reload's verifier no longer takes the token; it answers 250 ms later.
      verify: () => sleep(250).then(() => ({ failure: "untrusted issuer" })),
    };
    let inForce = verifier;
    const reloads = changes();
    const stage = createAuthenticationStage({
      apiKeys: noKeys,
      jwt: () => inForce,
      lockout: createLockout({ clock: systemClock }),
      sessionEnds: daemonB.onEnd,
      credentialChanges: reloads.subscribe,
      clock: systemClock,
      sessionRecheckMs: 400,
    });
    const t = await daemonB.start("mallory", "10.0.0.3");
    const stop = new AbortController();
    const res = await stage(drainCall(t.accessToken, stop.signal), longStream);
    const it = (res as { responses: AsyncIterable<unknown> }).responses[Symbol.asyncIterator]();
    try {
      assert.equal(await nextWithin(it, 10_000), "message moved 1");
      const end = outcome(it);
      // Just before the next recheck tick, a reload puts in force a verifier that refuses.
      await sleep(300);
      inForce = {
        verify: (tk, at) => {
          // The recheck tick right after the reload asks the same verifier in force; it hangs.
          if (hang) return verifier.verify(tk, at);
          hang = true;
          return refusing.verify(tk, at);
        },
      };
      reloads.fire();
      // The refusal lands 250 ms after the reload; a dropped one never ends the stream.
      await eventually(
        () =>
          assert.equal(
            end.now,
            "ended UNAUTHENTICATED",
            "the verifier in force refused the token, but its answer was dropped because a recheck started meanwhile (and hangs): the stream runs on",
          ),
        { timeoutMs: 15_000 },
      );
    } finally {
      stop.abort();
      void it.return?.();
    }
  });
});
