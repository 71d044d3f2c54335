// A view stream opened with a JWT ends at `exp` plus the issuer's
// clockSkewSeconds, as verify() judges it. A reload that lowers the skew
// verifies the token again; the stream's end moves with it, so it does not
// go on (up to the old skew, 300 s at most) past the moment the daemon
// refuses the same token for every new call. Found by an adversarial review.
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

describe("a JWT view stream and a reload that lowers the issuer's clock skew", () => {
  const IDP = "https://idp.example";
  const issuer = (pem: string, clockSkewSeconds: number): JwtIssuer => ({
    issuer: IDP,
    audience: "debvisor-rpc",
    algorithms: ["ES256"],
    publicKeyPems: [pem],
    rolesClaim: "roles",
    clockSkewSeconds,
  });

  it("ends the stream when verify() stops taking its token under the skew now in force", async () => {
    const kp = await generateKeyPair("ES256", { extractable: true });
    const pem = await exportSPKI(kp.publicKey);
    const exp = Math.ceil(Date.now() / 1000) + 2;
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
    assert.equal(await nextWithin(it, 1000), "message 1");
    try {
      // The operator lowers the issuer's skew to 0 and reloads, before the token's exp.
      verifier = createJwtVerifier([issuer(pem, 0)], systemClock);
      reloads.fire();
      const outcome = nextOutcome(it);
      assert.equal(await outcome(300), "still open", "not yet past exp: the stream goes on");
      // Past exp: verify() refuses the token now, for every new call.
      await new Promise((r) => setTimeout(r, exp * 1000 - Date.now() + 100));
      const fresh = await stage(call(new AbortController().signal), idleHandler).then(
        () => "accepted",
        (e: RpcError) => e.reason,
      );
      assert.equal(fresh, "UNAUTHENTICATED", "a new call with the token is refused past exp");
      assert.equal(
        await outcome(1500),
        "ended UNAUTHENTICATED",
        "the view stream goes on with a token verify() refuses (until exp plus the skew of its start, 300 s)",
      );
    } finally {
      stop.abort();
      void it.return?.();
    }
  });
});
