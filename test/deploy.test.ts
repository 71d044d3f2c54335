import assert from "node:assert/strict";
import { readFileSync, statSync } from "node:fs";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { runProcess } from "./helpers/daemon-process.js";

const UNIT = fileURLToPath(new URL("../../deploy/systemd/debvisor-rpcd.service", import.meta.url));

describe("the package's programs", () => {
  it("are executable after the build, so npm exec --no -- hvctl works", async () => {
    const pkg = JSON.parse(
      readFileSync(fileURLToPath(new URL("../../package.json", import.meta.url)), "utf8"),
    ) as { bin: Record<string, string> };
    for (const [name, path] of Object.entries(pkg.bin)) {
      const full = fileURLToPath(new URL(`../../${path}`, import.meta.url));
      assert.ok((statSync(full).mode & 0o111) !== 0, `${name} is not executable`);
    }
    const root = fileURLToPath(new URL("../..", import.meta.url));
    const r = await runProcess("npm", ["exec", "--no", "--", "hvctl", "version"], { cwd: root });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^hvctl \d+\.\d+\.\d+ \(API debvisor\.v1/);
  });
});

describe("deploy/systemd/debvisor-rpcd.service", () => {
  const unit = readFileSync(UNIT, "utf8");
  const directives = new Set(
    unit
      .split("\n")
      .filter((l) => /^[A-Z]\w+=/.test(l))
      .map((l) => l.trim()),
  );

  it("passes systemd-analyze verify without a warning", async () => {
    const { code, stdout, stderr } = await runProcess("systemd-analyze", ["verify", UNIT]);
    assert.equal(code, 0);
    assert.equal(`${stdout}${stderr}`.trim(), "");
  });

  it("is a notify service with a watchdog, reload by SIGHUP and a stop timeout above the drain deadline", () => {
    for (const d of [
      "Type=notify",
      "NotifyAccess=all",
      "WatchdogSec=30",
      "ExecReload=/bin/kill -HUP $MAINPID",
      "TimeoutStopSec=30",
    ]) {
      assert.ok(directives.has(d), d);
    }
  });

  it("runs unprivileged with the original design's sandboxing", () => {
    for (const d of [
      "User=debvisor-rpc",
      "ProtectSystem=strict",
      "ProtectHome=yes",
      "NoNewPrivileges=yes",
      "PrivateDevices=yes",
      "PrivateTmp=yes",
      "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
      "RestrictRealtime=yes",
      "RestrictNamespaces=yes",
      "LockPersonality=yes",
      "CapabilityBoundingSet=",
    ]) {
      assert.ok(directives.has(d), d);
    }
    assert.ok(
      ![...directives].some((d) => d.startsWith("MemoryDenyWriteExecute=yes")),
      "V8 needs W+X memory",
    );
  });
});

describe("the unit's sandbox", () => {
  it("scores an exposure of at most 1.2 in systemd-analyze security", async (t) => {
    const { code, stdout, stderr } = await runProcess("systemd-analyze", [
      "security",
      "--offline=yes",
      "--no-pager",
      UNIT,
    ]);
    assert.equal(code, 0, stderr);
    const m = /Overall exposure level for \S+: (\d+\.\d+)/.exec(stdout);
    assert.ok(m !== null, stdout);
    t.diagnostic(`exposure ${m[1]}`);
    assert.ok(Number(m[1]) <= 1.2, `exposure ${m[1]}:\n${stdout}`);
  });

  it("filters privileged and resource syscalls, hides /proc's system files and denies non-loopback IP", () => {
    const unit = readFileSync(UNIT, "utf8");
    for (const d of [
      "SystemCallFilter=~@privileged @resources",
      "ProcSubset=pid",
      "PrivateMounts=yes",
      "RemoveIPC=yes",
      "IPAddressDeny=any",
      "IPAddressAllow=localhost",
    ])
      assert.ok(unit.split("\n").includes(d), d);
  });
});
