// Open streams against policy churn, reloads and session ends (found by a
// second review of the stream checks): a stream keeps only its caller's part
// of the policy; a token verified again after a reload must still name the
// same identity; a reload or session end while the call is on its way is
// not missed; a drain is not cut by its token's expiry.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { exportSPKI, generateKeyPair, SignJWT } from "jose";
import {
  type CallResult,
  createManualClock,
  type Invocation,
  type RpcError,
  withPrincipal,
} from "../src/core/index.js";
import {
  type AccessPolicy,
  createAccessPolicy,
  createAuthenticationStage,
  createAuthorizationStage,
  createJwtVerifier,
  createLockout,
  type JwtIssuer,
  type JwtVerifier,
} from "../src/security/index.js";
import { changes, nextOutcome, nextWithin, noKeys, streamCall } from "./helpers/stage-call.js";

setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as () => void;

/** A handler stream that yields once, then waits, holding its context as any handler does. */
const idleHandler = async (inv: Invocation): Promise<CallResult> => ({
  kind: "stream",
  responses: (async function* () {
    yield 1;
    await new Promise<void>((resolve) =>
      inv.ctx.signal.addEventListener("abort", () => resolve(), { once: true }),
    );
    // Handlers use their context to the end (its scope, its signal, its log).
    yield inv.ctx.scope?.clusterWide;
  })(),
});

/** Pulls a stream's first message, or how it ended. */
async function first(result: CallResult): Promise<{ it: AsyncIterator<unknown>; got: string }> {
  const it = (result as { responses: AsyncIterable<unknown> }).responses[Symbol.asyncIterator]();
  const got = await it.next().then(
    (r) => `message ${String(r.value)}`,
    (e: unknown) => `ended ${(e as RpcError).reason}`,
  );
  return { it, got };
}

describe("an open stream and the policy it started under", () => {
  it("keeps a few KiB per stream, not the whole policy of its start, as nodes enrol one after another", async () => {
    // Nodes enrol one at a time: each enrolment stores a binding (a new policy), and the
    // node's agent connects right after. Each Connect stream stays open for days.
    const nodes = 300;
    let policy: AccessPolicy = createAccessPolicy({});
    const listeners = new Set<() => void>();
    const stage = createAuthorizationStage(
      () => policy,
      {},
      (l) => {
        listeners.add(l);
        return () => listeners.delete(l);
      },
    );
    const bindings: { principal: string; roles: string[] }[] = [];
    const open: AsyncIterator<unknown>[] = [];
    const stops: AbortController[] = [];
    let firstPolicy: WeakRef<AccessPolicy> | undefined;
    gc();
    const heapBefore = process.memoryUsage().heapUsed;
    for (let i = 0; i < nodes; i++) {
      bindings.push({ principal: `node-${i}`, roles: ["node"] });
      policy = createAccessPolicy({
        bindings: bindings.map((b) => ({ ...b, roles: [...b.roles] })),
      });
      firstPolicy ??= new WeakRef(policy);
      for (const l of [...listeners]) l();
      const stop = new AbortController();
      stops.push(stop);
      const inv = streamCall(
        { name: "Connect", permission: "node:connect", target: "cluster" },
        stop.signal,
      );
      const call = {
        ...inv,
        ctx: withPrincipal(inv.ctx, { id: `node-${i}`, method: "mtls", roles: [] }),
      };
      const { it, got } = await first(await stage(call, idleHandler));
      assert.equal(got, "message 1");
      open.push(it);
    }
    gc();
    const heapAfter = process.memoryUsage().heapUsed;
    const perStream = (heapAfter - heapBefore) / nodes;
    try {
      // Each stream keeps its caller's part of the policy only: a few KiB, whatever the count
      // of bindings. Holding the whole policy of its start took 31 KiB a stream at 300 nodes
      // and grew with their square.
      void firstPolicy;
      assert.ok(
        perStream < 15 * 1024,
        `node-0's stream keeps the policy of its start (and its by-principal index) alive after ${nodes - 1} later policies; ` +
          `${open.length} streams hold ${((heapAfter - heapBefore) / 2 ** 20).toFixed(1)} MiB of heap, ${(perStream / 1024).toFixed(1)} KiB each, growing with the number of bindings`,
      );
    } finally {
      for (const s of stops) s.abort();
      for (const it of open) void it.return?.();
    }
  });
});

/** Whether a stream's next message ends it (and how) within `ms`, or nothing came. */

describe("a JWT stream across a config reload", () => {
  const IDP = "https://idp.example";
  const issuer = (pem: string, more: Partial<JwtIssuer> = {}): JwtIssuer => ({
    issuer: IDP,
    audience: "debvisor-rpc",
    algorithms: ["ES256"],
    publicKeyPems: [pem],
    rolesClaim: "roles",
    clockSkewSeconds: 0,
    ...more,
  });

  it("ends a stream whose token, verified again after the reload, names another identity (the issuer now confined to its tenant claim)", async () => {
    const clock = createManualClock(Date.now());
    const kp = await generateKeyPair("ES256", { extractable: true });
    const pem = await exportSPKI(kp.publicKey);
    // A person of acme's IdP; the token says so, but the issuer was not configured to confine.
    const token = await new SignJWT({ roles: ["viewer"], tenant: "acme" })
      .setProtectedHeader({ alg: "ES256" })
      .setIssuer(IDP)
      .setSubject("alice")
      .setAudience("debvisor-rpc")
      .setExpirationTime(Math.floor(clock.now() / 1000) + 3600)
      .sign(kp.privateKey);
    let verifier: JwtVerifier = createJwtVerifier([issuer(pem)], clock);
    const reloads = changes();
    const stage = createAuthenticationStage({
      apiKeys: noKeys,
      jwt: () => verifier,
      lockout: createLockout({ clock }),
      credentialChanges: reloads.subscribe,
      clock,
    });
    const seen: (string | undefined)[] = [];
    const handler = async (inv: Invocation) => {
      seen.push(inv.ctx.principal?.tenant ?? "(cluster-wide)");
      return idleHandler(inv);
    };
    const stop = new AbortController();
    const call = () => streamCall({ headers: { authorization: `Bearer ${token}` } }, stop.signal);
    const { it, got } = await first(await stage(call(), handler));
    assert.equal(got, "message 1");
    try {
      // The operator confines the issuer's tokens to their tenant claim, and reloads.
      verifier = createJwtVerifier([issuer(pem, { tenantClaim: "tenant" })], clock);
      reloads.fire();
      // A new call with the same token is now acme's viewer only.
      const again = await first(await stage(call(), handler));
      void again.it.return?.();
      assert.deepEqual(seen, ["(cluster-wide)", "acme"]);
      assert.equal(
        await nextWithin(it, 10_000),
        "ended UNAUTHENTICATED",
        "the stream opened as a cluster-wide viewer goes on as one after the reload confined its token to acme",
      );
    } finally {
      stop.abort();
      void it.return?.();
    }
  });

  it("ends a stream whose token, verified again after the reload, carries other roles (the roles claim renamed)", async () => {
    const clock = createManualClock(Date.now());
    const kp = await generateKeyPair("ES256", { extractable: true });
    const pem = await exportSPKI(kp.publicKey);
    const token = await new SignJWT({ roles: ["operator"], groups: ["viewer"] })
      .setProtectedHeader({ alg: "ES256" })
      .setIssuer(IDP)
      .setSubject("bob")
      .setAudience("debvisor-rpc")
      .setExpirationTime(Math.floor(clock.now() / 1000) + 3600)
      .sign(kp.privateKey);
    let verifier: JwtVerifier = createJwtVerifier([issuer(pem)], clock);
    const reloads = changes();
    const stage = createAuthenticationStage({
      apiKeys: noKeys,
      jwt: () => verifier,
      lockout: createLockout({ clock }),
      credentialChanges: reloads.subscribe,
      clock,
    });
    const stop = new AbortController();
    const { it, got } = await first(
      await stage(
        streamCall({ headers: { authorization: `Bearer ${token}` } }, stop.signal),
        idleHandler,
      ),
    );
    assert.equal(got, "message 1");
    try {
      verifier = createJwtVerifier([issuer(pem, { rolesClaim: "groups" })], clock);
      reloads.fire();
      assert.equal(
        await nextWithin(it, 10_000),
        "ended UNAUTHENTICATED",
        "the stream goes on with the roles (operator) its token no longer gives",
      );
    } finally {
      stop.abort();
      void it.return?.();
    }
  });
});

describe("a JWT stream and what happens before its first message is asked for", () => {
  const identity = {
    subject: "user:carol",
    issuer: "debvisor-panel",
    roles: [],
    tenant: undefined,
    principal: "user:carol",
    sessionId: "s1",
  };

  it("ends a panel stream whose session was ended while the call went through the later stages (an audit write, a target lookup)", async () => {
    const clock = createManualClock(Date.now());
    const ends = new Set<(sid: string) => void>();
    const stage = createAuthenticationStage({
      apiKeys: noKeys,
      jwt: () => ({
        verify: async () => ({ identity: { ...identity, expiresAtMs: clock.now() + 300_000 } }),
      }),
      lockout: createLockout({ clock }),
      sessionEnds: (l) => {
        ends.add(l);
        return () => {
          ends.delete(l);
        };
      },
      clock,
    });
    const stop = new AbortController();
    const result = await stage(
      streamCall({ headers: { authorization: "Bearer a.b.c" } }, stop.signal),
      async (inv) => {
        // Sign-out (or an admin's revocation) lands while the call is past authentication.
        for (const l of [...ends]) l("s1");
        return idleHandler(inv);
      },
    );
    const { it, got } = await first(result);
    try {
      assert.equal(
        got,
        "ended UNAUTHENTICATED",
        "the session ended on this very daemon, yet its stream runs until the token's exp",
      );
    } finally {
      stop.abort();
      void it.return?.();
    }
  });

  it("ends a stream whose issuer a reload removed while its token was being verified", async () => {
    const clock = createManualClock(Date.now());
    const reloads = changes();
    let verifier: JwtVerifier | undefined;
    let release: () => void = () => {};
    const pending = new Promise<void>((r) => {
      release = r;
    });
    verifier = {
      verify: async () => {
        await pending;
        return {
          identity: { ...identity, sessionId: undefined, expiresAtMs: clock.now() + 3_600_000 },
        };
      },
    };
    const stage = createAuthenticationStage({
      apiKeys: noKeys,
      jwt: () => verifier,
      lockout: createLockout({ clock }),
      credentialChanges: reloads.subscribe,
      clock,
    });
    const stop = new AbortController();
    const opening = stage(
      streamCall({ headers: { authorization: "Bearer a.b.c" } }, stop.signal),
      idleHandler,
    );
    // The reload lands while verify() runs: the issuer is gone, the change told.
    verifier = undefined;
    reloads.fire();
    release();
    const { it, got } = await first(await opening);
    try {
      const after = got === "message 1" ? await nextWithin(it, 10_000) : got;
      assert.equal(
        after,
        "ended UNAUTHENTICATED",
        "a token of an issuer removed by the reload keeps its stream until its exp",
      );
    } finally {
      stop.abort();
      void it.return?.();
    }
  });
});

describe("panel streams and a policy change that is none of theirs", () => {});

describe("a panel DrainNode and its 5-minute access token", () => {
  it("does not cut a drain halfway when the access token that started it reaches exp while its session lives", async () => {
    const ends = new Set<(sid: string) => void>();
    const stage = createAuthenticationStage({
      apiKeys: noKeys,
      // The panel's access token: ~5 min in production; 300 ms here.
      jwt: () => ({
        verify: async () => ({
          identity: {
            subject: "user:ops",
            issuer: "debvisor-panel",
            roles: [],
            tenant: undefined,
            principal: "user:ops",
            sessionId: "s-ops",
            expiresAtMs: Date.now() + 300,
          },
        }),
      }),
      lockout: createLockout({ clock: createManualClock(Date.now()) }),
      sessionEnds: (l) => {
        ends.add(l);
        return () => {
          ends.delete(l);
        };
      },
    });
    let cut = false;
    // A drain of 12 VMs, one progress message per migration (~minutes each in production).
    const drain = async (): Promise<CallResult> => ({
      kind: "stream",
      responses: (async function* () {
        try {
          for (let i = 1; i <= 12; i++) {
            await new Promise((r) => setTimeout(r, 80));
            yield `moved ${i}`;
          }
        } finally {
          cut = true;
        }
      })(),
    });
    const stop = new AbortController();
    const result = await stage(
      {
        ...streamCall(
          {
            name: "DrainNode",
            permission: "node:drain",
            target: "cluster",
            headers: { authorization: "Bearer a.b.c" },
          },
          stop.signal,
        ),
      },
      drain,
    );
    const got: string[] = [];
    let ended = "completed";
    try {
      for await (const m of (result as { responses: AsyncIterable<unknown> }).responses)
        got.push(String(m));
    } catch (e) {
      ended = `ended ${(e as RpcError).code} after ${got.length} of 12`;
    } finally {
      stop.abort();
    }
    await new Promise((r) => setTimeout(r, 200));
    if (ended !== "completed") ended += cut ? ", the drain's generator closed" : "";
    // The panel then refreshes and reopens DrainNode without a word: a second drain, whose
    // starts of the VMs still migrating fail MIGRATION_IN_PROGRESS and count as failed.
    assert.equal(ended, "completed", "the drain was cut at the access token's exp");
  });
});

describe("a client certificate past its notAfter", () => {
  const stage = createAuthenticationStage({
    apiKeys: noKeys,
    jwt: () => undefined,
    lockout: createLockout({ clock: createManualClock(Date.now()) }),
    revocations: { isRevoked: () => false, onChange: () => () => {} },
  });
  /** A call of `name` presenting a verified certificate valid until `notAfterMs`. */
  const withCert = (name: string, notAfterMs: number, signal?: AbortSignal): Invocation => {
    const inv = streamCall({ name }, signal);
    const certificate = {
      commonName: "ops",
      subject: "CN=ops",
      issuer: "CN=ca",
      serialNumber: "0A",
      fingerprint256: "00",
      notAfterMs,
    };
    return { ...inv, ctx: { ...inv.ctx, peer: { ...inv.ctx.peer, certificate } } };
  };

  it("is refused on a connection that outlived it", async () => {
    await assert.rejects(
      stage(withCert("ListVms", Date.now() - 1000), idleHandler),
      (e: RpcError) => e.reason === "UNAUTHENTICATED",
    );
  });

  it("ends a stream that shows what the caller may see when it is reached, and leaves one doing work", async () => {
    const stop = new AbortController();
    try {
      // Both certificates run out at one time, 2 s out: time for a loaded machine to open both.
      const notAfterMs = Date.now() + 2000;
      const watch = await first(
        await stage(withCert("WatchVms", notAfterMs, stop.signal), idleHandler),
      );
      const work = await first(
        await stage(withCert("DrainNode", notAfterMs, stop.signal), idleHandler),
      );
      assert.deepEqual([watch.got, work.got], ["message 1", "message 1"]);
      const watchNext = nextOutcome(watch.it);
      const workNext = nextOutcome(work.it);
      // The watch ends at notAfter (however late a loaded machine gets there)...
      assert.equal(await watchNext(notAfterMs - Date.now() + 10_000), "ended UNAUTHENTICATED");
      // ...and the work stream, judged by the same expiry, is still open well after it.
      assert.equal(await workNext(500), "still open");
    } finally {
      stop.abort();
    }
  });
});
