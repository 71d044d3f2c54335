import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { silentLogger } from "../core/index.js";
import { openRevokedServers, REVOKED_SERVERS_FILE } from "./revoked-servers.js";

describe("the agent's revoked server certificates on disk", () => {
  // Found by an adversarial review: a list whose write failed (disk full, a fault) was kept in
  // memory only, and the same list sent again (the next Welcome) was taken as known and never
  // written: a restarted agent trusted the stolen certificate again until it reached a real
  // daemon, however often it had been told since.
  it("writes a list whose write failed when it is sent again", async () => {
    const dir = mkdtempSync(join(tmpdir(), "dv-revoked-servers-"));
    try {
      const revoked = openRevokedServers({
        path: join(dir, REVOKED_SERVERS_FILE),
        log: silentLogger,
      });
      // The write fails: its new copy's place is taken (as a full disk would fail it).
      const next = join(dir, `${REVOKED_SERVERS_FILE}.next`);
      mkdirSync(join(next, "in-the-way"), { recursive: true });
      await revoked.replace(["ABC1"]);
      assert.ok(revoked.has("abc1"), "kept in memory");
      rmSync(next, { recursive: true });
      // The control plane's next Welcome brings the same list.
      await revoked.replace(["abc1"]);
      const restarted = openRevokedServers({
        path: join(dir, REVOKED_SERVERS_FILE),
        log: silentLogger,
      });
      assert.ok(restarted.has("abc1"), "a restarted agent has forgotten the revocation");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
