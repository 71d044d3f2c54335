import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { describe, it } from "node:test";
import type { PeerCertificate } from "node:tls";
import { createManualClock } from "../core/index.js";
import { openServerCheck, REFRESH_AFTER_MS, revokedServersPath } from "./revoked-server-check.js";

const presenting = (serialNumber: string) => ({ serialNumber }) as PeerCertificate;

describe("revokedServersPath", () => {
  for (const [name, configured, env, want] of [
    [
      "ok-configured",
      "/etc/hvctl/revoked.json",
      { XDG_STATE_HOME: "/s" },
      "/etc/hvctl/revoked.json",
    ],
    ["ok-xdg-state-home", undefined, { XDG_STATE_HOME: "/s" }, "/s/debvisor/revoked-servers.json"],
    [
      "ok-relative-xdg-ignored",
      undefined,
      { XDG_STATE_HOME: "s" },
      "/home/u/.local/state/debvisor/revoked-servers.json",
    ],
    ["ok-home", undefined, {}, "/home/u/.local/state/debvisor/revoked-servers.json"],
  ] as const)
    it(name, () => assert.equal(revokedServersPath(configured, env, "/home/u"), want));
});

describe("hvctl's check of the control plane's certificate", () => {
  const setUp = () => {
    const dir = mkdtempSync(join(tmpdir(), "dv-server-check-"));
    const path = join(dir, "debvisor", "revoked-servers.json");
    const clock = createManualClock(Date.parse("2026-12-06T12:00:00Z"));
    const stderr: string[] = [];
    const open = () =>
      openServerCheck({
        path,
        scope: "sha256:aa",
        server: "127.0.0.1:7443",
        err: (t) => stderr.push(t),
        clock,
      });
    return { dir, path, clock, stderr, open };
  };

  it("takes the list when it has none, then not again for 5 minutes, and refuses what is on it", async () => {
    const { dir, clock, stderr, open } = setUp();
    try {
      const fresh = open();
      assert.equal(fresh.due(), true, "no list yet");
      assert.equal(fresh.verify(presenting("0AB1")), undefined, "nothing is refused before");
      await fresh.refresh(async () => ["ab1"]);
      clock.advance(REFRESH_AFTER_MS - 1);
      const next = open();
      assert.equal(next.due(), false, "a normal invocation costs no extra call");
      assert.equal(
        next.verify(presenting("0AB1"))?.message,
        "the control plane's certificate ab1 is revoked",
      );
      assert.equal(next.refused(), "ab1");
      assert.equal(next.verify(presenting("cd2")), undefined);
      clock.advance(1);
      assert.equal(open().due(), true, "5 minutes old");
      clock.set(Date.parse("2026-12-06T11:00:00Z"));
      assert.equal(open().due(), true, "taken in the future: the clock went back");
      assert.deepEqual(stderr, [], "a refusal is the command's error line, not a note");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("leaves the kept list as it is when taking it fails (an older daemon: UNIMPLEMENTED)", async () => {
    const { dir, path, clock, stderr, open } = setUp();
    try {
      await open().refresh(async () => ["ab1"]);
      const before = readFileSync(path, "utf8");
      clock.advance(REFRESH_AFTER_MS);
      const check = open();
      await check.refresh(async () => {
        throw Object.assign(new Error("12 UNIMPLEMENTED: unknown method"), { code: 12 });
      });
      assert.equal(readFileSync(path, "utf8"), before);
      assert.equal(open().due(), true, "still due: the next command tries again");
      assert.ok(open().verify(presenting("ab1")) !== undefined, "the old list still refuses");
      assert.deepEqual(stderr, []);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("never replaces a file that is not its lists (a path set by mistake), nor prints what it holds", async () => {
    const { dir, path, stderr, open } = setUp();
    try {
      // revokedServersFile pointed at a token file, or at hvctl's own configuration.
      mkdirSync(dirname(path), { recursive: true });
      const secret = "dvk_0123456789abcdefghij";
      writeFileSync(path, `${secret}\n`);
      const check = open();
      assert.equal(check.due(), true);
      assert.equal(check.verify(presenting("ab1")), undefined, "an unreadable list is empty");
      await check.refresh(async () => ["ab1"]);
      assert.equal(readFileSync(path, "utf8"), `${secret}\n`, "the file was replaced");
      assert.ok(check.verify(presenting("ab1")) !== undefined, "kept in memory for the command");
      assert.equal(stderr.length, 2, stderr.join(""));
      assert.match(stderr[0] ?? "", /unreadable; starting with none \(.*: not valid JSON\)\n$/);
      assert.match(stderr[1] ?? "", /not written; kept in memory \(.*left as it is\)\n$/);
      assert.ok(!stderr.join("").includes("dvk_"), stderr.join(""));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("keeps a list per server of one CA, and refuses what any of them revoked", async () => {
    const { dir, path, clock } = setUp();
    try {
      // Two clusters whose server certificates chain to one CA (an organisation's).
      const at = (server: string) =>
        openServerCheck({ path, scope: "sha256:org", server, err: () => {}, clock });
      await at("cluster-a:7443").refresh(async () => ["5701e9"]);
      clock.advance(REFRESH_AFTER_MS);
      const b = at("cluster-b:7443");
      assert.equal(b.due(), true, "cluster B has no list of its own yet");
      await b.refresh(async () => []);
      // B's empty list replaced nothing of A's: a thief serving A's stolen certificate is
      // refused at A's address, and at B's (one CA: the serial is that certificate).
      assert.ok(at("cluster-a:7443").verify(presenting("5701E9")) !== undefined);
      assert.ok(at("cluster-b:7443").verify(presenting("5701E9")) !== undefined);
      assert.equal(at("cluster-b:7443").due(), false);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
