import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { AgentError } from "../client/index.js";
import { applyFaultCommand, describeFaults, faultsFile, readFaults } from "./agent-faults.js";

describe("applyFaultCommand", () => {
  it("ok-sequence: faults add up, heal lifts only the partition, clear lifts all", () => {
    const dir = mkdtempSync(join(tmpdir(), "dv-faults-"));
    applyFaultCommand(dir, "partition");
    applyFaultCommand(dir, "fail-migration-at", "40");
    applyFaultCommand(dir, "hold-migration-at", "30");
    assert.equal(
      describeFaults(applyFaultCommand(dir, "clock-offset", "-5000")),
      "partitioned, migrations fail at 40 %, migrations hold at 30 %, clock offset -5000 ms",
    );
    assert.deepEqual(applyFaultCommand(dir, "heal"), {
      partitioned: false,
      failMigrationAt: 40,
      holdMigrationAt: 30,
      clockOffsetMs: -5000,
    });
    assert.deepEqual(readFaults(dir), {
      partitioned: false,
      failMigrationAt: 40,
      holdMigrationAt: 30,
      clockOffsetMs: -5000,
    });
    assert.equal(describeFaults(applyFaultCommand(dir, "clear")), "no faults");
  });

  for (const [name, command, arg] of [
    ["fail-percent-over-100", "fail-migration-at", "101"],
    ["fail-percent-missing", "fail-migration-at", undefined],
    ["fail-percent-fraction", "fail-migration-at", "4.5"],
    ["fail-hold-over-100", "hold-migration-at", "101"],
    ["fail-offset-word", "clock-offset", "soon"],
    ["fail-offset-over-a-day", "clock-offset", "86400001"],
    ["fail-unknown-fault", "melt", undefined],
  ] as const) {
    it(`${name}: refused with a usage error, the faults file untouched`, () => {
      const dir = mkdtempSync(join(tmpdir(), "dv-faults-"));
      applyFaultCommand(dir, "partition");
      const before = readFileSync(faultsFile(dir), "utf8");
      assert.throws(() => applyFaultCommand(dir, command, arg), AgentError);
      assert.equal(readFileSync(faultsFile(dir), "utf8"), before);
    });
  }

  it("ok-revive: leaves the marker dev mode's daemon looks for, and no fault", () => {
    const dir = mkdtempSync(join(tmpdir(), "dv-faults-"));
    applyFaultCommand(dir, "partition");
    assert.deepEqual(applyFaultCommand(dir, "revive"), readFaults(dir));
    assert.equal(existsSync(join(dir, "revive")), true);
    assert.equal(readFaults(dir).partitioned, true);
  });

  it("reads a missing or unreadable file as no faults", () => {
    const dir = mkdtempSync(join(tmpdir(), "dv-faults-"));
    assert.equal(existsSync(faultsFile(dir)), false);
    assert.equal(describeFaults(readFaults(dir)), "no faults");
  });
});
