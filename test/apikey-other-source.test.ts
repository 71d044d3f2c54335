import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import type * as grpc from "@grpc/grpc-js";
import { exportSPKI, generateKeyPair, SignJWT } from "jose";
import { type ResolvedContext, resolveContext } from "../src/client/index.js";
import { type DaemonProcess, startDevDaemon } from "./helpers/daemon-process.js";
import { bearerContext, callOutcome, devClients } from "./helpers/dev-clients.js";

const GLOBEX_IDP = "https://globex-idp.example";
const BOB = `jwt:${GLOBEX_IDP}:bob`;

/**
 * A tenant federated through its own JWT issuer (the set-up security.md
 * recommends: tenantClaim, allowedTenants, allowedRoles) gets its people's
 * roles from their tokens, so they have no bindings. Another tenant's admin
 * minted API keys in their names (found by a security probe): audited as
 * them, and holding their watch quota. Such keys are now refused.
 */
describe("API keys named after another source's people", () => {
  let dir: string;
  let daemon: DaemonProcess;
  let admin: ResolvedContext;
  let bobToken: string;
  const channels: grpc.Client[] = [];
  const clients = (ctx: ResolvedContext) => devClients(ctx, channels);

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "dv-key-source-jwt-"));
    const idp = await generateKeyPair("ES256", { extractable: true });
    writeFileSync(join(dir, "globex-idp.pem"), await exportSPKI(idp.publicKey));
    daemon = await startDevDaemon(dir, {
      rateLimit: {
        perSource: { ratePerSecond: 100_000, burst: 100_000 },
        perPrincipal: { ratePerSecond: 100_000, burst: 100_000 },
      },
      auth: {
        jwt: {
          issuers: [
            {
              issuer: GLOBEX_IDP,
              algorithms: ["ES256"],
              publicKeys: [join(dir, "globex-idp.pem")],
              tenantClaim: "tenant",
              allowedTenants: ["globex"],
              allowedRoles: ["viewer"],
            },
          ],
        },
      },
    });
    admin = resolveContext(join(dir, "hvctl.yaml"), "dev");
    bobToken = await new SignJWT({ roles: ["viewer"], tenant: "globex" })
      .setProtectedHeader({ alg: "ES256" })
      .setIssuer(GLOBEX_IDP)
      .setSubject("bob")
      .setAudience("debvisor-rpc")
      .setExpirationTime("1h")
      .sign(idp.privateKey);
  });
  after(() => {
    for (const ch of channels) ch.close();
    daemon?.kill();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  it("are refused to another tenant's admin, so it cannot be audited as globex's bob nor take his watches", async () => {
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
    const bob = clients(bearerContext(admin, bobToken));
    const me = await bob.access.whoAmI({});
    assert.equal(me.principal, BOB, "bob is globex's, through his issuer");

    // acme's admin mints a key whose principal is globex's bob.
    const minted = await callOutcome(
      acmeAdmin.access.createApiKey({ principal: BOB, roles: ["viewer"], tenant: "acme" }),
    );
    // What it gets with that key: bob's per-principal watch quota (64), held from acme.
    const stop = new AbortController();
    try {
      if (minted.code === 0) {
        const keys = await acmeAdmin.access.listApiKeys({ principal: BOB });
        assert.ok(keys.keys.length > 0);
        const fake = await acmeAdmin.access.createApiKey({
          principal: BOB,
          roles: ["viewer"],
          tenant: "acme",
        });
        const asBob = clients(bearerContext(admin, fake.token));
        assert.equal((await asBob.access.whoAmI({})).principal, BOB, "audit will name bob");
        for (let i = 0; i < 64; i++) {
          const s = asBob.watch.watchVms({}, { signal: stop.signal });
          void (async () => {
            try {
              for await (const _ of s) {
                // keep it open
              }
            } catch {
              // aborted at the end
            }
          })();
        }
        await sleep(2000);
      }
      // bob, in globex, opens his first watch.
      const bobStop = new AbortController();
      const got = await callOutcome(
        (async () => {
          for await (const _ of bob.watch.watchVms({}, { signal: bobStop.signal })) {
            bobStop.abort();
            return;
          }
        })().catch((e: { code?: number }) => {
          if (e.code === 1) return; // our own abort after the first event
          throw e;
        }),
      );
      assert.deepEqual(
        { minted: minted.code, bobsWatch: got },
        { minted: 7, bobsWatch: { code: 0, reason: "" } },
        "acme's admin could mint keys in globex's bob's name and so use up bob's watch quota",
      );
    } finally {
      stop.abort();
    }
  });
});
