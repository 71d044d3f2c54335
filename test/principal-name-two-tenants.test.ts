import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import type * as grpc from "@grpc/grpc-js";
import { type ResolvedContext, resolveContext } from "../src/client/index.js";
import { type DaemonProcess, startDevDaemon } from "./helpers/daemon-process.js";
import { bearerContext, callOutcome, devClients } from "./helpers/dev-clients.js";

/**
 * A principal name nobody uses yet (`carol`) can be keyed by acme's admin
 * (its key is confined to acme); later the cluster admin makes carol a
 * globex person. Names are global, so both keys act as "carol" (the audit
 * trail tells them apart by tenant and key id), but they are two callers
 * for what is counted per caller: acme's key opening the 64 watches a
 * caller may hold leaves carol's own globex watches alone (and the same
 * for the per-principal rate limit). Found by an adversarial review of
 * ce6f161, which refused such keys for jwt:, oidc: and user: names.
 */
describe("a principal name squatted by one tenant before another tenant uses it", () => {
  let dir: string;
  let daemon: DaemonProcess;
  let admin: ResolvedContext;
  const channels: grpc.Client[] = [];
  const clients = (ctx: ResolvedContext) => devClients(ctx, channels);

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "dv-squat-"));
    daemon = await startDevDaemon(dir, {
      rateLimit: {
        perSource: { ratePerSecond: 100_000, burst: 100_000 },
        perPrincipal: { ratePerSecond: 100_000, burst: 100_000 },
      },
    });
    admin = resolveContext(join(dir, "hvctl.yaml"), "dev");
  });
  after(() => {
    for (const ch of channels) ch.close();
    daemon?.kill();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  it("acme's key made for 'carol' before carol joined globex does not take carol's watches", async () => {
    const root = clients(admin);
    await root.access.setBinding({
      principal: "acme-admin",
      roles: ["admin", "operator"],
      tenant: "acme",
    });
    const acmeAdmin = clients(
      bearerContext(
        admin,
        (
          await root.access.createApiKey({
            principal: "acme-admin",
            roles: ["admin", "operator"],
            tenant: "acme",
          })
        ).token,
      ),
    );
    // 1. Nobody is called carol yet: acme's admin mints a key in that name.
    const squat = await acmeAdmin.access.createApiKey({
      principal: "carol",
      roles: ["viewer"],
      tenant: "acme",
    });
    // 2. Later the cluster admin makes carol a globex person, with her own key.
    await root.access.setBinding({ principal: "carol", roles: ["viewer"], tenant: "globex" });
    const carol = clients(
      bearerContext(
        admin,
        (
          await root.access.createApiKey({
            principal: "carol",
            roles: ["viewer"],
            tenant: "globex",
          })
        ).token,
      ),
    );
    // 3. acme keeps using its key: acting as carol, it opens the 64 watches carol is allowed.
    const asCarolFromAcme = clients(bearerContext(admin, squat.token));
    const who = await callOutcome(asCarolFromAcme.access.whoAmI({}));
    const stop = new AbortController();
    try {
      if (who.code === 0)
        for (let i = 0; i < 64; i++) {
          const s = asCarolFromAcme.watch.watchVms({}, { signal: stop.signal });
          void (async () => {
            try {
              for await (const _ of s) {
                // keep it open
              }
            } catch {
              // refused or aborted at the end
            }
          })();
        }
      await sleep(2000);
      // 4. carol, in globex, opens her first watch.
      const mine = new AbortController();
      const got = await callOutcome(
        (async () => {
          for await (const _ of carol.watch.watchVms({}, { signal: mine.signal })) {
            mine.abort();
            return;
          }
        })().catch((e: { code?: number }) => {
          if (e.code === 1) return; // our own abort after the first event
          throw e;
        }),
      );
      assert.deepEqual(
        got,
        { code: 0, reason: "" },
        `acme's key made for 'carol' before she existed (whoAmI from acme: ${JSON.stringify(who)}) ` +
          "still acts as her after she joined globex, and holds her watch quota",
      );
    } finally {
      stop.abort();
    }
  });
});
