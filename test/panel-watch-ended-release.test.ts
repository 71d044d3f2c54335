// A stream the security stages end (ACCESS_CHANGED, or UNAUTHENTICATED at an
// access token's exp) on the panel's Connect transport must release its
// handler: its watch, its view of the list and its slot in the watch quota.
// The Connect adapter stopped listening for its context's abort before
// Connect aborted it, so the handler's signal never aborted and the watch
// lived on until something it showed changed: a panel user was locked out of
// watching after 64 access changes (or token expiries). Found by an
// adversarial review; the gRPC run is the control. The daemon here allows 4
// watches per principal (limits.watchesPerPrincipal), so 6 cycles show a leak.
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type * as grpc from "@grpc/grpc-js";
import { type ResolvedContext, resolveContext } from "../src/client/index.js";
import { WatchEventType, WatchService } from "../src/gen/debvisor/v1/watch_pb.js";
import { type DaemonProcess, startDevDaemon } from "./helpers/daemon-process.js";
import { bearerContext, devClients } from "./helpers/dev-clients.js";
import { eventually } from "./helpers/eventually.js";
import { devCa, panelBrowser } from "./helpers/panel-client.js";
import { followStream } from "./helpers/stream-follow.js";

const PASSWORD = "quinn-long-password-for-tests";
/** The daemon's limits.watchesPerPrincipal here; each cycle runs this many watches and 2 more. */
const WATCHES = 4;

describe("streams ended by the security stages on the panel's Connect transport", () => {
  let dir: string;
  let daemon: DaemonProcess;
  let admin: ResolvedContext;
  const channels: grpc.Client[] = [];
  let panelUrl: string;
  let ca: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "dv-connect-ended-"));
    daemon = await startDevDaemon(dir, {
      rateLimit: {
        perSource: { ratePerSecond: 100_000, burst: 100_000 },
        perPrincipal: { ratePerSecond: 100_000, burst: 100_000 },
      },
      auth: { lockout: { maxFailures: 1000 } },
      limits: { watchesPerPrincipal: WATCHES },
      panel: {
        listen: "127.0.0.1:0",
        loginPerAddress: { ratePerSecond: 10, burst: 1000 },
        loginPerAccount: { ratePerSecond: 10, burst: 1000 },
      },
    });
    admin = resolveContext(join(dir, "hvctl.yaml"), "dev");
    panelUrl = String(daemon.logs.find((l) => l.msg === "serving")?.panelUrl);
    ca = devCa(dir);
  });
  after(() => {
    for (const ch of channels) ch.close();
    daemon?.kill();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  /**
   * Opens a watch of `principal`'s WATCHES + 2 times, each time changing its
   * binding (it keeps vm:list and migration:list) so that the watch ends
   * ACCESS_CHANGED; every watch must open: an ended one gave its slot back.
   * Then the quota itself: WATCHES watches open at once, one more is refused.
   */
  const cycle = async (
    open: (signal: AbortSignal) => AsyncIterable<{ header?: { type: WatchEventType } }>,
    principal: string,
    why: string,
  ) => {
    const root = devClients(admin, channels);
    for (let i = 0; i < WATCHES + 2; i++) {
      const stop = new AbortController();
      const { state, done } = followStream(open(stop.signal));
      try {
        await eventually(
          () =>
            assert.ok(
              state.ended !== undefined ||
                state.events.some((e) => e.header?.type === WatchEventType.SYNCED),
            ),
          { timeoutMs: 10_000 },
        );
        assert.equal(state.ended, undefined, `watch ${i + 1} of ${principal} refused: ${why}`);
        await root.access.setBinding({
          principal,
          roles: i % 2 === 0 ? ["viewer", "monitor"] : ["viewer"],
          tenant: "acme",
        });
        await eventually(() => assert.ok(state.ended !== undefined), { timeoutMs: 10_000 });
        assert.match(String(state.ended), /^code 14/, "ended ACCESS_CHANGED (UNAVAILABLE)");
      } finally {
        stop.abort();
        await done;
      }
    }
    const stop = new AbortController();
    const held = Array.from({ length: WATCHES + 1 }, () => followStream(open(stop.signal)));
    try {
      const settled = (f: (typeof held)[number]) =>
        f.state.ended !== undefined ||
        f.state.events.some((e) => e.header?.type === WatchEventType.SYNCED);
      await eventually(() => assert.ok(held.every(settled)), { timeoutMs: 10_000 });
      const refused = held.filter((f) => f.state.ended !== undefined).map((f) => f.state.ended);
      assert.equal(refused.length, 1, `one of ${WATCHES + 1} watches refused: ${refused}`);
      assert.match(String(refused[0]), /^code 8/, "RESOURCE_EXHAUSTED");
    } finally {
      stop.abort();
      await Promise.all(held.map((f) => f.done));
    }
  };

  it("releases a watch ended ACCESS_CHANGED: a panel user is not locked out of watching by its access changes", async () => {
    const root = devClients(admin, channels);
    const panelAdmin = panelBrowser(panelUrl, ca);
    const login = await panelAdmin.auth("login", {
      user: "admin",
      password: readFileSync(join(dir, "panel-admin-password"), "utf8").trim(),
    });
    assert.equal(login.status, 200, JSON.stringify(login.json));
    const set = await panelAdmin.auth("users", {
      action: "set-password",
      user: "quinn",
      password: PASSWORD,
    });
    assert.equal(set.status, 200, JSON.stringify(set.json));
    await root.access.setBinding({ principal: "user:quinn", roles: ["viewer"], tenant: "acme" });
    const quinn = panelBrowser(panelUrl, ca);
    assert.equal((await quinn.auth("login", { user: "quinn", password: PASSWORD })).status, 200);
    const watch = quinn.client(WatchService);

    await cycle(
      (signal) => watch.watchMigrations({}, { signal }),
      "user:quinn",
      "the ended panel streams still hold their quota slots",
    );
  });
  it("(control) the same cycle over gRPC releases each ended watch", async () => {
    const root = devClients(admin, channels);
    await root.access.setBinding({ principal: "grpc-quinn", roles: ["viewer"], tenant: "acme" });
    const key = await root.access.createApiKey({
      principal: "grpc-quinn",
      roles: ["viewer"],
      tenant: "acme",
    });
    const watch = devClients(bearerContext(admin, key.token), channels).watch;
    await cycle((signal) => watch.watchMigrations({}, { signal }), "grpc-quinn", "gRPC");
  });
});
