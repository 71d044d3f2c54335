// A view stream opened with a JWT ends at `exp` plus the issuer's
// clockSkewSeconds, as verify() judges it. A reload that lowers the skew
// verifies the token again; the stream's end moves with it, so it does not
// go on (up to the old skew, 300 s at most) past the moment the daemon
// refuses the same token for every new call. Only the verifier in force
// decides: the late answer of one a later reload replaced moves nothing.
// Both found by adversarial reviews.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { exportSPKI, generateKeyPair, SignJWT } from "jose";
import type { CallResult, Invocation, RpcError } from "../src/core/index.js";
import {
  createAuthenticationStage,
  createJwtVerifier,
  createLockout,
  type JwtIssuer,
  type JwtVerifier,
} from "../src/security/index.js";
import { changes, nextOutcome, nextWithin, noKeys, streamCall } from "./helpers/stage-call.js";

const systemClock = { now: () => Date.now() };
const IDP = "https://idp.example";

/** A handler stream that yields once, then waits for its call's end. */
const idleHandler = async (inv: Invocation): Promise<CallResult> => ({
  kind: "stream",
  responses: (async function* () {
    yield 1;
    await new Promise<void>((resolve) =>
      inv.ctx.signal.addEventListener("abort", () => resolve(), { once: true }),
    );
  })(),
});

const issuer = (pem: string, clockSkewSeconds: number): JwtIssuer => ({
  issuer: IDP,
  audience: "debvisor-rpc",
  algorithms: ["ES256"],
  publicKeyPems: [pem],
  rolesClaim: "roles",
  clockSkewSeconds,
});

/** A verifier whose answers come `ms` late (a JWKS fetch, a slow key import). */
const slow = (v: JwtVerifier, ms: number): JwtVerifier => ({
  verify: (t, at) => new Promise((r) => setTimeout(r, ms)).then(() => v.verify(t, at)),
});

/**
 * A view stream opened with a token that expires in 4-5 s (time for a loaded
 * machine to open the stream and look before exp), under an
 * issuer tolerating 300 s of skew; `reload` puts another verifier in force
 * and tells the stage; `afterExp` waits past exp and answers how a new call
 * with the token fares.
 */
async function openStream() {
  const kp = await generateKeyPair("ES256", { extractable: true });
  const pem = await exportSPKI(kp.publicKey);
  const exp = Math.ceil(Date.now() / 1000) + 4;
  const token = await new SignJWT({ roles: ["viewer"] })
    .setProtectedHeader({ alg: "ES256" })
    .setIssuer(IDP)
    .setSubject("carol")
    .setAudience("debvisor-rpc")
    .setExpirationTime(exp)
    .sign(kp.privateKey);
  let verifier: JwtVerifier = createJwtVerifier([issuer(pem, 300)], systemClock);
  const reloads = changes();
  const stage = createAuthenticationStage({
    apiKeys: noKeys,
    jwt: () => verifier,
    lockout: createLockout({ clock: systemClock, maxFailures: 1000 }),
    credentialChanges: reloads.subscribe,
    clock: systemClock,
  });
  const call = (signal: AbortSignal) =>
    streamCall({ headers: { authorization: `Bearer ${token}` } }, signal);
  const stop = new AbortController();
  const opened = await stage(call(stop.signal), idleHandler);
  const it = (opened as { responses: AsyncIterable<unknown> }).responses[Symbol.asyncIterator]();
  assert.equal(await nextWithin(it, 10_000), "message 1");
  return {
    it,
    reload(skewSeconds: number, lateMs = 0) {
      const v = createJwtVerifier([issuer(pem, skewSeconds)], systemClock);
      verifier = lateMs > 0 ? slow(v, lateMs) : v;
      reloads.fire();
    },
    async afterExp() {
      await new Promise((r) => setTimeout(r, Math.max(0, exp * 1000 - Date.now() + 100)));
      return stage(call(new AbortController().signal), idleHandler).then(
        () => "accepted",
        (e: RpcError) => e.reason,
      );
    },
    close() {
      stop.abort();
      void it.return?.();
    },
  };
}

describe("a JWT view stream and reloads that change the issuer's clock skew", () => {
  it("ends the stream when verify() stops taking its token under the skew now in force", async () => {
    const s = await openStream();
    try {
      s.reload(0); // the operator lowers the issuer's skew to 0, before the token's exp
      const outcome = nextOutcome(s.it);
      assert.equal(await outcome(300), "still open", "not yet past exp: the stream goes on");
      assert.equal(await s.afterExp(), "UNAUTHENTICATED", "a new call is refused past exp");
      assert.equal(
        await outcome(10_000),
        "ended UNAUTHENTICATED",
        "the view stream goes on with a token verify() refuses (until exp plus the skew of its start, 300 s)",
      );
    } finally {
      s.close();
    }
  });

  it("ends it at the end the rules in force give, not at the last answer's", async () => {
    const s = await openStream();
    try {
      s.reload(300, 700); // an unrelated change; its verifier answers 700 ms late
      s.reload(0); // right after: the skew lowered to 0
      const outcome = nextOutcome(s.it);
      assert.equal(await outcome(200), "still open", "not yet past exp");
      assert.equal(await s.afterExp(), "UNAUTHENTICATED", "a new call is refused past exp");
      assert.equal(
        await outcome(10_000),
        "ended UNAUTHENTICATED",
        "the stale answer of the first reload re-armed the end at exp + 300 s",
      );
    } finally {
      s.close();
    }
  });
});
