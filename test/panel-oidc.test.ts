import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { request } from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { chromium } from "playwright-core";
import type { AuditFields } from "../src/audit/index.js";
import { createManualClock, silentLogger } from "../src/core/index.js";
import { AuditService } from "../src/gen/debvisor/v1/audit_pb.js";
import { NodeService } from "../src/gen/debvisor/v1/node_pb.js";
import {
  createLoginThrottle,
  createOidcSignIn,
  createPanelAuth,
  createPanelSessions,
  createPanelUsers,
  type OidcRedirect,
} from "../src/panel/index.js";
import { createAccessPolicy } from "../src/security/index.js";
import { parseConfig } from "../src/server/index.js";
import { createSqliteStore } from "../src/store/index.js";
import { type DaemonProcess, onFreePort, startDevDaemon } from "./helpers/daemon-process.js";
import { type Misbehaviour, startTestIssuer, type TestIssuer } from "./helpers/oidc-issuer.js";
import { devCa, type PanelBrowser, panelBrowser } from "./helpers/panel-client.js";

/** Debian's Chromium (as in panel-e2e.test.ts); under CI=true its absence fails the run. */
const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const haveChromium = existsSync(CHROMIUM);
if (!haveChromium && process.env.CI === "true")
  throw new Error(`${CHROMIUM} not found: install Debian's chromium (.ci/run does)`);
const SCREENSHOTS = join(process.cwd(), "test-results", "panel");

/** One step of a browser's navigation: where it went and what came back. */
interface Hop {
  readonly url: URL;
  readonly status: number;
  readonly location: string | undefined;
}

describe("web panel: sign-in with an OpenID Connect issuer", () => {
  let dir: string;
  let issuer: TestIssuer;
  let daemon: DaemonProcess;
  let url: string;
  let ca: string;
  let admin: PanelBrowser;
  const principal = (sub: string) => `oidc:${issuer.url}#${sub}`;

  /**
   * Follows redirects like a browser would, across the panel and the issuer,
   * keeping the panel's cookies in `b` (the issuer sets none). `stopAt`:
   * return before requesting a URL whose path it names.
   */
  const navigate = async (b: PanelBrowser, start: string, stopAt?: string) => {
    const hops: Hop[] = [];
    let next = new URL(start, url);
    for (let i = 0; i < 10; i++) {
      if (next.pathname === stopAt) return { hops, stopped: next };
      const panel = next.origin === new URL(url).origin;
      const hop = await new Promise<Hop>((resolve, reject) => {
        const req = request(
          next,
          {
            ca: panel ? ca : issuer.caPem,
            servername: panel ? "localhost" : undefined,
            headers: panel
              ? { cookie: [...b.cookies].map(([k, v]) => `${k}=${v}`).join("; ") }
              : {},
          },
          (res) => {
            for (const c of res.headers["set-cookie"] ?? []) {
              const [pair = ""] = c.split(";");
              const name = pair.slice(0, pair.indexOf("="));
              if (/Max-Age=0\b/.test(c)) b.cookies.delete(name);
              else b.cookies.set(name, pair.slice(name.length + 1));
            }
            res.resume();
            res.on("end", () =>
              resolve({ url: next, status: res.statusCode ?? 0, location: res.headers.location }),
            );
          },
        );
        req.on("error", reject);
        req.end();
      });
      hops.push(hop);
      if (hop.location === undefined) return { hops, stopped: undefined };
      next = new URL(hop.location, next);
    }
    throw new Error("redirect loop");
  };
  /** Signs in through the issuer from a fresh browser; returns it and where it landed. */
  const signIn = async (b = panelBrowser(url, ca)) => {
    const { hops } = await navigate(b, "/auth/oidc/start");
    const last = hops.at(-1) as Hop;
    return { b, landed: last.url, hops };
  };
  const errorOf = (landed: URL) => landed.searchParams.get("signin_error") ?? "none";
  /** The daemon's last log line about a refused sign-in, for assertion messages. */
  const lastRefusal = () =>
    JSON.stringify(daemon.logs.filter((l) => l.msg === "panel sign-in refused").at(-1));
  const oidcAudit = async () =>
    (await admin.client(AuditService).listAuditRecords({ pageSize: 500 })).records.filter(
      (r) => r.event === "panel.auth" && r.authMethod === "oidc",
    );

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "dv-panel-oidc-"));
    issuer = await startTestIssuer();
    // The panel's port, found free, and another when it was taken in between.
    const port = await onFreePort(async (port) => {
      issuer.redirectUrl = `https://127.0.0.1:${port}/auth/oidc/callback`;
      writeFileSync(join(dir, "issuer-ca.pem"), issuer.caPem);
      writeFileSync(join(dir, "client-secret"), `${issuer.clientSecret}\n`, { mode: 0o600 });
      daemon = await startDevDaemon(dir, {
        panel: {
          listen: `127.0.0.1:${port}`,
          // Generous for the cases here (about 100 attempts); the last case spends the rest.
          loginPerAddress: { ratePerSecond: 0.001, burst: 150 },
          oidc: {
            issuer: issuer.url,
            name: "Test SSO",
            clientId: issuer.clientId,
            clientSecretFile: join(dir, "client-secret"),
            redirectUrl: issuer.redirectUrl,
            caFile: join(dir, "issuer-ca.pem"),
          },
        },
        rbac: { bindings: [{ principal: `oidc:${issuer.url}#alice`, roles: ["viewer"] }] },
      });
      // Dev mode moves a panel whose port is taken (the redirect URL would be wrong): again.
      const serving = daemon.logs.find((l) => l.msg === "serving");
      if (serving?.panelUrl !== `https://127.0.0.1:${port}/`) {
        daemon.kill();
        await daemon.exited;
        throw new Error(
          `panel port ${port}: address already in use (served at ${serving?.panelUrl})`,
        );
      }
      return port;
    });
    url = `https://127.0.0.1:${port}/`;
    ca = devCa(dir);
    admin = panelBrowser(url, ca);
    const password = readFileSync(join(dir, "panel-admin-password"), "utf8").trim();
    assert.equal((await admin.auth("login", { user: "admin", password })).status, 200);
  });
  after(async () => {
    daemon?.kill();
    await issuer?.close();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  it("signs a person in through the issuer into the same kind of session a password makes", async () => {
    issuer.user = { sub: "alice", email: "alice@example.test" };
    assert.deepEqual((await admin.auth("providers")).json, { oidc: "Test SSO" });
    const { b, landed, hops } = await signIn();
    // start -> issuer's /authorize (PKCE S256) -> callback -> the panel's page.
    const authorize = hops[1]?.url as URL;
    assert.equal(authorize.origin, issuer.url);
    assert.equal(authorize.searchParams.get("code_challenge_method"), "S256");
    assert.ok(authorize.searchParams.get("nonce"));
    assert.equal(landed.pathname, "/");
    assert.equal(errorOf(landed), "none", lastRefusal());
    assert.ok(b.cookies.has("__Host-dv_access") && b.cookies.has("__Host-dv_refresh"));
    assert.ok(!b.cookies.has("__Host-dv_oidc"), "the flow cookie is cleared");
    assert.equal((await b.auth("me")).json.principal, principal("alice"));
    // Roles come from the binding of oidc:<issuer>#alice: viewer reads, may not cordon.
    const nodes = b.client(NodeService);
    assert.equal((await nodes.listNodes({})).nodes.length, 3);
    await assert.rejects(
      nodes.cordonNode({ id: { id: "node-01" }, reason: "no" }),
      (e: unknown) => e instanceof ConnectError && e.code === Code.PermissionDenied,
    );
    // The same refresh rotation: a rotated-away token ends the session when reused (rotated
    // twice: the one rotated away last has a grace for two tabs refreshing at once).
    const oldRefresh = b.cookies.get("__Host-dv_refresh") as string;
    assert.equal((await b.auth("refresh", {})).status, 200);
    assert.equal((await b.auth("refresh", {})).status, 200);
    const thief = panelBrowser(url, ca);
    thief.cookies.set("__Host-dv_refresh", oldRefresh);
    assert.equal((await thief.auth("refresh", {})).status, 401);
    assert.equal((await b.auth("me")).status, 401, "reuse ended the whole session");
    const records = await oidcAudit();
    const ok = records.find((r) => r.code === "OK" && r.principal === principal("alice"));
    assert.ok(ok, JSON.stringify(records.map((r) => [r.code, r.principal, r.reason])));
    assert.equal(ok.method, "Login");
    const text = JSON.stringify(records, (_k, v) => (typeof v === "bigint" ? String(v) : v));
    assert.ok(!text.includes(oldRefresh) && !text.includes(issuer.clientSecret));
  });

  it("lets an admin end an OpenID Connect person's sessions at once", async () => {
    issuer.user = { sub: "alice" };
    const { b } = await signIn();
    assert.equal((await b.auth("me")).status, 200);
    const r = await admin.auth("users", { action: "end-sessions", user: principal("alice") });
    assert.equal(r.json.sessionsEnded, 1, JSON.stringify(r.json));
    assert.equal((await b.auth("me")).status, 401);
  });

  it("refuses a person no binding gives a role, and names the principal to bind", async () => {
    issuer.user = { sub: "mallory" };
    const { b, landed } = await signIn();
    assert.equal(errorOf(landed), "OIDC_NO_ROLES");
    assert.equal(landed.searchParams.get("principal"), principal("mallory"));
    assert.ok(!b.cookies.has("__Host-dv_access"));
    const records = await oidcAudit();
    assert.ok(
      records.some((r) => r.principal === principal("mallory") && r.decision === "deny"),
      JSON.stringify(records.map((r) => [r.code, r.principal, r.reason])),
    );
  });

  it("refuses a callback with no, a wrong, or another browser's state, and keeps the session it has", async () => {
    issuer.user = { sub: "alice" };
    const { b } = await signIn();
    const session = b.cookies.get("__Host-dv_access");
    const before = issuer.tokenRequests;
    // A forged callback (login CSRF): this browser started no sign-in.
    const forged = await navigate(b, "/auth/oidc/callback?code=stolen&state=guess");
    assert.equal(errorOf(forged.hops.at(-1)?.url as URL), "OIDC_SIGN_IN_EXPIRED");
    // Its own sign-in, but the callback's state is not the one it sent.
    const started = await navigate(b, "/auth/oidc/start", "/auth/oidc/callback");
    const cb = started.stopped as URL;
    const realState = cb.searchParams.get("state") as string;
    cb.searchParams.set("state", "x".repeat(43));
    const wrong = await navigate(b, cb.pathname + cb.search);
    assert.equal(errorOf(wrong.hops.at(-1)?.url as URL), "OIDC_SIGN_IN_EXPIRED");
    // That did not cancel the sign-in in progress (a cross-site link could send it): the real
    // callback still completes it.
    cb.searchParams.set("state", realState);
    const completed = await navigate(b, cb.pathname + cb.search);
    assert.equal(errorOf(completed.hops.at(-1)?.url as URL), "none");
    const completedSession = b.cookies.get("__Host-dv_access");
    // Without state at all.
    const again = (await navigate(b, "/auth/oidc/start", "/auth/oidc/callback")).stopped as URL;
    again.searchParams.delete("state");
    const none = await navigate(b, again.pathname + again.search);
    assert.equal(errorOf(none.hops.at(-1)?.url as URL), "OIDC_SIGN_IN_EXPIRED");
    assert.equal(issuer.tokenRequests, before + 1, "only the real callback's code was redeemed");
    assert.notEqual(completedSession, session);
    assert.equal(
      b.cookies.get("__Host-dv_access"),
      completedSession,
      "the session it had is untouched",
    );
    assert.equal((await b.auth("me")).json.principal, principal("alice"));
  });

  it("refuses a replayed callback and a replayed code", async () => {
    issuer.user = { sub: "alice" };
    const b = panelBrowser(url, ca);
    const cb = (await navigate(b, "/auth/oidc/start", "/auth/oidc/callback")).stopped as URL;
    const flowCookie = b.cookies.get("__Host-dv_oidc") as string;
    const first = await navigate(b, cb.pathname + cb.search);
    assert.equal(errorOf(first.hops.at(-1)?.url as URL), "none");
    // The same callback again, flow cookie and all (a copy of the browser's request).
    const copy = panelBrowser(url, ca);
    copy.cookies.set("__Host-dv_oidc", flowCookie);
    const replay = await navigate(copy, cb.pathname + cb.search);
    assert.equal(errorOf(replay.hops.at(-1)?.url as URL), "OIDC_SIGN_IN_EXPIRED");
    // The old code inside a new sign-in of its own: the issuer refuses the code.
    const fresh = (await navigate(copy, "/auth/oidc/start", "/auth/oidc/callback")).stopped as URL;
    fresh.searchParams.set("code", cb.searchParams.get("code") as string);
    const reused = await navigate(copy, fresh.pathname + fresh.search);
    assert.equal(errorOf(reused.hops.at(-1)?.url as URL), "OIDC_ISSUER_REFUSED");
    assert.ok(!copy.cookies.has("__Host-dv_access"));
  });

  // The audit record says which check failed (and so that each check runs).
  for (const [bad, reason, check] of [
    ["error", "OIDC_ISSUER_REFUSED", "error=access_denied"],
    ["wrong-nonce", "OIDC_TOKEN_INVALID", '"nonce"'],
    ["wrong-audience", "OIDC_TOKEN_INVALID", '"aud"'],
    ["wrong-issuer", "OIDC_TOKEN_INVALID", '"iss"'],
    ["bad-signature", "OIDC_TOKEN_INVALID", "signature verification failed"],
    ["expired", "OIDC_TOKEN_INVALID", '"exp"'],
  ] as [Misbehaviour, string, string][]) {
    it(`fail-${bad}: no session, ${reason} in the page, an audit record`, async () => {
      issuer.user = { sub: "alice" };
      issuer.misbehave = bad;
      const { b, landed } = await signIn();
      assert.equal(errorOf(landed), reason, lastRefusal());
      assert.equal(landed.pathname, "/");
      assert.ok(!b.cookies.has("__Host-dv_access") && !b.cookies.has("__Host-dv_refresh"));
      const records = await oidcAudit();
      const last = records.at(-1);
      assert.equal(last?.error, reason, `${last?.reason} ${records.map((r) => r.error)}`);
      assert.notEqual(last?.code, "OK");
      assert.ok(last?.reason.includes(check), last?.reason);
    });
  }

  it("signs in with the issuer in Chromium and shows the nodes; a refused sign-in says why", {
    skip: haveChromium ? false : `${CHROMIUM} not installed`,
  }, async () => {
    issuer.user = { sub: "alice" };
    mkdirSync(SCREENSHOTS, { recursive: true });
    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: ["--no-sandbox"],
    });
    try {
      const context = await browser.newContext({ ignoreHTTPSErrors: true });
      const page = await context.newPage();
      await page.goto(url);
      const button = page.getByRole("link", { name: "Sign in with Test SSO" });
      await button.click();
      await page
        .getByTestId("principal")
        .filter({ hasText: principal("alice") })
        .waitFor();
      await page.getByTestId("nodes").locator("tbody tr").nth(2).waitFor();
      assert.equal(await page.getByTestId("nodes").locator("tbody tr").count(), 3);
      await page.screenshot({ path: join(SCREENSHOTS, "oidc-signed-in.png") });
      // A refused sign-in in a fresh browser: the page names the reason, the address is clean.
      const other = await (await browser.newContext({ ignoreHTTPSErrors: true })).newPage();
      issuer.misbehave = "wrong-nonce";
      await other.goto(url);
      await other.getByRole("link", { name: "Sign in with Test SSO" }).click();
      const error = other.getByTestId("login-error");
      await error.filter({ hasText: "failed verification" }).waitFor();
      assert.match((await error.textContent()) ?? "", /OIDC_TOKEN_INVALID/);
      assert.equal(new URL(other.url()).search, "");
      assert.equal(
        (await other.context().cookies()).filter((c) => c.name === "__Host-dv_access").length,
        0,
      );
      await other.screenshot({ path: join(SCREENSHOTS, "oidc-refused.png") });
      await other.evaluate(
        readFileSync(join(process.cwd(), "node_modules", "axe-core", "axe.min.js"), "utf8"),
      );
      const axe = (await other.evaluate("axe.run(document, { resultTypes: ['violations'] })")) as {
        violations: { id: string; impact: string }[];
      };
      assert.deepEqual(
        axe.violations.filter((v) => v.impact === "serious" || v.impact === "critical"),
        [],
      );
    } finally {
      await browser.close();
    }
  });

  it("refuses a 33rd sign-in in progress from one address; the browser's own still completes", async () => {
    issuer.user = { sub: "alice" };
    const b = panelBrowser(url, ca);
    const mine = (await navigate(b, "/auth/oidc/start", "/auth/oidc/callback")).stopped as URL;
    // Browsers that go to the issuer and never come back, all from 127.0.0.1.
    let started = 1;
    let refused: URL | undefined;
    for (let i = 0; i < 40 && refused === undefined; i++) {
      const { hops, stopped } = await navigate(
        panelBrowser(url, ca),
        "/auth/oidc/start",
        "/authorize",
      );
      if (stopped !== undefined) started++;
      else refused = hops.at(-1)?.url;
    }
    assert.ok(refused, `${started} sign-ins in progress and no refusal`);
    assert.equal(errorOf(refused), "OIDC_TOO_MANY_SIGN_INS", lastRefusal());
    // 32 in progress at most (earlier cases may have left one or two behind).
    assert.ok(started <= 32 && started >= 29, `${started} started`);
    const audited = (await oidcAudit()).at(-1);
    assert.equal(audited?.error, "OIDC_TOO_MANY_SIGN_INS");
    assert.equal(audited?.reason, "32 sign-ins in progress from 127.0.0.1");
    // The refusal cancelled nothing: this browser's sign-in completes, and frees a place.
    const done = await navigate(b, mine.pathname + mine.search);
    assert.equal(errorOf(done.hops.at(-1)?.url as URL), "none", lastRefusal());
    assert.equal((await b.auth("me")).json.principal, principal("alice"));
    const again = await navigate(panelBrowser(url, ca), "/auth/oidc/start", "/authorize");
    assert.ok(again.stopped, "a place came free");
  });

  it("rate-limits sign-ins per address like password sign-ins", async () => {
    const b = panelBrowser(url, ca);
    let limited: URL | undefined;
    for (let i = 0; i < 160 && limited === undefined; i++) {
      const { hops } = await navigate(b, "/auth/oidc/callback?code=x&state=y");
      const landed = hops.at(-1)?.url as URL;
      if (errorOf(landed) === "RATE_LIMITED") limited = landed;
      else assert.equal(errorOf(landed), "OIDC_SIGN_IN_EXPIRED");
    }
    assert.ok(limited, "the address bucket ran out");
    // And password sign-ins from the same address share the bucket.
    const r = await panelBrowser(url, ca).auth("login", {
      user: "admin",
      password: "x".repeat(12),
    });
    assert.equal(r.status, 429);
  });
});

/** The relying party's settings for the test issuer, for a panel built in this process. */
const relyingPartyOf = (issuer: TestIssuer) => ({
  issuer: issuer.url,
  name: "Test SSO",
  clientId: issuer.clientId,
  clientSecret: issuer.clientSecret,
  redirectUrl: issuer.redirectUrl,
  scopes: ["openid"],
  principalClaim: "sub",
});

describe("OpenID Connect sign-in: the issuer is reached over verified TLS only", () => {
  let issuer: TestIssuer;
  let dir: string;
  before(async () => {
    issuer = await startTestIssuer();
    issuer.redirectUrl = "https://127.0.0.1:1/auth/oidc/callback";
    dir = mkdtempSync(join(tmpdir(), "dv-oidc-tls-"));
  });
  after(async () => {
    await issuer?.close();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  const relyingParty = async (caPem: string | undefined, audited: AuditFields[]) => {
    const clock = createManualClock(Date.now());
    const store = createSqliteStore({
      path: join(dir, `${audited.length}-${Math.random()}.db`),
      logger: silentLogger,
      clock,
    });
    return createOidcSignIn({
      ...relyingPartyOf(issuer),
      caPem,
      sessions: await createPanelSessions({ store, clock }),
      throttle: createLoginThrottle({ clock }),
      policy: () => createAccessPolicy({}),
      audit: {
        append: async (f) => {
          audited.push(f);
        },
        count: (f) => audited.push(f),
      },
      logger: silentLogger,
      now: () => clock.now(),
    });
  };

  it("refuses an issuer whose certificate it cannot verify, and says so", async () => {
    const audited: AuditFields[] = [];
    const r = await (await relyingParty(undefined, audited)).start("10.0.0.9");
    assert.equal(r.location, "/?signin_error=OIDC_ISSUER_UNAVAILABLE");
    assert.match(audited[0]?.reason ?? "", /issuer unreachable: [A-Z_]*(VERIFY|CERT)/);
    assert.ok(!JSON.stringify(audited).includes(issuer.clientSecret));
    // With the issuer's CA it goes to the issuer's authorization endpoint.
    const ok = await (await relyingParty(issuer.caPem, [])).start("10.0.0.9");
    assert.ok(ok.location.startsWith(`${issuer.url}/authorize?`), ok.location);
  });

  it("refuses plain-HTTP issuers and redirect URLs in the configuration", () => {
    const base = {
      issuer: "https://idp.example",
      clientId: "panel",
      redirectUrl: "https://panel.example/auth/oidc/callback",
    };
    assert.doesNotThrow(() => parseConfig({ panel: { oidc: base } }));
    assert.throws(
      () => parseConfig({ panel: { oidc: { ...base, issuer: "http://idp.example" } } }),
      /panel\.oidc\.issuer/,
    );
    assert.throws(
      () =>
        parseConfig({
          panel: { oidc: { ...base, redirectUrl: "http://panel.example/auth/oidc/callback" } },
        }),
      /panel\.oidc\.redirectUrl/,
    );
    assert.throws(
      () => parseConfig({ panel: { oidc: { ...base, scopes: ["profile"] } } }),
      /panel\.oidc\.scopes/,
    );
  });
});

describe("OpenID Connect sign-in: a source is an IPv4 address or an IPv6 /64", () => {
  let issuer: TestIssuer;
  let dir: string;
  const ORIGIN = "https://panel.example";
  before(async () => {
    issuer = await startTestIssuer();
    issuer.redirectUrl = `${ORIGIN}/auth/oidc/callback`;
    issuer.user = { sub: "alice" };
    dir = mkdtempSync(join(tmpdir(), "dv-oidc-sources-"));
  });
  after(async () => {
    await issuer?.close();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  /**
   * The panel's sign-in parts wired as the panel server wires them (one
   * throttle for password and OpenID Connect), called with the source
   * address the server would hand over: a test cannot send from many IPv6
   * addresses over loopback.
   */
  const panelParts = async (o: { burst: number; perSource?: number; total?: number }) => {
    const clock = createManualClock(Date.now());
    const store = createSqliteStore({
      path: join(dir, `${Math.random()}.db`),
      logger: silentLogger,
      clock,
    });
    const sessions = await createPanelSessions({ store, clock });
    const throttle = createLoginThrottle({
      clock,
      perAddress: { ratePerSecond: 1 / 6, burst: o.burst },
    });
    const audited: AuditFields[] = [];
    const oidc = createOidcSignIn({
      ...relyingPartyOf(issuer),
      caPem: issuer.caPem,
      sessions,
      throttle,
      policy: () => createAccessPolicy({}),
      audit: {
        append: async (f) => {
          audited.push(f);
        },
        count: (f) => audited.push(f),
      },
      logger: silentLogger,
      now: () => clock.now(),
      pendingPerSource: o.perSource,
      pendingTotal: o.total,
    });
    const auth = createPanelAuth({
      users: createPanelUsers(store, clock),
      sessions,
      throttle,
      policy: () => createAccessPolicy({}),
      audit: undefined,
      clock,
      logger: silentLogger,
      principalOf: async () => undefined,
      rateLimit: undefined,
      sourceLimit: undefined,
    });
    const headers: Record<string, string> = { origin: ORIGIN, "x-debvisor-csrf": "1" };
    /** A password sign-in's HTTP status (401: wrong password, 429: rate-limited). */
    const login = async (source: string) =>
      (
        await auth.handle({
          method: "POST",
          path: "login",
          headers: { get: (n) => headers[n] },
          origins: [ORIGIN],
          source,
          body: { user: "admin", password: "x".repeat(12) },
        })
      ).status;
    return { clock, oidc, login, audited };
  };
  /** "started" when the browser is sent to the issuer, else the reason it is sent back with. */
  const outcome = (r: OidcRedirect) =>
    r.location.startsWith(`${issuer.url}/authorize?`)
      ? "started"
      : (new URL(r.location, ORIGIN).searchParams.get("signin_error") ?? r.location);

  it("rate-limits a whole IPv6 /64 as one source, for OpenID Connect and password sign-ins alike", async () => {
    const { clock, oidc, login } = await panelParts({ burst: 4 });
    // Four attempts from four addresses of one /64, spelled every way.
    assert.equal(outcome(await oidc.start("2001:db8:a:1::1")), "started");
    const cb = await oidc.callback("code=x&state=y", "2001:db8:a:1::2", new Map());
    assert.equal(outcome(cb), "OIDC_SIGN_IN_EXPIRED");
    assert.equal(await login("2001:db8:a:1:ffff:ffff:ffff:ffff"), 401);
    assert.equal(outcome(await oidc.start("2001:0DB8:000A:0001:0:0:0:4")), "started");
    // A fifth address of that /64 finds the bucket empty, on every path.
    assert.equal(outcome(await oidc.start("2001:db8:a:1::5")), "RATE_LIMITED");
    assert.equal(
      outcome(await oidc.callback("code=x&state=y", "2001:db8:a:1::6", new Map())),
      "RATE_LIMITED",
    );
    assert.equal(await login("2001:db8:a:1:8000::7"), 429);
    // The /64s next to it are other sources.
    assert.equal(outcome(await oidc.start("2001:db8:a:2::1")), "started");
    assert.equal(outcome(await oidc.start("2001:db8:a::1")), "started");
    // An IPv4 client is one source whether its socket reports it mapped or not.
    for (const a of ["192.0.2.1", "::ffff:192.0.2.1", "::ffff:c000:201"])
      assert.equal(outcome(await oidc.start(a)), "started", a);
    assert.equal(await login("192.0.2.1"), 401);
    assert.equal(outcome(await oidc.start("::ffff:192.0.2.1")), "RATE_LIMITED");
    assert.equal(await login("192.0.2.1"), 429);
    assert.equal(outcome(await oidc.start("192.0.2.2")), "started");
    clock.advance(6000);
    assert.equal(outcome(await oidc.start("2001:db8:a:1:abcd::1")), "started", "one token back");
  });

  it("bounds the sign-ins in progress per source group and in all; a used or expired one frees its place", async () => {
    const { clock, oidc, audited } = await panelParts({ burst: 100, perSource: 3, total: 5 });
    const first = await oidc.start("2001:db8:b:1::1");
    assert.equal(outcome(first), "started");
    for (const a of ["2001:db8:b:1::2", "2001:db8:b:1:ffff::3"])
      assert.equal(outcome(await oidc.start(a)), "started", a);
    // The fourth from that /64, from a fresh address: refused, and no flow cookie touched.
    const fourth = await oidc.start("2001:db8:b:1::4");
    assert.equal(outcome(fourth), "OIDC_TOO_MANY_SIGN_INS");
    assert.deepEqual(fourth.cookies, [], "a browser's sign-in in progress stays usable");
    const refusal = audited.at(-1);
    assert.equal(refusal?.code, "RESOURCE_EXHAUSTED");
    assert.equal(refusal?.reason, "3 sign-ins in progress from 2001:db8:b:1::/64");
    // Another /64 has its own share, until the table (5) is full for everyone.
    for (const a of ["2001:db8:b:2::1", "2001:db8:b:2::2"])
      assert.equal(outcome(await oidc.start(a)), "started", a);
    assert.equal(outcome(await oidc.start("192.0.2.50")), "OIDC_TOO_MANY_SIGN_INS");
    assert.equal(audited.at(-1)?.reason, "5 sign-ins in progress in all");
    clock.advance(540_000);
    assert.equal(outcome(await oidc.start("192.0.2.50")), "OIDC_TOO_MANY_SIGN_INS", "9 min on");
    // A used flow (here its code is refused by the issuer) is gone, and its place with it.
    const id = /__Host-dv_oidc=([^;]+)/.exec(first.cookies[0] ?? "")?.[1] ?? "";
    const state = new URL(first.location).searchParams.get("state");
    const used = await oidc.callback(
      `code=bogus&state=${state}&iss=${encodeURIComponent(issuer.url)}`,
      "2001:db8:b:1::1",
      new Map([["__Host-dv_oidc", id]]),
    );
    assert.equal(outcome(used), "OIDC_ISSUER_REFUSED");
    assert.equal(outcome(await oidc.start("2001:db8:b:1::9")), "started");
    assert.equal(outcome(await oidc.start("192.0.2.50")), "OIDC_TOO_MANY_SIGN_INS");
    // 10 minutes after they started, the first five expire (oldest first): room again.
    clock.advance(60_000);
    for (const a of ["2001:db8:b:1::a", "2001:db8:b:1::b"])
      assert.equal(outcome(await oidc.start(a)), "started", a);
    assert.equal(
      outcome(await oidc.start("2001:db8:b:1::c")),
      "OIDC_TOO_MANY_SIGN_INS",
      "the one started at 9 min still counts",
    );
    assert.equal(outcome(await oidc.start("192.0.2.50")), "started");
  });
});
