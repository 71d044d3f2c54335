import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { verifyAuditFiles } from "../src/audit/index.js";
import { silentLogger } from "../src/core/index.js";
import { PanelSessionRecordSchema } from "../src/gen/debvisor/store/v1/panel_records_pb.js";
import { MAX_SESSIONS_PER_USER } from "../src/panel/index.js";
import { createSqliteStore, decodeMessage, rangeAll } from "../src/store/index.js";
import { records } from "./helpers/audit-daemon.js";
import { type DaemonProcess, startDevDaemon } from "./helpers/daemon-process.js";
import { devCa, type PanelBrowser, panelBrowser } from "./helpers/panel-client.js";

/** The sum of the counts of aggregated records. */
const total = (recs: Record<string, unknown>[]) =>
  recs.reduce((n, r) => n + Number(JSON.parse(String(r.args)).count), 0);

/** A dev daemon with `config` and its panel: `run` gets it, then the daemon is killed and its directory removed. */
async function withPanelDaemon(
  config: object,
  run: (p: { d: DaemonProcess; dir: string; url: string; ca: string }) => Promise<void>,
): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "dv-panel-audit-"));
  const d = await startDevDaemon(dir, config);
  try {
    const url = String(d.logs.find((l) => l.msg === "serving")?.panelUrl);
    await run({ d, dir, url, ca: devCa(dir) });
  } finally {
    d.kill();
    rmSync(dir, { recursive: true, force: true });
  }
}

describe("web panel: the /auth/ endpoints' audit trail", () => {
  it("counts what anyone can repeat, records every signed-in request, and the chain verifies", async () => {
    await withPanelDaemon(
      {
        audit: { refusals: { intervalMs: 3_600_000 } },
        panel: { listen: "127.0.0.1:0", loginPerAddress: { ratePerSecond: 0.001, burst: 3 } },
      },
      async ({ d, dir, url, ca }) => {
        // Signed in first: the throttle (3 attempts per address) then lets 2 more through.
        const admin = panelBrowser(url, ca);
        const password = readFileSync(join(dir, "panel-admin-password"), "utf8").trim();
        assert.equal((await admin.auth("login", { user: "admin", password })).status, 200);
        // Anyone, no session: 4 kinds of refusal, 60 of each.
        const anyone = panelBrowser(url, ca);
        const statuses = new Map<string, number[]>();
        const refusals = {
          "cross-origin": () =>
            anyone.auth("login", { user: "admin", password: "x" }, { origin: "https://evil" }),
          refresh: () => {
            // A refusal clears the cookie: set again each time.
            anyone.cookies.set("__Host-dv_refresh", `${"A".repeat(22)}.${"B".repeat(43)}`);
            return anyone.auth("refresh", {});
          },
          users: () => anyone.auth("users"),
          logout: () => anyone.auth("logout", {}),
          // 2 attempts pass the throttle (each recorded on its own), the rest are throttled.
          login: () => anyone.auth("login", { user: "nobody", password: "wrong-password-1" }),
        };
        for (const [kind, send] of Object.entries(refusals))
          for (let i = 0; i < 60; i++) {
            const s = (await send()).status;
            statuses.set(kind, [...(statuses.get(kind) ?? []), s]);
          }
        assert.deepEqual(
          Object.fromEntries([...statuses].map(([k, v]) => [k, [...new Set(v)].sort()])),
          {
            "cross-origin": [403],
            refresh: [401],
            users: [401],
            logout: [200],
            login: [401, 429],
          },
        );
        // A signed-in admin: every request, allowed or not, has its own record.
        const asked = [
          (await admin.auth("me")).status,
          (await admin.auth("users")).status,
          (await admin.auth("users", { action: "rename", user: "carol" })).status,
          (await admin.auth("users", { action: "disable", user: "ghost" })).status,
          (
            await admin.auth("users", {
              action: "set-password",
              user: "Bad Name!",
              password: "short",
            })
          ).status,
          (await admin.auth("nothing-here")).status,
        ];
        assert.deepEqual(asked, [200, 200, 400, 404, 400, 404]);
        d.proc.kill("SIGTERM");
        assert.equal(await d.exited, 0);
        const path = join(dir, "audit.log");
        const recs = records(path);
        const panel = recs.filter((r) => r.service === "debvisor.panel.Auth");
        const counted = panel.filter((r) => r.event === "rpc.aggregate");
        const own = panel.filter((r) => r.event === "panel.auth");
        const by = (reason: string, method: string) =>
          counted.filter((r) => r.reason === reason && r.method === method);
        assert.equal(total(by("PANEL_REQUEST_REFUSED", "login")), 60);
        assert.equal(total(by("refresh refused: unknown-session", "Refresh")), 60);
        assert.equal(total(by("UNAUTHENTICATED", "users")), 60);
        assert.equal(total(by("no live session", "Logout")), 60);
        assert.equal(total(by("RATE_LIMITED", "Login")), 58, "60 attempts, 2 let through");
        assert.equal(counted.length, 5, JSON.stringify(counted));
        // Only the attempts the throttle let through and the admin's requests have their own.
        assert.deepEqual(
          own.map((r) => [r.principal, r.method, r.code]),
          [
            ["user:admin", "Login", "OK"],
            ["user:nobody", "Login", "UNAUTHENTICATED"],
            ["user:nobody", "Login", "UNAUTHENTICATED"],
            ["user:admin", "Me", "OK"],
            ["user:admin", "Users.List", "OK"],
            ["user:admin", "Users.Unknown", "INVALID_ARGUMENT"],
            ["user:admin", "Users.Disable", "NOT_FOUND"],
            ["user:admin", "Users.SetPassword", "INVALID_ARGUMENT"],
            ["user:admin", "GET nothing-here", "NOT_FOUND"],
          ],
        );
        assert.ok(own.at(-2)?.args === "user=(invalid)", JSON.stringify(own.at(-2)));
        assert.ok(!readFileSync(path, "utf8").includes("wrong-password-1"));
        assert.equal(verifyAuditFiles([path]).ok, true);
      },
    );
  });
  it("holds a signed-in user's /auth/ requests to the principal's rate limit, as its calls are", async () => {
    await withPanelDaemon(
      {
        audit: { refusals: { intervalMs: 3_600_000 } },
        rateLimit: { perPrincipal: { ratePerSecond: 0.001, burst: 5 } },
        panel: { listen: "127.0.0.1:0" },
        rbac: { bindings: [{ principal: "user:carol", roles: ["viewer"] }] },
      },
      async ({ d, dir, url, ca }) => {
        const admin = panelBrowser(url, ca);
        const password = readFileSync(join(dir, "panel-admin-password"), "utf8").trim();
        assert.equal((await admin.auth("login", { user: "admin", password })).status, 200);
        const set = await admin.auth("users", {
          action: "set-password",
          user: "carol",
          password: "carol-has-a-long-password",
        });
        assert.equal(set.status, 200);
        const carol = panelBrowser(url, ca);
        const login = await carol.auth("login", {
          user: "carol",
          password: "carol-has-a-long-password",
        });
        assert.equal(login.status, 200);
        // A low-privilege user in a loop: who am I, an endpoint that is not there, refresh.
        const statuses: number[] = [];
        for (let i = 0; i < 20; i++) {
          statuses.push((await carol.auth("me")).status);
          statuses.push((await carol.auth(`nothing-${i}`)).status);
          statuses.push((await carol.auth("refresh", {})).status);
        }
        assert.deepEqual(statuses.slice(0, 5), [200, 404, 200, 200, 404]);
        assert.deepEqual(new Set(statuses.slice(5)), new Set([429]), JSON.stringify(statuses));
        // Refused for the rate limit, the refresh token is still the session's.
        assert.ok(carol.cookies.has("__Host-dv_refresh"));
        d.proc.kill("SIGTERM");
        assert.equal(await d.exited, 0);
        const recs = records(join(dir, "audit.log")).filter((r) => r.principal === "user:carol");
        const own = recs.filter((r) => r.event === "panel.auth");
        // Sign-in, then the 5 the budget let through: not one own record (and fsync) per request.
        assert.equal(own.length, 6, JSON.stringify(own.map((r) => r.method)));
        const counted = recs.filter(
          (r) => r.event === "rpc.aggregate" && r.reason === "RATE_LIMITED",
        );
        assert.equal(total(counted), 55);
        // Counted under the endpoints the panel has, not each path asked for.
        assert.deepEqual(counted.map((r) => r.method).sort(), ["(other)", "Refresh", "me"]);
      },
    );
  });

  it("keeps another source's refusals apart however many paths and names one source sends", async () => {
    await withPanelDaemon(
      {
        audit: { refusals: { intervalMs: 3_600_000, maxSources: 20 } },
        panel: { listen: "127.0.0.1:0", loginPerAddress: { ratePerSecond: 0.001, burst: 1 } },
      },
      async ({ d, dir, url, ca }) => {
        // One source: 30 paths without the panel's header, 30 without a session, 30 names past the throttle.
        const flood = panelBrowser(url, ca, { localAddress: "127.0.0.2" });
        for (let i = 0; i < 30; i++) {
          await flood.auth(`p-${i}`, undefined, { origin: "https://evil" });
          await flood.auth(`q-${i}`);
          await flood.auth("login", { user: `name-${i}`, password: "wrong-password-1" });
        }
        // Another source, refused once: its record must still name it.
        const other = panelBrowser(url, ca, { localAddress: "127.0.0.3" });
        assert.equal((await other.auth("users")).status, 401);
        d.proc.kill("SIGTERM");
        assert.equal(await d.exited, 0);
        const counted = records(join(dir, "audit.log")).filter((r) => r.event === "rpc.aggregate");
        assert.ok(
          counted.some((r) => r.peer === "127.0.0.3" && r.method === "users"),
          JSON.stringify(counted.map((r) => [r.peer, r.method, r.principal])),
        );
        assert.ok(!counted.some((r) => r.peer === "*"), "nothing in the overflow");
        assert.equal(
          total(counted.filter((r) => r.peer === "127.0.0.2")),
          89,
          "1 login let through",
        );
      },
    );
  });

  it("keeps only a name a user can have in a sign-in's record, never a look-alike", async () => {
    await withPanelDaemon({ panel: { listen: "127.0.0.1:0" } }, async ({ d, dir, url, ca }) => {
      const b = panelBrowser(url, ca);
      // A right-to-left override: a table shows "user:admin"; a Cyrillic а; a second line.
      for (const user of ["\u202enimda", "\u0430dmin", "admin\nuser:admin"])
        assert.equal((await b.auth("login", { user, password: "wrong-password-1" })).status, 401);
      d.proc.kill("SIGTERM");
      assert.equal(await d.exited, 0);
      const logins = records(join(dir, "audit.log")).filter((r) => r.method === "Login");
      assert.deepEqual(
        logins.map((r) => r.principal),
        ["user:(invalid)", "user:(invalid)", "user:(invalid)"],
      );
    });
  });
  it("holds anonymous /auth/ requests to the source's rate limit, as calls are before authentication", async () => {
    await withPanelDaemon(
      {
        audit: { refusals: { intervalMs: 3_600_000 } },
        rateLimit: { perSource: { ratePerSecond: 0.001, burst: 5 } },
        panel: { listen: "127.0.0.1:0" },
      },
      async ({ d, dir, url, ca }) => {
        const b = panelBrowser(url, ca, { localAddress: "127.0.0.2" });
        // A forged access token: each request would otherwise have its signature checked.
        b.cookies.set(
          "__Host-dv_access",
          `e30.${Buffer.from('{"iss":"debvisor-panel"}').toString("base64url")}.x`,
        );
        const statuses: number[] = [];
        for (let i = 0; i < 20; i++) statuses.push((await b.auth("me")).status);
        assert.deepEqual(statuses, [...Array(5).fill(401), ...Array(15).fill(429)]);
        d.proc.kill("SIGTERM");
        assert.equal(await d.exited, 0);
        const counted = records(join(dir, "audit.log")).filter(
          (r) => r.event === "rpc.aggregate" && r.peer === "127.0.0.2",
        );
        assert.equal(total(counted.filter((r) => r.reason === "RATE_LIMITED")), 15);
        assert.equal(total(counted.filter((r) => r.reason === "UNAUTHENTICATED")), 5);
      },
    );
  });
  it("ends a user's oldest sessions past the cap on sign-in, audited, and keeps at most the cap stored", async () => {
    const cap = MAX_SESSIONS_PER_USER;
    await withPanelDaemon(
      {
        panel: {
          listen: "127.0.0.1:0",
          loginPerAddress: { ratePerSecond: 10, burst: 1000 },
          loginPerAccount: { ratePerSecond: 10, burst: 1000 },
        },
      },
      async ({ d, dir, url, ca }) => {
        const password = readFileSync(join(dir, "panel-admin-password"), "utf8").trim();
        // cap + 5 browsers of one user, each signing in once.
        const browsers: PanelBrowser[] = [];
        for (let i = 0; i < cap + 5; i++) {
          const b = panelBrowser(url, ca);
          assert.equal((await b.auth("login", { user: "admin", password })).status, 200, `${i}`);
          browsers.push(b);
        }
        const sid = (b: PanelBrowser) => String(b.cookies.get("__Host-dv_refresh")).split(".")[0];
        const oldest = browsers.slice(0, 5).map(sid);
        const refreshed = [];
        for (const b of browsers) refreshed.push((await b.auth("refresh", {})).status);
        assert.deepEqual(refreshed, [...Array(5).fill(401), ...Array(cap).fill(200)]);
        d.proc.kill("SIGTERM");
        assert.equal(await d.exited, 0);
        const ended = records(join(dir, "audit.log")).filter(
          (r) => r.method === "Login.SessionLimit" && r.reason === "oldest session ended",
        );
        assert.deepEqual(
          ended.map((r) => [r.principal, String(r.args).split(" ")[0]]),
          oldest.map((s) => ["user:admin", `session=${s}`]),
        );
        const store = createSqliteStore({ path: join(dir, "state.db"), logger: silentLogger });
        try {
          let stored = 0;
          for await (const kv of rangeAll(store, "panel/sessions/"))
            if (decodeMessage(PanelSessionRecordSchema, kv).user === "admin") stored++;
          assert.equal(stored, cap);
        } finally {
          await store.close();
        }
      },
    );
  });
});
