import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { monotonicNs, openSimulatedWatchdog } from "./simulated-watchdog.js";

const MS = 1_000_000n;

/** A watchdog in a fresh directory, on a boot id file of its own. */
function watchdog() {
  const dir = mkdtempSync(join(tmpdir(), "dv-watchdog-"));
  const boot = join(dir, "boot_id");
  writeFileSync(boot, "boot-1\n");
  return { open: () => openSimulatedWatchdog(join(dir, "watchdog.json"), boot), boot };
}

describe("the simulated watchdog", () => {
  it("a pet after the deadline passed does not undo the reset; once it is carried out, pets count again", () => {
    const w = watchdog().open();
    w.pet(monotonicNs() - 1n * MS, 1000);
    assert.equal(w.expired(), true);
    // An agent resumed from a freeze pets before its next hypervisor call carries out the reset.
    w.pet(monotonicNs() + 60_000n * MS, 1000);
    assert.equal(w.expired(), true, "a real watchdog has reset the machine already");
    w.resetDone();
    assert.equal(w.expired(), false);
    const next = monotonicNs() + 60_000n * MS;
    w.pet(next, 1000);
    assert.equal(w.read()?.deadlineNs, next);
    assert.equal(w.expired(), false);
  });

  it("a pet before the deadline moves it on", () => {
    const w = watchdog().open();
    w.pet(monotonicNs() + 60_000n * MS, 1000);
    const later = monotonicNs() + 120_000n * MS;
    w.pet(later, 1000);
    assert.equal(w.read()?.deadlineNs, later);
    assert.equal(w.expired(), false);
  });

  it("after a reboot the old deadline counts as fired until its reset is carried out", () => {
    const wd = watchdog();
    wd.open().pet(monotonicNs() + 60_000n * MS, 1000);
    writeFileSync(wd.boot, "boot-2\n");
    const w = wd.open();
    assert.equal(w.expired(), true);
    w.pet(monotonicNs() + 60_000n * MS, 1000);
    assert.equal(w.expired(), true, "the reboot stopped every domain");
    w.resetDone();
    w.pet(monotonicNs() + 60_000n * MS, 1000);
    assert.equal(w.expired(), false);
    assert.equal(w.read()?.bootId, "boot-2");
  });
});
