import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { silentLogger, systemClock } from "../core/index.js";
import { createSqliteStore } from "../store/index.js";
import { createCertificateLedger } from "./certificate-ledger.js";
import { loadRevocations } from "./revocations.js";
import {
  followRevokedServerCertificates,
  revokedServerSerials,
} from "./revoked-server-certificates.js";

describe("the revoked server certificates told to agents", () => {
  const now = 1_000_000;

  it("lists revoked server certificates and those of unknown kind, not clients' nor expired ones", () => {
    const serials = revokedServerSerials(
      [
        { serial: "a1", revokedAtMs: 10, kind: "server", notAfterMs: now + 1 },
        { serial: "b2", revokedAtMs: 20, kind: "client", notAfterMs: now + 1 },
        { serial: "c3", revokedAtMs: 30, kind: "server", notAfterMs: now },
        { serial: "d4", revokedAtMs: 40 },
        { serial: "e5", revokedAtMs: 50, kind: "", notAfterMs: now + 1 },
      ],
      now,
    );
    assert.deepEqual(serials, ["e5", "d4", "a1"]);
  });

  it("past the bound keeps the newest revocations, never refusing the list", () => {
    const entries = Array.from({ length: 12 }, (_, i) => ({
      serial: i.toString(16),
      revokedAtMs: i,
      kind: "server",
      notAfterMs: now + 1,
    }));
    assert.deepEqual(revokedServerSerials(entries, now, 3), ["b", "a", "9"]);
  });
});

describe("a daemon whose own certificate is revoked before it has a new one", () => {
  const dir = mkdtempSync(join(tmpdir(), "dv-revoked-own-"));
  after(() => rmSync(dir, { recursive: true, force: true }));

  // Told it, the agents connected to this daemon would drop their streams and refuse it; with no
  // control plane left, their HA VMs self-fence: a revocation it cannot yet answer (no CA key, a
  // failed renewal) must not take the cluster's VMs down.
  it("does not tell its agents to refuse the certificate it serves, and tells them once it serves another", async () => {
    const store = createSqliteStore({ path: join(dir, "state.db"), logger: silentLogger });
    const revocations = await loadRevocations(store, systemClock, silentLogger);
    let serving = "abc1";
    const list = await followRevokedServerCertificates({
      revocations,
      ledger: createCertificateLedger(store, systemClock),
      clock: systemClock,
      logger: silentLogger,
      serving: () => serving,
    });
    try {
      const told: (readonly string[])[] = [];
      list.onChange((serials) => told.push(serials));
      await revocations.revoke("ABC1", "stolen");
      await revocations.revoke("def2", "stolen");
      for (let i = 0; i < 200 && !list.current()?.includes("def2"); i++)
        await new Promise((resolve) => setTimeout(resolve, 20));
      assert.deepEqual(list.current(), ["def2"], "the served certificate is left out");
      serving = "f00d";
      list.refresh();
      for (let i = 0; i < 200 && list.current()?.length !== 2; i++)
        await new Promise((resolve) => setTimeout(resolve, 20));
      assert.deepEqual([...(list.current() ?? [])].sort(), ["abc1", "def2"]);
      assert.deepEqual([...(told.at(-1) ?? [])].sort(), ["abc1", "def2"], "listeners told");
    } finally {
      list.close();
      revocations.close();
      await store.close();
    }
  });
});
