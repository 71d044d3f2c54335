import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import type { PeerCertificate } from "node:tls";
import { createManualClock, type Logger, silentLogger } from "../core/index.js";
import {
  MAX_REVOKED_SERVER_LISTS,
  openRevokedServers,
  REVOKED_SERVERS_FILE,
} from "./revoked-servers.js";

/** A logger that keeps each message it is given. */
function recordingLogger(): Logger & { readonly messages: string[] } {
  const messages: string[] = [];
  const keep = (_obj: object, msg?: string) => {
    messages.push(msg ?? "");
  };
  const logger = {
    messages,
    debug: keep,
    info: keep,
    warn: keep,
    error: keep,
    child: () => logger,
  };
  return logger;
}

function withDir(body: (dir: string) => Promise<void>): () => Promise<void> {
  return async () => {
    const dir = mkdtempSync(join(tmpdir(), "dv-revoked-servers-"));
    try {
      await body(dir);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };
}

const presenting = (serialNumber: string) => ({ serialNumber }) as PeerCertificate;

describe("the agent's revoked server certificates on disk", () => {
  // Found by an adversarial review: a list whose write failed (disk full, a fault) was kept in
  // memory only, and the same list sent again (the next Welcome) was taken as known and never
  // written: a restarted agent trusted the stolen certificate again until it reached a real
  // daemon, however often it had been told since.
  it(
    "writes a list whose write failed when it is sent again",
    withDir(async (dir) => {
      const path = join(dir, REVOKED_SERVERS_FILE);
      const revoked = openRevokedServers({ path, log: silentLogger });
      // The write fails: its new copy's place is taken (as a full disk would fail it).
      const next = `${path}.next`;
      mkdirSync(join(next, "in-the-way"), { recursive: true });
      await revoked.replace(["ABC1"]);
      assert.ok(revoked.has("abc1"), "kept in memory");
      rmSync(next, { recursive: true });
      // The control plane's next Welcome brings the same list.
      await revoked.replace(["abc1"]);
      const restarted = openRevokedServers({ path, log: silentLogger });
      assert.ok(restarted.has("abc1"), "a restarted agent has forgotten the revocation");
    }),
  );

  it(
    "reads the list an older agent wrote (no time), and refuses what is on it",
    withDir(async (dir) => {
      const path = join(dir, REVOKED_SERVERS_FILE);
      writeFileSync(path, `${JSON.stringify({ serials: ["00AB12"] })}\n`);
      const log = recordingLogger();
      const revoked = openRevokedServers({ path, log: silentLogger });
      assert.equal(revoked.takenAt(), undefined);
      const guard = revoked.guard("10.0.0.1:7443", log);
      assert.equal(guard.verify(presenting("0CD")), undefined);
      assert.equal(
        guard.verify(presenting("AB12"))?.message,
        "the control plane's certificate ab12 is revoked",
      );
      assert.equal(guard.presented(), "ab12");
      assert.deepEqual(log.messages, ["refused the control plane: its certificate is revoked"]);
    }),
  );
});

describe("revoked server certificates kept per scope (hvctl's state file)", () => {
  it(
    "keeps one list per scope, each replaced on its own and read back by a later process",
    withDir(async (dir) => {
      const path = join(dir, "state", "debvisor", REVOKED_SERVERS_FILE);
      const clock = createManualClock(Date.parse("2026-12-06T10:00:00Z"));
      const a = openRevokedServers({ path, log: silentLogger, scope: "sha256:aa", clock });
      const b = openRevokedServers({ path, log: silentLogger, scope: "sha256:bb", clock });
      assert.equal(a.takenAt(), undefined, "nothing taken yet");
      await a.replace(["a1", "a2"]);
      clock.advance(60_000);
      await b.replace(["b1"]);
      // A list replaced again is replaced alone: b's stays.
      clock.advance(60_000);
      await a.replace(["a3"]);
      const a2 = openRevokedServers({ path, log: silentLogger, scope: "sha256:aa" });
      const b2 = openRevokedServers({ path, log: silentLogger, scope: "sha256:bb" });
      const c2 = openRevokedServers({ path, log: silentLogger, scope: "sha256:cc" });
      assert.deepEqual(
        ["a1", "a3", "b1"].map((s) => [a2.has(s), b2.has(s), c2.has(s)]),
        [
          [false, false, false],
          [true, false, false],
          [false, true, false],
        ],
      );
      assert.equal(a2.takenAt(), Date.parse("2026-12-06T10:02:00Z"));
      assert.equal(b2.takenAt(), Date.parse("2026-12-06T10:01:00Z"));
      assert.equal(c2.takenAt(), undefined);
    }),
  );

  it(
    "records the time of a list taken again unchanged (its age is the last refresh's)",
    withDir(async (dir) => {
      const path = join(dir, REVOKED_SERVERS_FILE);
      const clock = createManualClock(1_000_000);
      const kept = openRevokedServers({ path, log: silentLogger, scope: "sha256:aa", clock });
      await kept.replace(["a1"]);
      clock.advance(300_000);
      await kept.replace(["a1"]);
      const later = openRevokedServers({ path, log: silentLogger, scope: "sha256:aa" });
      assert.equal(later.takenAt(), 1_300_000);
    }),
  );

  it(
    "makes its folder 0700 and the file 0644",
    withDir(async (dir) => {
      const folder = join(dir, "state", "debvisor");
      const path = join(folder, REVOKED_SERVERS_FILE);
      await openRevokedServers({ path, log: silentLogger, scope: "sha256:aa" }).replace(["a1"]);
      assert.equal(statSync(folder).mode & 0o777, 0o700);
      assert.equal(statSync(path).mode & 0o777, 0o644);
    }),
  );

  it(
    "treats an unreadable file as empty, says so once, and a new list replaces it",
    withDir(async (dir) => {
      const path = join(dir, REVOKED_SERVERS_FILE);
      writeFileSync(path, '{"lists": {"sha256:aa": {"serials": ["a1"]');
      const log = recordingLogger();
      const kept = openRevokedServers({ path, log, scope: "sha256:aa" });
      assert.equal(kept.has("a1"), false);
      assert.equal(kept.takenAt(), undefined, "an unreadable list is due for a refresh");
      assert.equal(kept.guard("s:1").verify(presenting("a1")), undefined);
      assert.deepEqual(log.messages, [
        "revoked server certificates unreadable; starting with none",
      ]);
      await kept.replace(["a2"]);
      const again = recordingLogger();
      assert.ok(openRevokedServers({ path, log: again, scope: "sha256:aa" }).has("a2"));
      assert.deepEqual(again.messages, []);
    }),
  );

  it(
    "keeps the lists taken last, at most MAX_REVOKED_SERVER_LISTS",
    withDir(async (dir) => {
      const path = join(dir, REVOKED_SERVERS_FILE);
      const clock = createManualClock(1_000_000);
      for (let i = 0; i <= MAX_REVOKED_SERVER_LISTS; i++) {
        clock.advance(1000);
        await openRevokedServers({ path, log: silentLogger, scope: `s${i}`, clock }).replace([
          `${i + 1}`,
        ]);
      }
      const lists = (JSON.parse(readFileSync(path, "utf8")) as { lists: object }).lists;
      assert.equal(Object.keys(lists).length, MAX_REVOKED_SERVER_LISTS);
      assert.equal("s0" in lists, false, "the list taken longest ago is dropped");
      assert.ok(`s${MAX_REVOKED_SERVER_LISTS}` in lists);
    }),
  );
});
