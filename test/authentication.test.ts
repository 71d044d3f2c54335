import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { exportJWK, exportSPKI, generateKeyPair, SignJWT, UnsecuredJWT } from "jose";
import { createManualClock, type ManualClock } from "../src/core/index.js";
import { loadCertificateAuthority } from "../src/pki/index.js";
import { createAccessPolicy, createJwtVerifier } from "../src/security/index.js";
import { eventually } from "./helpers/eventually.js";
import { rawUnary, testChannel } from "./helpers/grpc-client.js";
import { createTestPki, type TestPki } from "./helpers/pki.js";
import { type SecuredServer, startSecuredServer } from "./helpers/secured-server.js";

const LIST_NODES = "/debvisor.v1.NodeService/ListNodes";
const REGISTER = "/debvisor.v1.NodeService/RegisterNode";
const DAY = 86_400_000;

/** Calls ListNodes and returns the gRPC code (0 = OK). */
async function codeOf(
  address: string,
  caPem: string,
  auth: { certPem?: string; keyPem?: string; bearer?: string },
  path = LIST_NODES,
  body: Buffer = Buffer.alloc(0),
): Promise<number> {
  const ch = testChannel(address, { caPem, certPem: auth.certPem, keyPem: auth.keyPem });
  const md = new grpc.Metadata();
  if (auth.bearer !== undefined) md.set("authorization", `Bearer ${auth.bearer}`);
  const { error } = await rawUnary(ch, path, body, md);
  ch.close();
  return error?.code ?? 0;
}

const OK = 0;
const UNAUTH = grpc.status.UNAUTHENTICATED;
const DENIED = grpc.status.PERMISSION_DENIED;

describe("authentication", () => {
  let pki: TestPki;
  let clock: ManualClock;
  let s: SecuredServer;
  let es256: Awaited<ReturnType<typeof generateKeyPair>>;
  let rs256: Awaited<ReturnType<typeof generateKeyPair>>;
  let rsPem: string;
  const call = (
    auth: Parameters<typeof codeOf>[2],
    path?: string,
    body?: Buffer<ArrayBufferLike>,
  ) => codeOf(s.server.address, pki.ca.certPem, auth, path, body);

  before(async () => {
    pki = await createTestPki();
    clock = createManualClock(Date.now());
    es256 = await generateKeyPair("ES256", { extractable: true });
    rs256 = await generateKeyPair("RS256", { extractable: true });
    rsPem = await exportSPKI(rs256.publicKey);
    const jwk = { ...(await exportJWK(es256.publicKey)), kid: "k1", alg: "ES256" };
    const jwt = createJwtVerifier(
      [
        {
          issuer: "debvisor-auth",
          audience: "debvisor-rpc",
          algorithms: ["RS256", "ES256"],
          publicKeyPems: [rsPem],
          jwks: { keys: [jwk] },
          rolesClaim: "roles",
          clockSkewSeconds: 30,
        },
      ],
      clock,
    );
    const policy = createAccessPolicy({
      bindings: [
        { principal: "admin", roles: ["operator"] },
        { principal: "node-07", roles: ["node"] },
      ],
    });
    s = await startSecuredServer({ pki, clock, policy, jwt });
  });
  after(async () => {
    await s.close();
  });

  describe("mTLS", () => {
    const cert = async (opts: {
      cn: string;
      usage: "client" | "server";
      issuedDaysAgo?: number;
      validityDays?: number;
      foreign?: boolean;
    }) => {
      const ca = await loadCertificateAuthority(opts.foreign ? pki.foreignCa : pki.ca);
      const now = new Date(clock.now() - (opts.issuedDaysAgo ?? 0) * DAY);
      return ca.issue({
        commonName: opts.cn,
        usage: opts.usage,
        now,
        validityDays: opts.validityDays ?? 30,
      });
    };
    for (const [name, make, expected] of [
      ["ok-cluster-ca", () => cert({ cn: "admin", usage: "client" }), OK],
      [
        "fail-foreign-ca-same-cn",
        () => cert({ cn: "admin", usage: "client", foreign: true }),
        UNAUTH,
      ],
      [
        "fail-expired",
        () => cert({ cn: "admin", usage: "client", issuedDaysAgo: 10, validityDays: 5 }),
        UNAUTH,
      ],
      ["fail-server-eku-only", () => cert({ cn: "admin", usage: "server" }), UNAUTH],
    ] as const) {
      it(name, async () => {
        const c = await make();
        assert.equal(await call({ certPem: c.certPem, keyPem: c.keyPem }), expected);
      });
    }
    it("fail-revoked (without a restart)", async () => {
      const c = await cert({ cn: "admin", usage: "client" });
      assert.equal(await call({ certPem: c.certPem, keyPem: c.keyPem }), OK);
      const { X509Certificate } = await import("node:crypto");
      await s.revocations.revoke(new X509Certificate(c.certPem).serialNumber, "key compromise");
      await eventually(async () =>
        assert.equal(await call({ certPem: c.certPem, keyPem: c.keyPem }), UNAUTH),
      );
    });
    it("fail-no-certificate-no-token", async () => {
      assert.equal(await call({}), UNAUTH);
    });
  });

  describe("API keys", () => {
    it("accepts a live key and refuses wrong, prefix-only, revoked and expired ones", async () => {
      const live = await s.apiKeys.create({
        principal: "ci",
        roles: ["viewer"],
        createdBy: "test",
      });
      assert.equal(await call({ bearer: live.token }), OK);
      const [, id, secret] = /^dvk_([0-9a-f]{16})_(.+)$/.exec(live.token) as RegExpExecArray;
      const wrong = `dvk_${id}_${(secret as string).startsWith("A") ? "B" : "A"}${(secret as string).slice(1)}`;
      assert.equal(await call({ bearer: wrong }), UNAUTH, "wrong secret");
      assert.equal(await call({ bearer: `dvk_${id}_` }), UNAUTH, "prefix only");
      assert.equal(await call({ bearer: `dvk_${"0".repeat(16)}_${secret}` }), UNAUTH, "unknown id");
      const revoked = await s.apiKeys.create({
        principal: "ci",
        roles: ["viewer"],
        createdBy: "test",
      });
      await s.apiKeys.revoke(revoked.record.id);
      assert.equal(await call({ bearer: revoked.token }), UNAUTH, "revoked");
      const expiring = await s.apiKeys.create({
        principal: "ci",
        roles: ["viewer"],
        ttlMs: 60_000,
        createdBy: "test",
      });
      assert.equal(await call({ bearer: expiring.token }), OK);
      clock.advance(60_001);
      assert.equal(await call({ bearer: expiring.token }), UNAUTH, "expired");
    });

    it("keeps a rotated key working through the grace period, then only the new one", async () => {
      const old = await s.apiKeys.create({ principal: "ci", roles: ["viewer"], createdBy: "test" });
      const fresh = await s.apiKeys.rotate(old.record.id, 3_600_000, "test");
      assert.equal(await call({ bearer: old.token }), OK);
      assert.equal(await call({ bearer: fresh.token }), OK);
      clock.advance(3_600_001);
      assert.equal(await call({ bearer: old.token }), UNAUTH);
      assert.equal(await call({ bearer: fresh.token }), OK);
    });

    it("grants only the key's roles: a viewer key cannot register nodes", async () => {
      const viewer = await s.apiKeys.create({
        principal: "ci",
        roles: ["viewer"],
        createdBy: "test",
      });
      assert.equal(
        await call(
          { bearer: viewer.token },
          REGISTER,
          Buffer.from([0x0a, 0x04, 0x0a, 0x02, 0x6e, 0x31]),
        ),
        DENIED,
      );
    });
  });

  describe("JWT", () => {
    const base = () =>
      new SignJWT({ roles: ["viewer"] })
        .setSubject("alice")
        .setIssuer("debvisor-auth")
        .setAudience("debvisor-rpc")
        .setIssuedAt(Math.floor(clock.now() / 1000));
    const exp = (seconds: number) => Math.floor(clock.now() / 1000) + seconds;
    const cases: [string, () => Promise<string>, number][] = [
      [
        "ok-es256-jwks",
        () =>
          base()
            .setProtectedHeader({ alg: "ES256", kid: "k1" })
            .setExpirationTime(exp(300))
            .sign(es256.privateKey),
        OK,
      ],
      [
        "ok-rs256-pem",
        () =>
          base()
            .setProtectedHeader({ alg: "RS256" })
            .setExpirationTime(exp(300))
            .sign(rs256.privateKey),
        OK,
      ],
      [
        "fail-alg-none",
        async () =>
          new UnsecuredJWT({
            roles: ["viewer"],
            sub: "alice",
            iss: "debvisor-auth",
            aud: "debvisor-rpc",
            exp: exp(300),
          }).encode(),
        UNAUTH,
      ],
      [
        "fail-hs256-with-the-public-key",
        () =>
          base()
            .setProtectedHeader({ alg: "HS256" })
            .setExpirationTime(exp(300))
            .sign(new TextEncoder().encode(rsPem)),
        UNAUTH,
      ],
      [
        "fail-expired",
        () =>
          base()
            .setProtectedHeader({ alg: "ES256", kid: "k1" })
            .setExpirationTime(exp(-120))
            .sign(es256.privateKey),
        UNAUTH,
      ],
      [
        "fail-not-yet-valid",
        () =>
          base()
            .setProtectedHeader({ alg: "ES256", kid: "k1" })
            .setNotBefore(exp(600))
            .setExpirationTime(exp(900))
            .sign(es256.privateKey),
        UNAUTH,
      ],
      [
        "fail-wrong-audience",
        () =>
          base()
            .setAudience("someone-else")
            .setProtectedHeader({ alg: "ES256", kid: "k1" })
            .setExpirationTime(exp(300))
            .sign(es256.privateKey),
        UNAUTH,
      ],
      [
        "fail-wrong-issuer",
        () =>
          base()
            .setIssuer("evil")
            .setProtectedHeader({ alg: "ES256", kid: "k1" })
            .setExpirationTime(exp(300))
            .sign(es256.privateKey),
        UNAUTH,
      ],
      [
        "fail-missing-exp",
        () => base().setProtectedHeader({ alg: "ES256", kid: "k1" }).sign(es256.privateKey),
        UNAUTH,
      ],
      [
        "fail-unknown-kid",
        () =>
          base()
            .setProtectedHeader({ alg: "ES256", kid: "k9" })
            .setExpirationTime(exp(300))
            .sign(es256.privateKey),
        UNAUTH,
      ],
      [
        "fail-tampered-payload",
        async () => {
          const t = await base()
            .setProtectedHeader({ alg: "ES256", kid: "k1" })
            .setExpirationTime(exp(300))
            .sign(es256.privateKey);
          const [h, p, sig] = t.split(".");
          const claims = JSON.parse(Buffer.from(p as string, "base64url").toString());
          claims.sub = "admin";
          return `${h}.${Buffer.from(JSON.stringify(claims)).toString("base64url")}.${sig}`;
        },
        UNAUTH,
      ],
    ];
    for (const [name, make, expected] of cases) {
      it(name, async () => {
        assert.equal(await call({ bearer: await make() }), expected);
      });
    }
    it("takes roles from the roles claim only: a viewer token cannot register", async () => {
      const t = await base()
        .setProtectedHeader({ alg: "ES256", kid: "k1" })
        .setExpirationTime(exp(300))
        .sign(es256.privateKey);
      assert.equal(
        await call({ bearer: t }, REGISTER, Buffer.from([0x0a, 0x04, 0x0a, 0x02, 0x6e, 0x31])),
        DENIED,
      );
    });
  });

  describe("the node role", () => {
    it("lets a node's certificate register its own node and no other", async () => {
      const c = await (await loadCertificateAuthority(pki.ca)).issue({
        commonName: "node-07",
        usage: "client",
      });
      const node = (id: string) =>
        Buffer.concat([Buffer.from([0x0a, id.length + 2, 0x0a, id.length]), Buffer.from(id)]);
      assert.equal(
        await call({ certPem: c.certPem, keyPem: c.keyPem }, REGISTER, node("node-07")),
        OK,
      );
      assert.equal(
        await call({ certPem: c.certPem, keyPem: c.keyPem }, REGISTER, node("node-08")),
        DENIED,
      );
    });
  });
});

describe("lockout", () => {
  /** ListNodes with a bearer token (or a client certificate): the gRPC error, if any, and its reason. */
  const callWith = async (
    s: SecuredServer,
    pki: TestPki,
    auth: { bearer?: string; certPem?: string; keyPem?: string },
  ) => {
    const ch = testChannel(s.server.address, {
      caPem: pki.ca.certPem,
      certPem: auth.certPem,
      keyPem: auth.keyPem,
    });
    const md = new grpc.Metadata();
    if (auth.bearer !== undefined) md.set("authorization", `Bearer ${auth.bearer}`);
    const started = Date.now();
    const r = await rawUnary(ch, LIST_NODES, Buffer.alloc(0), md);
    ch.close();
    return {
      code: r.error?.code ?? OK,
      reason: r.trailers?.get("debvisor-error-reason")[0],
      details: r.error?.details ?? "",
      ms: Date.now() - started,
    };
  };

  it("never locks out a good key, token or certificate after a flood of bad credentials from the same address", async () => {
    const pki = await createTestPki();
    const clock = createManualClock(Date.now());
    const issuer = await generateKeyPair("ES256", { extractable: true });
    const jwt = createJwtVerifier(
      [
        {
          issuer: "debvisor-auth",
          audience: "debvisor-rpc",
          algorithms: ["ES256"],
          publicKeyPems: [await exportSPKI(issuer.publicKey)],
          rolesClaim: "roles",
          clockSkewSeconds: 30,
        },
      ],
      clock,
    );
    const s = await startSecuredServer({
      pki,
      clock,
      jwt,
      policy: createAccessPolicy({ bindings: [{ principal: "admin", roles: ["viewer"] }] }),
      lockout: { maxFailures: 5, windowMs: 300_000, sourceMaxFailures: 20, throttleDelayMs: 150 },
    });
    try {
      const good = await s.apiKeys.create({ principal: "ci", roles: ["viewer"], createdBy: "t" });
      const signFor = (sub: string) =>
        new SignJWT({ roles: ["viewer"] })
          .setSubject(sub)
          .setIssuer("debvisor-auth")
          .setAudience("debvisor-rpc")
          .setExpirationTime(Math.floor(clock.now() / 1000) + 300)
          .setProtectedHeader({ alg: "ES256" })
          .sign(issuer.privateKey);
      const token = await signFor("alice");
      // 100 bad keys, 10 guesses at alice's token, 10 calls without credentials, all from 127.0.0.1.
      const flood: Promise<unknown>[] = [];
      for (let i = 0; i < 100; i++)
        flood.push(
          callWith(s, pki, { bearer: `dvk_${i.toString(16).padStart(16, "0")}_${"x".repeat(43)}` }),
        );
      await Promise.all(flood);
      for (let i = 0; i < 10; i++) await callWith(s, pki, { bearer: `${token.slice(0, -4)}AAAA` });
      for (let i = 0; i < 10; i++) assert.equal((await callWith(s, pki, {})).code, UNAUTH);
      const bad = await callWith(s, pki, { bearer: `dvk_${"f".repeat(16)}_${"x".repeat(43)}` });
      assert.equal(bad.code, UNAUTH);
      assert.ok(bad.ms >= 150, `a throttled address's failures wait (${bad.ms} ms)`);
      const key = await callWith(s, pki, { bearer: good.token });
      assert.equal(key.code, OK, "the good API key still works");
      assert.equal((await callWith(s, pki, pki.client)).code, OK, "a certificate still works");
      // alice's issuer+sub was guessed at too often: further guesses are told it is locked,
      // and her own, validly signed token still works.
      const guess = await callWith(s, pki, { bearer: `${token.slice(0, -4)}BBBB` });
      assert.equal(guess.reason, "AUTH_LOCKED_OUT");
      assert.equal((await callWith(s, pki, { bearer: token })).code, OK, "alice's token works");
      const bob = await signFor("bob");
      assert.equal((await callWith(s, pki, { bearer: bob })).code, OK, "another JWT still works");
    } finally {
      await s.close();
    }
  });

  it("locks a key id guessed too often against further guesses, says until when, never refuses the right secret, and lifts after the cool-down", async () => {
    const pki = await createTestPki();
    const clock = createManualClock(Date.now());
    const s = await startSecuredServer({
      pki,
      clock,
      policy: createAccessPolicy({}),
      lockout: { maxFailures: 5, windowMs: 300_000 },
    });
    try {
      const good = await s.apiKeys.create({ principal: "ci", roles: ["viewer"], createdBy: "t" });
      const other = await s.apiKeys.create({ principal: "cd", roles: ["viewer"], createdBy: "t" });
      const id = good.record.id;
      assert.equal((await callWith(s, pki, { bearer: good.token })).code, OK);
      for (let i = 0; i < 4; i++) {
        const r = await callWith(s, pki, { bearer: `dvk_${id}_${"x".repeat(43)}` });
        assert.equal(r.reason, "UNAUTHENTICATED");
      }
      const fifth = await callWith(s, pki, { bearer: `dvk_${id}_${"x".repeat(43)}` });
      assert.equal(fifth.reason, "AUTH_LOCKED_OUT", "the failure that locks says so");
      const locked = await callWith(s, pki, { bearer: `dvk_${id}_${"y".repeat(43)}` });
      assert.equal(locked.code, UNAUTH);
      assert.equal(locked.reason, "AUTH_LOCKED_OUT", "a further guess is told it is locked");
      // The id is no secret: the right secret still works, so nobody can lock its owner out.
      assert.equal((await callWith(s, pki, { bearer: good.token })).code, OK, "the owner's key");
      const until = new Date(clock.now() + 300_000).toISOString();
      assert.match(locked.details, new RegExp(`locked out until ${until.replace(/\./g, "\\.")}`));
      assert.equal((await callWith(s, pki, { bearer: other.token })).code, OK, "other keys work");
      clock.advance(300_001);
      const after = await callWith(s, pki, { bearer: `dvk_${id}_${"z".repeat(43)}` });
      assert.equal(after.reason, "UNAUTHENTICATED", "cool-down over: a bad guess is only bad");
    } finally {
      await s.close();
    }
  });
});

describe("rate limits", () => {
  it("refuses a principal over its limit with retry information, and not another principal", async () => {
    const pki = await createTestPki();
    const clock = createManualClock(Date.now());
    const s = await startSecuredServer({
      pki,
      clock,
      policy: createAccessPolicy({}),
      rateLimit: {
        perSource: { ratePerSecond: 1000, burst: 1000 },
        perPrincipal: { ratePerSecond: 1, burst: 3 },
      },
    });
    try {
      const a = await s.apiKeys.create({ principal: "a", roles: ["viewer"], createdBy: "test" });
      const b = await s.apiKeys.create({ principal: "b", roles: ["viewer"], createdBy: "test" });
      const ch = testChannel(s.server.address, { caPem: pki.ca.certPem });
      const call = async (token: string) => {
        const md = new grpc.Metadata();
        md.set("authorization", `Bearer ${token}`);
        return rawUnary(ch, LIST_NODES, Buffer.alloc(0), md);
      };
      for (let i = 0; i < 3; i++) assert.equal((await call(a.token)).error, undefined);
      const over = await call(a.token);
      assert.equal(over.error?.code, grpc.status.RESOURCE_EXHAUSTED);
      assert.equal(over.trailers?.get("debvisor-error-reason")[0], "RATE_LIMITED");
      assert.equal(over.trailers?.get("retry-after-ms")[0], "1000");
      assert.match(over.error?.details ?? "", /retry after 1000 ms/);
      assert.equal((await call(b.token)).error, undefined, "another principal is unaffected");
      clock.advance(1000);
      assert.equal((await call(a.token)).error, undefined, "refilled");
      ch.close();
    } finally {
      await s.close();
    }
  });

  it("limits a source before authentication, so a flood of bad credentials never reaches the checks", async () => {
    const pki = await createTestPki();
    const clock = createManualClock(Date.now());
    const s = await startSecuredServer({
      pki,
      clock,
      policy: createAccessPolicy({}),
      rateLimit: {
        perSource: { ratePerSecond: 1, burst: 2 },
        perPrincipal: { ratePerSecond: 1000, burst: 1000 },
      },
    });
    try {
      const codes: number[] = [];
      for (let i = 0; i < 4; i++)
        codes.push(await codeOf(s.server.address, pki.ca.certPem, { bearer: "dvk_bogus" }));
      assert.deepEqual(codes, [
        UNAUTH,
        UNAUTH,
        grpc.status.RESOURCE_EXHAUSTED,
        grpc.status.RESOURCE_EXHAUSTED,
      ]);
    } finally {
      await s.close();
    }
  });
});
