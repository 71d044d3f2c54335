import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import type * as grpc from "@grpc/grpc-js";
import { exportSPKI, generateKeyPair, SignJWT } from "jose";
import { type ResolvedContext, resolveContext } from "../src/client/index.js";
import type { DrainProgress } from "../src/gen/debvisor/v1/node_pb.js";
import { WatchEventType } from "../src/gen/debvisor/v1/watch_pb.js";
import { type DaemonProcess, startDevDaemon } from "./helpers/daemon-process.js";
import { bearerContext, callOutcome, devClients } from "./helpers/dev-clients.js";
import { eventually } from "./helpers/eventually.js";
import { changeSeenBy, followStream, vmWatchSynced } from "./helpers/stream-follow.js";

const IDP = "https://review-idp.example";

/**
 * The edges of "streams end when the access that opened them is gone",
 * found by an adversarial review: streams that must end (a rotated key's
 * grace, a reload removing a JWT issuer), streams that must not (a drain
 * when its operator is granted something else, a confined key when another
 * tenant's binding changes, a JWT inside its skew), and a watch resumed
 * after its caller's access changed. One dev daemon; the reload case runs last.
 */
describe("streams and the access that opened them", () => {
  let dir: string;
  let daemon: DaemonProcess;
  let admin: ResolvedContext;
  let idpKey: Awaited<ReturnType<typeof generateKeyPair>>["privateKey"];
  const channels: grpc.Client[] = [];
  const clients = (ctx: ResolvedContext) => devClients(ctx, channels);
  let root: ReturnType<typeof clients>;
  let deliveredAfterLoss: ReturnType<typeof changeSeenBy>;
  const config = (withIssuer: boolean) => ({
    rateLimit: {
      perSource: { ratePerSecond: 100_000, burst: 100_000 },
      perPrincipal: { ratePerSecond: 100_000, burst: 100_000 },
    },
    auth: {
      lockout: { maxFailures: 1000 },
      ...(withIssuer
        ? {
            jwt: {
              issuers: [
                {
                  issuer: IDP,
                  algorithms: ["ES256"],
                  publicKeys: [join(dir, "idp.pem")],
                  allowedRoles: ["viewer"],
                },
              ],
            },
          }
        : {}),
    },
  });

  const jwtFor = (sub: string, exp: number) =>
    new SignJWT({ roles: ["viewer"] })
      .setProtectedHeader({ alg: "ES256" })
      .setIssuer(IDP)
      .setSubject(sub)
      .setAudience("debvisor-rpc")
      .setExpirationTime(exp)
      .sign(idpKey);

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "dv-stream-edges-"));
    const idp = await generateKeyPair("ES256", { extractable: true });
    idpKey = idp.privateKey;
    writeFileSync(join(dir, "idp.pem"), await exportSPKI(idp.publicKey));
    daemon = await startDevDaemon(dir, config(true));
    admin = resolveContext(join(dir, "hvctl.yaml"), "dev");
    root = clients(admin);
    deliveredAfterLoss = changeSeenBy(root.vms, "vm-001", "stream-edge");
    assert.equal((await root.vms.getVm({ vmId: "vm-001" })).tenant, "acme");
  });
  after(() => {
    for (const ch of channels) ch.close();
    daemon?.kill();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  it("ends a rotated key's WatchVms at the end of its grace (security.md: 'a rotated key at the end of its grace')", async () => {
    const key = await root.access.createApiKey({
      principal: "rot-bot",
      roles: ["viewer"],
      tenant: "acme",
    });
    const bot = clients(bearerContext(admin, key.token));
    const stop = new AbortController();
    const { state, done } = followStream(bot.watch.watchVms({}, { signal: stop.signal }));
    try {
      await vmWatchSynced(state);
      await root.access.rotateApiKey({ id: key.key?.id ?? "", graceSeconds: 2n });
      await eventually(
        async () => assert.equal((await callOutcome(bot.vms.listVms({}))).code, 16),
        { timeoutMs: 10_000, intervalMs: 250 },
      );
      const r = await deliveredAfterLoss(state);
      assert.equal(
        r.delivered,
        false,
        `the rotated key's stream delivered a change made after its grace ended (ended: ${r.ended})`,
      );
      assert.match(String(r.ended), /^code 16/);
    } finally {
      stop.abort();
      await done;
    }
  });

  it("does not end a tenant-confined key's WatchVms when its principal's binding in another tenant changes", async () => {
    await root.access.setBinding({ principal: "confined", roles: ["viewer"], tenant: "acme" });
    await root.access.setBinding({ principal: "confined", roles: ["viewer"], tenant: "globex" });
    // Confined to acme: its globex binding gives this key nothing, before or after.
    const key = await root.access.createApiKey({
      principal: "confined",
      roles: ["monitor"],
      tenant: "acme",
    });
    const bot = clients(bearerContext(admin, key.token));
    const stop = new AbortController();
    const { state, done } = followStream(bot.watch.watchVms({}, { signal: stop.signal }));
    try {
      await vmWatchSynced(state);
      await root.access.setBinding({ principal: "confined", roles: [], tenant: "globex" });
      const r = await deliveredAfterLoss(state);
      assert.equal(
        r.ended,
        undefined,
        "a change in globex, which this acme-confined key can never use, ended its acme stream",
      );
      assert.equal(r.delivered, true);
    } finally {
      stop.abort();
      await done;
    }
  });

  it("does not stop an operator's DrainNode halfway when the operator is granted something unrelated", async () => {
    const nodes = (await root.nodes.listNodes({})).nodes;
    const counts = await Promise.all(
      nodes.map(async (n) => {
        const id = n.info?.id?.id ?? "";
        return { id, vms: (await root.nodes.getNode({ id: { id } })).vms?.length ?? 0 };
      }),
    );
    counts.sort((a, b) => b.vms - a.vms);
    const victim = counts[0];
    assert.ok(victim !== undefined && victim.vms >= 2, JSON.stringify(counts));
    const key = await root.access.createApiKey({ principal: "drainer", roles: ["operator"] });
    const drainer = clients(bearerContext(admin, key.token));
    const { state, done } = followStream<DrainProgress>(
      drainer.nodes.drainNode({ id: { id: victim.id }, maxParallel: 1, allowDowntime: true }),
    );
    await eventually(() => assert.ok(state.events.length > 0 || state.ended !== undefined));
    // While the first VM moves (the simulation takes 4 s a migration), an admin gives the
    // drainer read access in one tenant: it loses nothing, least of all node:drain.
    await root.access.setBinding({ principal: "drainer", roles: ["viewer"], tenant: "acme" });
    await done;
    const last = state.events.at(-1);
    let left = 0;
    if (state.ended !== "completed") {
      await sleep(6000); // the migration in flight finishes; no other starts
      left = (await root.nodes.getNode({ id: { id: victim.id } })).vms.length;
    }
    assert.equal(
      state.ended,
      "completed",
      `the drain stream ended by a grant it did not need; last progress: ${last?.message}; ` +
        `${left} of ${victim.vms} VMs left on the cordoned ${victim.id}`,
    );
    assert.ok(last?.done, "the drain ran to its end");
  });

  it("keeps a JWT's stream open while the daemon still accepts the token (exp within clockSkewSeconds)", async () => {
    const exp = Math.floor(Date.now() / 1000) + 1;
    const token = await jwtFor("skewed", exp);
    await sleep(exp * 1000 - Date.now() + 1500);
    const c = clients(bearerContext(admin, token));
    assert.equal(
      (await callOutcome(c.vms.listVms({}))).code,
      0,
      "a unary call with the token is accepted (within the 60 s skew)",
    );
    const stop = new AbortController();
    const { state, done } = followStream(c.watch.watchVms({}, { signal: stop.signal }));
    try {
      await sleep(1500);
      assert.equal(
        state.ended,
        undefined,
        "the daemon accepted the token for the call, then ended its stream at once",
      );
    } finally {
      stop.abort();
      await done;
    }
  });

  it("after ACCESS_CHANGED, a watch reopened the panel's way (from its last SYNCED revision) drops what the caller may no longer see", async () => {
    await root.access.setBinding({ principal: "resumer", roles: ["viewer"], tenant: "acme" });
    await root.access.setBinding({ principal: "resumer", roles: ["viewer"], tenant: "globex" });
    const key = await root.access.createApiKey({ principal: "resumer", roles: ["monitor"] });
    const c = clients(bearerContext(admin, key.token));
    const stop = new AbortController();
    const first = followStream(c.watch.watchVms({}, { signal: stop.signal }));
    try {
      await vmWatchSynced(first.state);
      const revision =
        first.state.events.findLast((e) => e.header?.type === WatchEventType.SYNCED)?.header
          ?.revision ?? "";
      assert.ok(
        first.state.events.some((e) => e.vm?.tenant === "acme"),
        "it saw acme's VMs",
      );
      await root.access.setBinding({ principal: "resumer", roles: [], tenant: "acme" });
      await eventually(() => assert.match(String(first.state.ended), /^code 14/));
      // web/src/api.ts watchList: reopen from the last SYNCED revision, keep the list on `resumed`.
      const again = followStream(
        c.watch.watchVms({ from: { sinceRevision: revision } }, { signal: stop.signal }),
      );
      await vmWatchSynced(again.state);
      const sync = again.state.events.find((e) => e.header?.type === WatchEventType.SYNCED);
      const deletedAcme = again.state.events.filter(
        (e) => e.header?.type === WatchEventType.DELETED && e.vm?.tenant === "acme",
      ).length;
      assert.ok(
        sync?.header?.resumed === false || deletedAcme > 0,
        `resumed=${sync?.header?.resumed} with ${deletedAcme} DELETED for acme VMs: a client that ` +
          "resumes keeps showing acme's VMs it may no longer see",
      );
      stop.abort();
      await again.done;
    } finally {
      stop.abort();
      await first.done;
    }
  });

  it("refuses a tenant admin a fresh key for another source's person by rotation as by creation", async () => {
    const person = "user:erin-r";
    await root.access.setBinding({
      principal: "t-admin",
      roles: ["admin", "operator"],
      tenant: "acme",
    });
    const tKey = await root.access.createApiKey({
      principal: "t-admin",
      roles: ["admin"],
      tenant: "acme",
    });
    const tenantAdmin = clients(bearerContext(admin, tKey.token));
    // Creation is refused (the rule of ce6f161) ...
    const made = await callOutcome(
      tenantAdmin.access.createApiKey({ principal: person, roles: ["viewer"], tenant: "acme" }),
    );
    assert.equal(made.code, 7, "creation is refused to the tenant admin");
    // ... but a key a cluster admin made for the person in acme (or one made before the fix)
    // can be rotated by the tenant admin, who is handed a working token in the person's name.
    const existing = await root.access.createApiKey({
      principal: person,
      roles: ["viewer"],
      tenant: "acme",
    });
    const rotated = await tenantAdmin.access
      .rotateApiKey({ id: existing.key?.id ?? "", graceSeconds: 1n })
      .then(
        (r) => r.token,
        (e: { code?: number }) => `refused ${e.code}`,
      );
    let actsAs = "";
    if (!rotated.startsWith("refused"))
      actsAs = (await clients(bearerContext(admin, rotated)).access.whoAmI({})).principal;
    assert.match(
      rotated,
      /^refused 7/,
      `the tenant admin rotated ${person}'s key and holds a token acting as ${actsAs}`,
    );
  });

  it("(held) ends a stream with a client message free of the internal cause", async () => {
    const key = await root.access.createApiKey({ principal: "msg-bot", roles: ["viewer"] });
    const bot = clients(bearerContext(admin, key.token));
    const stop = new AbortController();
    const { state, done } = followStream(bot.watch.watchVms({}, { signal: stop.signal }));
    try {
      await vmWatchSynced(state);
      await root.access.revokeApiKey({ id: key.key?.id ?? "" });
      await eventually(() => state.ended !== undefined);
      assert.match(String(state.ended), /^code 16/);
      assert.doesNotMatch(String(state.ended), /during the stream|revoked|key/i);
    } finally {
      stop.abort();
      await done;
    }
  });

  it("ends a JWT's stream when a config reload removes its issuer (a new call is refused)", async () => {
    const token = await jwtFor("reloaded", Math.floor(Date.now() / 1000) + 3600);
    const c = clients(bearerContext(admin, token));
    assert.equal((await callOutcome(c.vms.listVms({}))).code, 0);
    const stop = new AbortController();
    const { state, done } = followStream(c.watch.watchVms({}, { signal: stop.signal }));
    try {
      await vmWatchSynced(state);
      writeFileSync(join(dir, "rpcd.yaml"), JSON.stringify(config(false)));
      const before = daemon.logs.length;
      daemon.proc.kill("SIGHUP");
      await eventually(() =>
        assert.ok(
          daemon.logs.slice(before).some((l) => l.msg === "configuration and TLS files reloaded"),
          JSON.stringify(daemon.logs.slice(before)),
        ),
      );
      assert.equal(
        (await callOutcome(c.vms.listVms({}))).code,
        16,
        "a new call with the removed issuer's token is refused",
      );
      const r = await deliveredAfterLoss(state);
      assert.equal(
        r.delivered,
        false,
        `the stream of a token whose issuer was removed delivered a later change (ended: ${r.ended})`,
      );
    } finally {
      stop.abort();
      await done;
    }
  });
});
