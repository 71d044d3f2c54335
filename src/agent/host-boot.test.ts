import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { silentLogger } from "../core/index.js";
import type { DomainState, DomainStatus } from "../drivers/index.js";
import {
  FENCED_TOLD_AGAIN,
  HOST_BOOT_FILE,
  MAX_KEPT_HA_VMS,
  openHostBoot,
  stoppedByReboot,
} from "./host-boot.js";

describe("the host's boot kept by the agent", () => {
  const withDir =
    (fn: (dir: string, boot: string, reboot: () => void) => Promise<void> | void) => async () => {
      const dir = mkdtempSync(join(tmpdir(), "dv-host-boot-"));
      const boot = join(dir, "boot_id");
      writeFileSync(boot, "boot-1\n");
      try {
        await fn(dir, boot, () => writeFileSync(boot, "boot-2\n"));
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    };
  const domains = (states: Record<string, DomainState>) => async (): Promise<DomainStatus[]> =>
    Object.entries(states).map(([id, state]) => ({
      id,
      state,
      vcpus: 1,
      memoryBytes: 1n,
      persistent: true,
    }));

  it(
    "first start: tells nothing; the same boot again: nothing; after a reboot: the HA VMs last seen running",
    withDir((dir, file, reboot) => {
      const first = openHostBoot(dir, file, silentLogger);
      assert.deepEqual(first.ranBeforeReboot, []);
      first.sawRunning(["vm-3", "vm-1"]);
      assert.deepEqual(openHostBoot(dir, file, silentLogger).ranBeforeReboot, []);
      reboot();
      assert.deepEqual(openHostBoot(dir, file, silentLogger).ranBeforeReboot, ["vm-1", "vm-3"]);
    }),
  );

  it(
    "writes only when the set changes, and the last set is what a reboot tells",
    withDir((dir, file, reboot) => {
      const boot = openHostBoot(dir, file, silentLogger);
      const path = join(dir, HOST_BOOT_FILE);
      boot.sawRunning(["vm-1"]);
      // Marked behind its back: a write would replace the mark.
      const marked = `${JSON.stringify({ bootId: "boot-1", haRunning: ["vm-1"], mark: 1 })}\n`;
      writeFileSync(path, marked);
      for (let i = 0; i < 5; i++) boot.sawRunning(["vm-1", "vm-1"]);
      assert.equal(readFileSync(path, "utf8"), marked, "the same set: not written again");
      // An operator stops vm-1 before the reboot: it no longer ran.
      boot.sawRunning([]);
      reboot();
      assert.deepEqual(openHostBoot(dir, file, silentLogger).ranBeforeReboot, []);
    }),
  );

  it(
    "a torn or garbage file tells nothing and is written anew at the next inventory",
    withDir((dir, file, reboot) => {
      const path = join(dir, HOST_BOOT_FILE);
      for (const garbage of ['{"bootId": "boot-1", "haRun', "[]", '{"bootId": 1}', ""]) {
        writeFileSync(path, garbage);
        reboot();
        const boot = openHostBoot(dir, file, silentLogger);
        assert.deepEqual(boot.ranBeforeReboot, [], garbage);
        boot.sawRunning([]);
        assert.deepEqual(JSON.parse(readFileSync(path, "utf8")), {
          bootId: "boot-2",
          haRunning: [],
        });
        writeFileSync(file, "boot-1\n");
      }
    }),
  );

  it(
    "no boot id on this host: nothing kept, nothing told",
    withDir((dir, _file, reboot) => {
      const missing = join(dir, "no-boot-id");
      const boot = openHostBoot(dir, missing, silentLogger);
      boot.sawRunning(["vm-1"]);
      reboot();
      assert.deepEqual(openHostBoot(dir, missing, silentLogger).ranBeforeReboot, []);
    }),
  );

  it(
    "keeps at most MAX_KEPT_HA_VMS ids",
    withDir((dir, file, reboot) => {
      const many = Array.from({ length: MAX_KEPT_HA_VMS + 10 }, (_, i) => `vm-${i}`);
      openHostBoot(dir, file, silentLogger).sawRunning(many);
      reboot();
      assert.equal(openHostBoot(dir, file, silentLogger).ranBeforeReboot.length, MAX_KEPT_HA_VMS);
    }),
  );

  it(
    "tells only those stopped now: not one running again, nor one no longer defined here",
    withDir(async (dir, file, reboot) => {
      openHostBoot(dir, file, silentLogger).sawRunning(["vm-1", "vm-2", "vm-3", "vm-4"]);
      reboot();
      const boot = openHostBoot(dir, file, silentLogger);
      const states = { "vm-1": "stopped", "vm-2": "running", "vm-3": "paused" } as const;
      assert.deepEqual(await stoppedByReboot(boot, domains(states), silentLogger, "node-a"), [
        "vm-1",
      ]);
    }),
  );

  it(
    "the VMs a reboot stopped, once told, are told again at every start (the same boot, or another reboot) until taken over",
    withDir((dir, file, reboot) => {
      openHostBoot(dir, file, silentLogger).sawRunning(["vm-1", "vm-2"]);
      reboot();
      const after = openHostBoot(dir, file, silentLogger);
      assert.deepEqual(after.ranBeforeReboot, ["vm-1", "vm-2"]);
      after.told(["vm-1", "vm-2"]);
      // Its first inventory: both stopped. The agent ends before the control plane heard.
      after.sawRunning([]);
      assert.deepEqual(openHostBoot(dir, file, silentLogger).ranBeforeReboot, ["vm-1", "vm-2"]);
      // The host reboots again before the control plane heard.
      writeFileSync(file, "boot-3\n");
      const third = openHostBoot(dir, file, silentLogger);
      assert.deepEqual(third.ranBeforeReboot, ["vm-1", "vm-2"]);
      third.told(["vm-1", "vm-2"]);
      third.sawRunning([]);
      // The control plane takes vm-1 over (its start comes): only vm-2 is told again.
      third.taken("vm-1");
      third.taken("vm-9");
      assert.deepEqual(openHostBoot(dir, file, silentLogger).ranBeforeReboot, ["vm-2"]);
      // Told at a start where it is no longer stopped here: no longer kept.
      openHostBoot(dir, file, silentLogger).told([]);
      assert.deepEqual(openHostBoot(dir, file, silentLogger).ranBeforeReboot, []);
    }),
  );

  it(
    "an HA VM the node stopped on its own is told again by an agent started again on the same boot, until taken over",
    withDir(async (dir, file) => {
      const lines: string[] = [];
      const log = { ...silentLogger, warn: (_: unknown, msg: string) => void lines.push(msg) };
      const first = openHostBoot(dir, file, silentLogger);
      first.sawRunning(["vm-1", "vm-2", "vm-3"]);
      // The agent self-fences vm-1 and vm-3 and sees them stopped; it is then killed before
      // the control plane heard.
      first.fenced("vm-1");
      first.fenced("vm-3");
      first.fenced("vm-1");
      first.sawRunning(["vm-2"]);
      const again = openHostBoot(dir, file, silentLogger);
      assert.equal(again.rebooted, false);
      assert.deepEqual(again.ranBeforeReboot, ["vm-1", "vm-3"]);
      const states = { "vm-1": "stopped", "vm-2": "running", "vm-3": "stopped" } as const;
      const stopped = await stoppedByReboot(again, domains(states), log as never, "node-a");
      assert.deepEqual(stopped, ["vm-1", "vm-3"]);
      assert.deepEqual(lines, [FENCED_TOLD_AGAIN]);
      again.told(stopped);
      // The control plane starts vm-1: only vm-3 is left to tell.
      again.taken("vm-1");
      assert.deepEqual(openHostBoot(dir, file, silentLogger).ranBeforeReboot, ["vm-3"]);
    }),
  );
});
