import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { request } from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";
import { createServiceClient } from "../src/client/index.js";
import { AccessService } from "../src/gen/debvisor/v1/access_pb.js";
import { AuditService } from "../src/gen/debvisor/v1/audit_pb.js";
import { NodeService } from "../src/gen/debvisor/v1/node_pb.js";
import { VmService } from "../src/gen/debvisor/v1/vm_pb.js";
import { type DaemonProcess, startDevDaemon } from "./helpers/daemon-process.js";
import { eventually } from "./helpers/eventually.js";
import { testChannel } from "./helpers/grpc-client.js";
import { devCa, type PanelBrowser, panelBrowser } from "./helpers/panel-client.js";

const CAROL_PASSWORD = "carol-has-a-long-password";

/** The code a Connect call failed with, or "OK". */
async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return "OK";
  } catch (err) {
    assert.ok(err instanceof ConnectError, String(err));
    return Code[err.code];
  }
}

describe("web panel: the same API, security and audit as gRPC", () => {
  let dir: string;
  let daemon: DaemonProcess;
  let url: string;
  let ca: string;
  let admin: PanelBrowser;
  const channels: grpc.Client[] = [];
  const mtls = () => {
    const ch = testChannel(daemon.grpcAddress, {
      caPem: ca,
      certPem: readFileSync(join(dir, "pki", "admin.crt"), "utf8"),
      keyPem: readFileSync(join(dir, "pki", "admin.key"), "utf8"),
    });
    channels.push(ch);
    return ch;
  };
  const login = async (user: string, password: string) => {
    const b = panelBrowser(url, ca);
    const r = await b.auth("login", { user, password });
    assert.equal(r.status, 200, JSON.stringify(r.json));
    return b;
  };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "dv-panel-"));
    daemon = await startDevDaemon(dir, {
      // Sign-in throttling has its own test (login-throttle.test.ts); here it must not interfere.
      panel: {
        listen: "127.0.0.1:0",
        loginPerAddress: { ratePerSecond: 10, burst: 1000 },
        loginPerAccount: { ratePerSecond: 10, burst: 1000 },
      },
      // Every caller here is 127.0.0.1: the address lockout would join the tests together.
      auth: { lockout: { maxFailures: 1000 } },
      rbac: {
        bindings: [
          { principal: "user:carol", roles: ["viewer"] },
          { principal: "user:acme-ann", roles: ["viewer"], tenant: "acme" },
        ],
      },
    });
    const serving = daemon.logs.find((l) => l.msg === "serving");
    url = String(serving?.panelUrl);
    ca = devCa(dir);
    admin = await login("admin", readFileSync(join(dir, "panel-admin-password"), "utf8").trim());
    for (const user of ["carol", "acme-ann"]) {
      const r = await admin.auth("users", {
        action: "set-password",
        user,
        password: CAROL_PASSWORD,
      });
      assert.equal(r.status, 200, JSON.stringify(r.json));
    }
  });
  after(() => {
    for (const ch of channels) ch.close();
    daemon?.kill();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  it("refuses over the panel what it refuses over gRPC, for the same principal", async () => {
    const access = createServiceClient(AccessService, mtls());
    const { token } = await access.createApiKey({ principal: "user:carol", roles: ["viewer"] });
    const md = new grpc.Metadata();
    md.set("authorization", `Bearer ${token}`);
    // No client certificate on this channel: the API key is the only credential.
    const plain = testChannel(daemon.grpcAddress, { caPem: ca });
    channels.push(plain);
    const viaGrpc = createServiceClient(NodeService, plain);
    const grpcCode = async (p: Promise<unknown>) =>
      p.then(
        () => "OK",
        (e: grpc.ServiceError) => grpc.status[e.code],
      );
    const carol = (await login("carol", CAROL_PASSWORD)).client(NodeService);
    const cordon = { id: { id: "node-01" }, reason: "test" };
    assert.equal(
      await grpcCode(viaGrpc.cordonNode(cordon, { metadata: md } as never)),
      "PERMISSION_DENIED",
    );
    assert.equal(await codeOf(carol.cordonNode(cordon)), "PermissionDenied");
    // What gRPC allows, the panel allows.
    assert.equal(await grpcCode(viaGrpc.listNodes({}, { metadata: md } as never)), "OK");
    assert.equal((await carol.listNodes({})).nodes.length, 3);
  });

  it("audits panel calls and sign-ins like any other call", async () => {
    const carol = (await login("carol", CAROL_PASSWORD)).client(NodeService);
    await codeOf(carol.cordonNode({ id: { id: "node-02" }, reason: "audit me" }));
    const audit = admin.client(AuditService);
    const records = (
      await audit.listAuditRecords({ filter: { principal: "user:carol" }, pageSize: 200 })
    ).records;
    const denied = records.find((r) => r.method === "CordonNode" && r.args.includes("node-02"));
    assert.ok(denied, JSON.stringify(records.map((r) => [r.method, r.args])));
    assert.equal(denied.decision, "deny");
    assert.equal(denied.authMethod, "jwt");
    assert.ok(
      records.some((r) => r.event === "panel.auth" && r.method === "Login" && r.code === "OK"),
    );
    // Neither the password nor a token ever reaches the trail.
    assert.ok(
      !JSON.stringify(records, (_k, v) => (typeof v === "bigint" ? String(v) : v)).includes(
        CAROL_PASSWORD,
      ),
    );
  });

  it("shows a tenant user only its tenant's VMs and not-found for another's", async () => {
    const ann = (await login("acme-ann", CAROL_PASSWORD)).client(VmService);
    const mine = (await ann.listVms({ pageSize: 500 })).vms;
    assert.ok(mine.length > 0);
    assert.ok(mine.every((v) => v.tenant === "acme"));
    const all = (await admin.client(VmService).listVms({ pageSize: 500 })).vms;
    const other = all.find((v) => v.tenant !== "acme");
    assert.ok(other);
    assert.equal(await codeOf(ann.getVm({ vmId: other.id })), "NotFound");
  });

  it("tells a tenant's user its tenant in /auth/me, as WhoAmI does", async () => {
    const ann = await login("acme-ann", CAROL_PASSWORD);
    const who = await ann.client(AccessService).whoAmI({});
    assert.equal(who.tenant, "acme");
    const me = await ann.auth("me");
    assert.deepEqual(me.json, { principal: "user:acme-ann", tenant: "acme", manageUsers: false });
    const carol = await login("carol", CAROL_PASSWORD);
    assert.deepEqual((await carol.auth("me")).json, {
      principal: "user:carol",
      tenant: "",
      manageUsers: false,
    });
  });

  it("answers a request it cannot decode as gRPC does: REQUEST_MALFORMED, never the decoder's text", async () => {
    const origin = url.replace(/\/$/, "");
    const cookie = [...admin.cookies].map(([k, v]) => `${k}=${v}`).join("; ");
    const post = (path: string, body: Buffer, contentType: string) =>
      new Promise<{ status: number; reason: string; requestId: string; text: string }>(
        (resolve, reject) => {
          const req = request(
            `${origin}/rpc/${path}`,
            {
              method: "POST",
              ca,
              servername: "localhost",
              headers: { origin, "x-debvisor-csrf": "1", "content-type": contentType, cookie },
            },
            (res) => {
              const chunks: Buffer[] = [];
              res.on("data", (d: Buffer) => chunks.push(d));
              res.on("end", () =>
                resolve({
                  status: res.statusCode ?? 0,
                  reason: String(res.headers["debvisor-error-reason"] ?? ""),
                  requestId: String(res.headers["x-request-id"] ?? ""),
                  text: Buffer.concat(chunks).toString("latin1"),
                }),
              );
            },
          );
          req.on("error", reject);
          req.end(body);
        },
      );
    /** One Connect envelope (flags 0) around `payload`, as a stream's request. */
    const envelope = (payload: Buffer) => {
      const prefix = Buffer.alloc(5);
      prefix.writeUInt32BE(payload.length, 1);
      return Buffer.concat([prefix, payload]);
    };
    const LIBRARY_TEXT =
      /cannot decode|parse binary|premature|JSON|debvisor\.v1\.|expected|position/;
    const GARBAGE = Buffer.from([0xff, 0xff]);
    for (const [body, type] of [
      [Buffer.from("{bad"), "application/json"],
      [Buffer.from('{"vmId": 5}'), "application/json"],
      [GARBAGE, "application/proto"],
    ] as const) {
      const r = await post("debvisor.v1.VmService/GetVm", body, type);
      assert.equal(r.status, 400, `${type} ${body}: ${r.text}`);
      assert.equal(r.reason, "REQUEST_MALFORMED");
      assert.match(r.requestId, /^[0-9a-f-]{36}$/);
      assert.deepEqual(JSON.parse(r.text), {
        code: "invalid_argument",
        message: "request could not be decoded",
      });
    }
    for (const [body, type] of [
      [Buffer.from("{bad"), "application/connect+json"],
      [GARBAGE, "application/connect+proto"],
    ] as const) {
      const r = await post("debvisor.v1.WatchService/WatchVms", envelope(body), type);
      assert.equal(r.status, 200);
      assert.ok(!LIBRARY_TEXT.test(r.text), `${type}: ${r.text}`);
      assert.match(r.text, /"message":"request could not be decoded"/);
      assert.match(r.text, /"debvisor-error-reason":\["REQUEST_MALFORMED"\]/);
    }
    // gRPC-Web, which the same router serves: the status rides in a trailer frame.
    for (const [body, type] of [
      [GARBAGE, "application/grpc-web+proto"],
      [Buffer.from('{"vmId": 5}'), "application/grpc-web+json"],
    ] as const) {
      const r = await post("debvisor.v1.VmService/GetVm", envelope(body), type);
      const trailer = decodeURIComponent(r.text);
      assert.ok(!LIBRARY_TEXT.test(trailer), `${type}: ${trailer}`);
      assert.match(trailer, /grpc-status: 3\r\n/);
      assert.match(trailer, /grpc-message: request could not be decoded/);
      assert.match(trailer, /debvisor-error-reason: REQUEST_MALFORMED/);
    }
    // The gRPC form says the same of the same bytes.
    const ch = mtls();
    const grpcAnswer = await new Promise<grpc.ServiceError | null>((resolve) =>
      ch.makeUnaryRequest(
        "/debvisor.v1.VmService/GetVm",
        (b: Buffer) => b,
        (b: Buffer) => b,
        GARBAGE,
        (err) => resolve(err),
      ),
    );
    assert.equal(grpcAnswer?.code, grpc.status.INVALID_ARGUMENT);
    assert.equal(grpcAnswer?.details, "request could not be decoded");
  });

  it("refuses calls and sign-ins from another origin or without the panel header", async () => {
    const b = panelBrowser(url, ca);
    const evil = await b.auth(
      "login",
      { user: "carol", password: CAROL_PASSWORD },
      { origin: "https://evil.example" },
    );
    assert.equal(evil.status, 403);
    assert.equal(evil.json.reason, "PANEL_REQUEST_REFUSED");
    assert.equal(b.cookies.size, 0);
    const nodes = admin.client(NodeService, { origin: "https://evil.example" });
    assert.equal(await codeOf(nodes.listNodes({})), "PermissionDenied");
    const noHeader = admin.client(NodeService, { "x-debvisor-csrf": "0" });
    assert.equal(await codeOf(noHeader.listNodes({})), "PermissionDenied");
    const cordoned = (await admin.client(NodeService).getNode({ id: { id: "node-03" } })).summary
      ?.cordoned;
    assert.equal(await codeOf(nodes.cordonNode({ id: { id: "node-03" } })), "PermissionDenied");
    assert.equal(
      (await admin.client(NodeService).getNode({ id: { id: "node-03" } })).summary?.cordoned,
      cordoned,
    );
  });

  it("keeps the session when two tabs of one browser refresh at once with the same token", async () => {
    const b = await login("carol", CAROL_PASSWORD);
    const first = b.cookies.get("__Host-dv_refresh") as string;
    const both = await Promise.all([b.auth("refresh", {}), b.auth("refresh", {})]);
    assert.deepEqual(
      both.map((r) => r.status),
      [200, 200],
      JSON.stringify(both.map((r) => r.json)),
    );
    // The jar holds the one successor; the session goes on, calls and refreshes alike.
    assert.notEqual(b.cookies.get("__Host-dv_refresh"), first);
    assert.equal(await codeOf(b.client(NodeService).listNodes({})), "OK");
    assert.equal((await b.auth("refresh", {})).status, 200);
    assert.equal(await codeOf(b.client(NodeService).listNodes({})), "OK");
  });

  it("ends the whole session when a rotated refresh token comes back", async () => {
    const b = await login("carol", CAROL_PASSWORD);
    const stolen = b.cookies.get("__Host-dv_refresh") as string;
    // Rotated twice: the stolen token is no longer the one just rotated away (its grace is
    // for two tabs refreshing at once; past it, src/panel/panel-sessions.test.ts).
    assert.equal((await b.auth("refresh", {})).status, 200);
    assert.equal((await b.auth("refresh", {})).status, 200);
    assert.notEqual(b.cookies.get("__Host-dv_refresh"), stolen);
    const nodes = b.client(NodeService);
    assert.equal(await codeOf(nodes.listNodes({})), "OK");
    // The thief replays the old token: refused, and the owner's session ends too.
    const thief = panelBrowser(url, ca);
    thief.cookies.set("__Host-dv_refresh", stolen);
    const replay = await thief.auth("refresh", {});
    assert.equal(replay.status, 401);
    assert.equal(await codeOf(nodes.listNodes({})), "Unauthenticated");
    assert.equal((await b.auth("refresh", {})).status, 401);
  });

  it("ends a session and its open streams at once on sign-out", async () => {
    const b = await login("admin", readFileSync(join(dir, "panel-admin-password"), "utf8").trim());
    const stream = b.client(AuditService).followAuditRecords({ backlog: 0 });
    let delivered = false;
    const ended = (async () => {
      try {
        for await (const _ of stream) {
          // records may arrive; the stream must still end
          delivered = true;
        }
        return "ended without error";
      } catch (err) {
        return err instanceof ConnectError ? Code[err.code] : String(err);
      }
    })();
    // The stream is open once it delivers the record of a call made meanwhile.
    await eventually(async () => {
      await b.client(NodeService).listNodes({});
      assert.ok(delivered, "the followed stream delivered no record yet");
    });
    const access = b.cookies.get("__Host-dv_access") as string;
    assert.equal((await b.auth("logout", {})).status, 200);
    const started = Date.now();
    assert.equal(await ended, "Unauthenticated");
    // "At once": well before the 5-minute access token's exp or the 30 s session recheck,
    // with room for a loaded machine.
    const tookMs = Date.now() - started;
    assert.ok(tookMs < 10_000, `the stream ended ${tookMs} ms after sign-out`);
    // The access token, even if kept, no longer works.
    b.cookies.set("__Host-dv_access", access);
    assert.equal(await codeOf(b.client(NodeService).listNodes({})), "Unauthenticated");
  });

  it("signs out only the session whose token the request holds, not one it merely names", async () => {
    const carol = await login("carol", CAROL_PASSWORD);
    const nodes = carol.client(NodeService);
    // A session id is no secret (audit records name it); it is the first part of the refresh token.
    const sid = (carol.cookies.get("__Host-dv_refresh") as string).split(".")[0] as string;
    const [header, payload, signature] = (carol.cookies.get("__Host-dv_access") as string).split(
      ".",
    );
    const stranger = panelBrowser(url, ca);
    for (const cookie of [
      ["__Host-dv_refresh", `${sid}.${"A".repeat(43)}`],
      ["__Host-dv_access", `${header}.${payload}.${"A".repeat(signature?.length ?? 86)}`],
    ] as const) {
      stranger.cookies.clear();
      stranger.cookies.set(cookie[0], cookie[1]);
      assert.equal((await stranger.auth("logout", {})).status, 200);
      assert.equal(await codeOf(nodes.listNodes({})), "OK", `${cookie[0]} with a wrong secret`);
    }
    // Her own cookies do end it.
    assert.equal((await carol.auth("logout", {})).status, 200);
    carol.cookies.set("__Host-dv_access", `${header}.${payload}.${signature}`);
    assert.equal(await codeOf(nodes.listNodes({})), "Unauthenticated");
  });

  it("ends a user's sessions at once when an admin revokes them, and only an admin may", async () => {
    const b = await login("carol", CAROL_PASSWORD);
    const nodes = b.client(NodeService);
    assert.equal(await codeOf(nodes.listNodes({})), "OK");
    const denied = await b.auth("users", { action: "end-sessions", user: "carol" });
    assert.equal(denied.status, 403, "carol is no admin");
    const r = await admin.auth("users", { action: "end-sessions", user: "carol" });
    assert.equal(r.status, 200);
    assert.ok(Number(r.json.sessionsEnded) >= 1);
    assert.equal(await codeOf(nodes.listNodes({})), "Unauthenticated");
    assert.equal((await b.auth("refresh", {})).status, 401);
    const audit = admin.client(AuditService);
    const records = (await audit.listAuditRecords({ filter: { method: "Users.EndSessions" } }))
      .records;
    assert.ok(records.some((x) => x.principal === "user:admin" && x.args.includes("user=carol")));
  });

  it("ends a user's sessions when an admin sets the user's password", async () => {
    // Someone signed in with carol's password (leaked, say); the admin gives her a new one.
    const b = await login("carol", CAROL_PASSWORD);
    const nodes = b.client(NodeService);
    assert.equal(await codeOf(nodes.listNodes({})), "OK");
    const r = await admin.auth("users", {
      action: "set-password",
      user: "carol",
      password: CAROL_PASSWORD,
    });
    assert.equal(r.status, 200);
    assert.ok(Number(r.json.sessionsEnded) >= 1, JSON.stringify(r.json));
    assert.equal(await codeOf(nodes.listNodes({})), "Unauthenticated");
    assert.equal((await b.auth("refresh", {})).status, 401);
    const records = (
      await admin.client(AuditService).listAuditRecords({ filter: { method: "Users.SetPassword" } })
    ).records;
    assert.ok(records.some((x) => /^user=carol sessions=[1-9]/.test(x.args)));
  });

  it("refuses forged and expired cookies and oversize input, changing nothing", async () => {
    const b = await login("carol", CAROL_PASSWORD);
    const real = b.cookies.get("__Host-dv_access") as string;
    const [header, payload] = real.split(".");
    const claims = JSON.parse(Buffer.from(payload as string, "base64url").toString());
    // The same session, claiming to be admin: the signature no longer matches.
    const forged = Buffer.from(JSON.stringify({ ...claims, sub: "user:admin" })).toString(
      "base64url",
    );
    b.cookies.set("__Host-dv_access", `${header}.${forged}.${real.split(".")[2]}`);
    assert.equal(
      await codeOf(b.client(NodeService).cordonNode({ id: { id: "node-01" } })),
      "Unauthenticated",
    );
    // Expired: a token whose exp passed (claims rewritten, so also unsigned): refused the same way.
    const expired = Buffer.from(JSON.stringify({ ...claims, exp: 1 })).toString("base64url");
    b.cookies.set("__Host-dv_access", `${header}.${expired}.${real.split(".")[2]}`);
    assert.equal(await codeOf(b.client(NodeService).listNodes({})), "Unauthenticated");
    b.cookies.set("__Host-dv_access", "garbage");
    assert.equal(await codeOf(b.client(NodeService).listNodes({})), "Unauthenticated");
    // Oversize sign-in and user names: refused with a clear answer, no user made.
    const big = await admin.auth("users", {
      action: "set-password",
      user: "x".repeat(5000),
      password: "p".repeat(20),
    });
    assert.equal(big.status, 400);
    // A body past 8 KiB: refused as such, not read as no body at all.
    const huge = await admin.auth("users", {
      action: "set-password",
      user: "dave",
      password: "p".repeat(9000),
    });
    assert.deepEqual([huge.status, huge.json.message], [413, "request body larger than 8 KiB"]);
    const long = await admin.auth("users", {
      action: "set-password",
      user: "dave",
      password: "p".repeat(300),
    });
    assert.equal(long.status, 400);
    assert.match(String(long.json.message), /password: at most 256/);
    const users = (await admin.auth("users")).json.users as { name: string }[];
    assert.ok(!users.some((u) => u.name === "dave" || u.name.startsWith("xxx")));
    const node = await admin.client(NodeService).getNode({ id: { id: "node-01" } });
    assert.equal(node.summary?.cordoned, false);
  });

  it("refuses a wrong password with one message and lets the right one in", async () => {
    const b = panelBrowser(url, ca);
    const wrong = await b.auth("login", { user: "carol", password: "not-her-password-at-all" });
    const nobody = await b.auth("login", { user: "nobody", password: "not-her-password-at-all" });
    assert.equal(wrong.status, 401);
    assert.deepEqual(wrong.json, nobody.json);
    assert.equal((await b.auth("login", { user: "carol", password: CAROL_PASSWORD })).status, 200);
  });

  it("answers a sign-in without a password alike for a user who exists and one who does not, and audits it", async () => {
    const b = panelBrowser(url, ca);
    const answers = [];
    for (const user of ["carol", "nobody-at-all"])
      for (const body of [{ user, password: "" }, { user }])
        answers.push({ user, ...(await b.auth("login", body)) });
    for (const a of answers) {
      assert.equal(a.status, 401, `${a.user}: ${JSON.stringify(a.json)}`);
      assert.deepEqual(a.json, { reason: "LOGIN_FAILED", message: "wrong user name or password" });
    }
    assert.ok(!daemon.logs.some((l) => /Password must be specified/.test(JSON.stringify(l))));
    const refused = (
      await createServiceClient(AuditService, mtls()).listAuditRecords({
        filter: { principal: "user:nobody-at-all", method: "Login" },
      })
    ).records;
    assert.equal(refused.length, 2, "each refusal is in the trail");
  });
});
