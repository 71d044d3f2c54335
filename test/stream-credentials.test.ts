import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type * as grpc from "@grpc/grpc-js";
import { type ResolvedContext, resolveContext } from "../src/client/index.js";
import { VmService } from "../src/gen/debvisor/v1/vm_pb.js";
import { WatchService } from "../src/gen/debvisor/v1/watch_pb.js";
import { type DaemonProcess, startDevDaemon } from "./helpers/daemon-process.js";
import { bearerContext, callOutcome, devClients } from "./helpers/dev-clients.js";
import { eventually } from "./helpers/eventually.js";
import { devCa, type PanelBrowser, panelBrowser } from "./helpers/panel-client.js";
import { changeSeenBy, followStream, vmWatchSynced } from "./helpers/stream-follow.js";

const PASSWORD = "streams-have-a-long-password";

/**
 * A stream is authorized when it opens and stays so while it runs (found by
 * a security probe: streams outlived revoked and expired keys, removed
 * bindings and ended panel sessions). Each case opens WatchVms, takes the
 * access away, checks a new call is refused, then changes a VM the watcher
 * could see: the stream must end instead of delivering that change.
 */
describe("long-lived streams end with the access that opened them", () => {
  let dir: string;
  let daemon: DaemonProcess;
  let admin: ResolvedContext;
  let panelUrl: string;
  let ca: string;
  let panelAdmin: PanelBrowser;
  const channels: grpc.Client[] = [];
  const clients = (ctx: ResolvedContext) => devClients(ctx, channels);
  let root: ReturnType<typeof clients>;
  let deliveredAfterLoss: ReturnType<typeof changeSeenBy>;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "dv-stream-access-"));
    daemon = await startDevDaemon(dir, {
      rateLimit: {
        perSource: { ratePerSecond: 100_000, burst: 100_000 },
        perPrincipal: { ratePerSecond: 100_000, burst: 100_000 },
      },
      auth: { lockout: { maxFailures: 1000 } },
      panel: {
        listen: "127.0.0.1:0",
        loginPerAddress: { ratePerSecond: 10, burst: 1000 },
        loginPerAccount: { ratePerSecond: 10, burst: 1000 },
      },
    });
    admin = resolveContext(join(dir, "hvctl.yaml"), "dev");
    root = clients(admin);
    deliveredAfterLoss = changeSeenBy(root.vms, "vm-001", "stream-access");
    panelUrl = String(daemon.logs.find((l) => l.msg === "serving")?.panelUrl);
    ca = devCa(dir);
    panelAdmin = panelBrowser(panelUrl, ca);
    const r = await panelAdmin.auth("login", {
      user: "admin",
      password: readFileSync(join(dir, "panel-admin-password"), "utf8").trim(),
    });
    assert.equal(r.status, 200, JSON.stringify(r.json));
    const vm = await root.vms.getVm({ vmId: "vm-001" });
    assert.equal(vm.tenant, "acme", "the dev world's vm-001 belongs to acme");
  });
  after(() => {
    for (const ch of channels) ch.close();
    daemon?.kill();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  it("ends a revoked API key's WatchVms, UNAUTHENTICATED", async () => {
    const key = await root.access.createApiKey({
      principal: "acme-bot",
      roles: ["viewer"],
      tenant: "acme",
    });
    const bot = clients(bearerContext(admin, key.token));
    const stop = new AbortController();
    const { state, done } = followStream(bot.watch.watchVms({}, { signal: stop.signal }));
    try {
      await vmWatchSynced(state);
      await root.access.revokeApiKey({ id: key.key?.id ?? "" });
      assert.equal(
        (await callOutcome(bot.vms.listVms({}))).code,
        16,
        "a new call with the revoked key is refused",
      );
      const r = await deliveredAfterLoss(state);
      assert.equal(
        r.delivered,
        false,
        `the revoked key's stream delivered a change made after the revocation (ended: ${r.ended})`,
      );
      assert.match(String(r.ended), /^code 16/, "the stream ends UNAUTHENTICATED");
    } finally {
      stop.abort();
      await done;
    }
  });

  it("ends an expired API key's WatchVms", async () => {
    const key = await root.access.createApiKey({
      principal: "acme-shortlived",
      roles: ["viewer"],
      tenant: "acme",
      ttlSeconds: 3n,
    });
    const bot = clients(bearerContext(admin, key.token));
    const stop = new AbortController();
    const { state, done } = followStream(bot.watch.watchVms({}, { signal: stop.signal }));
    try {
      await vmWatchSynced(state);
      await eventually(
        async () => assert.equal((await callOutcome(bot.vms.listVms({}))).code, 16),
        {
          timeoutMs: 10_000,
          intervalMs: 500,
        },
      );
      const r = await deliveredAfterLoss(state);
      assert.equal(
        r.delivered,
        false,
        `the expired key's stream delivered a change made after it expired (ended: ${r.ended})`,
      );
    } finally {
      stop.abort();
      await done;
    }
  });

  it("ends a WatchVms whose caller lost the binding that let it list VMs, PERMISSION_DENIED", async () => {
    // The key's own role (monitor) grants no vm:list: acme's VMs come from the binding alone.
    await root.access.setBinding({ principal: "acme-auditor", roles: ["viewer"], tenant: "acme" });
    const key = await root.access.createApiKey({ principal: "acme-auditor", roles: ["monitor"] });
    const auditor = clients(bearerContext(admin, key.token));
    assert.ok((await auditor.vms.listVms({})).vms.some((v) => v.id === "vm-001"));
    const stop = new AbortController();
    const { state, done } = followStream(auditor.watch.watchVms({}, { signal: stop.signal }));
    try {
      await vmWatchSynced(state);
      await root.access.setBinding({ principal: "acme-auditor", roles: [], tenant: "acme" });
      await eventually(async () =>
        assert.equal((await callOutcome(auditor.vms.listVms({}))).code, 7),
      );
      const r = await deliveredAfterLoss(state);
      assert.equal(
        r.delivered,
        false,
        `the stream delivered acme's change after acme-auditor's binding was removed (ended: ${r.ended})`,
      );
      assert.match(String(r.ended), /^code 7/, "PERMISSION_DENIED: no vm:list left anywhere");
    } finally {
      stop.abort();
      await done;
    }
  });

  it("ends a WatchVms whose caller's access changed but still lists VMs with ACCESS_CHANGED, to be opened again", async () => {
    await root.access.setBinding({ principal: "two-tenants", roles: ["viewer"], tenant: "acme" });
    await root.access.setBinding({ principal: "two-tenants", roles: ["viewer"], tenant: "globex" });
    const key = await root.access.createApiKey({ principal: "two-tenants", roles: ["monitor"] });
    const both = clients(bearerContext(admin, key.token));
    const stop = new AbortController();
    const { state, done } = followStream(both.watch.watchVms({}, { signal: stop.signal }));
    try {
      await vmWatchSynced(state);
      await root.access.setBinding({ principal: "two-tenants", roles: [], tenant: "acme" });
      const r = await deliveredAfterLoss(state);
      assert.equal(r.delivered, false, `acme's change delivered after acme was taken (${r.ended})`);
      assert.match(String(r.ended), /^code 14/, "UNAVAILABLE (ACCESS_CHANGED): open it again");
      // Opened again, it shows what the caller may see now: no acme VM.
      const again = followStream(both.watch.watchVms({}, { signal: stop.signal }));
      await vmWatchSynced(again.state);
      assert.ok(!again.state.events.some((e) => e.vm?.tenant === "acme"), "no acme VM after");
      stop.abort();
      await again.done;
    } finally {
      stop.abort();
      await done;
    }
  });

  it("ends the panel's own WatchVms of a person whose binding was removed", async () => {
    const set = await panelAdmin.auth("users", {
      action: "set-password",
      user: "erin",
      password: PASSWORD,
    });
    assert.equal(set.status, 200, JSON.stringify(set.json));
    await root.access.setBinding({ principal: "user:erin", roles: ["viewer"], tenant: "acme" });
    const erin = panelBrowser(panelUrl, ca);
    assert.equal((await erin.auth("login", { user: "erin", password: PASSWORD })).status, 200);
    const watch = erin.client(WatchService);
    const vms = erin.client(VmService);
    const stop = new AbortController();
    const { state, done } = followStream(watch.watchVms({}, { signal: stop.signal }));
    try {
      await vmWatchSynced(state);
      await root.access.setBinding({ principal: "user:erin", roles: [], tenant: "acme" });
      // A new call of the live session is decided on the bindings in force (panel-oidc.md) ...
      await eventually(async () => {
        const r = await vms.listVms({}).then(
          () => "OK",
          (e: { code?: number }) => String(e.code),
        );
        assert.equal(r, "7");
      });
      // ... but the stream opened before goes on.
      const r = await deliveredAfterLoss(state);
      assert.equal(
        r.delivered,
        false,
        `the panel stream delivered acme's change after user:erin's binding was removed (ended: ${r.ended})`,
      );
    } finally {
      stop.abort();
      await done;
    }
  });

  it("ends the gRPC streams of a panel session an admin ended (opened with its access token)", async () => {
    const set = await panelAdmin.auth("users", {
      action: "set-password",
      user: "dora",
      password: PASSWORD,
    });
    assert.equal(set.status, 200, JSON.stringify(set.json));
    await root.access.setBinding({ principal: "user:dora", roles: ["viewer"], tenant: "acme" });
    const dora = panelBrowser(panelUrl, ca);
    assert.equal((await dora.auth("login", { user: "dora", password: PASSWORD })).status, 200);
    const access = dora.cookies.get("__Host-dv_access") ?? "";
    assert.notEqual(access, "");
    // The same access token the browser holds, presented to the gRPC port (the shared stage takes it).
    const grpcDora = clients(bearerContext(admin, access));
    assert.equal((await callOutcome(grpcDora.vms.listVms({}))).code, 0);
    const stop = new AbortController();
    const { state, done } = followStream(grpcDora.watch.watchVms({}, { signal: stop.signal }));
    try {
      await vmWatchSynced(state);
      const ended = await panelAdmin.auth("users", { action: "end-sessions", user: "dora" });
      assert.equal(ended.status, 200, JSON.stringify(ended.json));
      assert.equal(ended.json.sessionsEnded, 1);
      assert.equal(
        (await callOutcome(grpcDora.vms.listVms({}))).code,
        16,
        "a new call with the ended session's token is refused",
      );
      const r = await deliveredAfterLoss(state);
      assert.equal(
        r.delivered,
        false,
        `the ended session's gRPC stream delivered a later change (ended: ${r.ended})`,
      );
    } finally {
      stop.abort();
      await done;
    }
  });
});
