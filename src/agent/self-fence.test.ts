import assert from "node:assert/strict";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { silentLogger } from "../core/index.js";
import { createLocalSimulation, monotonicNs, openSimulatedWatchdog } from "../drivers/index.js";
import { createSelfFence, leasedStarts, watchdogGraceMs } from "./self-fence.js";

const MS = 1_000_000n;

/** A node with three generated domains (the 1st and 3rd are HA) and a manual monotonic clock. */
function node(
  paused: readonly string[] = [],
  hooks: Pick<Parameters<typeof createSelfFence>[0], "onFenced"> = {},
) {
  const dir = mkdtempSync(join(tmpdir(), "dv-self-fence-"));
  const sim = createLocalSimulation({ nodeId: "node-x", dir, vms: 3, now: 0 });
  const watchdog = openSimulatedWatchdog(join(dir, "watchdog.json"));
  // Starts at the host's monotonic time, so the simulated watchdog (real clock) agrees.
  const clock = { ns: monotonicNs() };
  // The simulation cannot pause a domain: these running ones are listed as paused.
  const driver = Object.create(sim.driver, {
    list: {
      value: async (signal: AbortSignal) =>
        (await sim.driver.list(signal)).map((d) =>
          paused.includes(d.id) && d.state === "running" ? { ...d, state: "paused" } : d,
        ),
    },
  }) as typeof sim.driver;
  const fence = createSelfFence({
    driver,
    isHa: (id) => sim.vmInfo(id)?.ha === true,
    watchdog,
    logger: silentLogger,
    now: () => clock.ns,
    ...hooks,
  });
  const states = async () =>
    Object.fromEntries(
      (await sim.driver.list(AbortSignal.timeout(5000))).map((d) => [d.id, d.state]),
    );
  const actions = () => readFileSync(join(dir, "sim-actions.log"), "utf8");
  return { dir, sim, watchdog, clock, fence, states, actions };
}

/** A {@link node} under a 1 s window, its Hello confirmed, and its driver's HA starts waiting for a lease as the agent's do. */
async function leasedNode() {
  const n = node();
  const driver = leasedStarts(
    n.sim.driver,
    (signal) => n.fence.leased(signal),
    (id) => n.sim.vmInfo(id)?.ha === true,
  );
  n.fence.configure(1000);
  n.fence.sending(0n);
  await n.fence.guard(() => n.fence.renewed(0n));
  return { n, driver };
}

describe("createSelfFence", () => {
  it("tells of the HA VMs it hard-stopped once every stop is made (a file written for each must not hold up the next)", async () => {
    const stoppedWhenTold: string[][] = [];
    const n = node([], {
      onFenced: () =>
        void stoppedWhenTold.push(
          n
            .actions()
            .match(/force-stop \S+/g)
            ?.sort() ?? [],
        ),
    });
    try {
      n.fence.configure(1000);
      n.fence.sending(0n);
      await n.fence.guard(() => n.fence.renewed(0n));
      n.clock.ns += 2000n * MS;
      await n.fence.guard(() => undefined);
      const both = ["force-stop node-x-vm-001", "force-stop node-x-vm-003"];
      assert.deepEqual(stoppedWhenTold, [both, both]);
    } finally {
      n.fence.close();
    }
  });

  it("hard-stops a paused HA VM too when the window lapses (resumed later, it would run twice)", async () => {
    const n = node(["node-x-vm-001"]);
    try {
      n.fence.configure(1000);
      n.fence.sending(0n);
      await n.fence.guard(() => n.fence.renewed(0n));
      n.clock.ns += 2000n * MS;
      await n.fence.guard(() => undefined);
      assert.match(n.actions(), /force-stop node-x-vm-001/);
      assert.equal((await n.states())["node-x-vm-001"], "stopped");
    } finally {
      n.fence.close();
    }
  });

  it("keeps the VMs while renewals are confirmed within the window, measured from when each heartbeat was sent", async () => {
    const n = node();
    try {
      n.fence.configure(1000);
      n.fence.sending(0n);
      await n.fence.guard(() => n.fence.renewed(0n));
      for (let seq = 1n; seq <= 5n; seq++) {
        n.clock.ns += 800n * MS;
        await n.fence.guard(() => n.fence.sending(seq));
        await n.fence.guard(() => n.fence.renewed(seq));
      }
      assert.ok(Object.values(await n.states()).every((s) => s === "running"));
    } finally {
      n.fence.close();
    }
  });

  it("after a pause longer than the window, hard-stops the HA VMs before it accepts the renewal that arrives first", async () => {
    const n = node();
    try {
      n.fence.configure(1000);
      n.fence.sending(0n);
      await n.fence.guard(() => n.fence.renewed(0n));
      // Frozen for 5 s; on waking, a heartbeat goes out and its renewal comes back at once.
      n.clock.ns += 5000n * MS;
      n.fence.sending(1n);
      await n.fence.guard(() => n.fence.renewed(1n));
      assert.deepEqual(await n.states(), {
        "node-x-vm-001": "stopped",
        "node-x-vm-002": "running",
        "node-x-vm-003": "stopped",
      });
      assert.match(n.actions(), /force-stop node-x-vm-001\n.*force-stop node-x-vm-003\n$/);
    } finally {
      n.fence.close();
    }
  });

  it("past the deadline, stops an HA VM started again before any renewal came", async () => {
    const n = node();
    try {
      n.fence.configure(1000);
      n.fence.sending(0n);
      await n.fence.guard(() => n.fence.renewed(0n));
      n.clock.ns += 2000n * MS;
      await n.fence.guard(() => undefined);
      assert.equal((await n.states())["node-x-vm-001"], "stopped");
      await n.sim.driver.start("node-x-vm-001", AbortSignal.timeout(5000));
      n.clock.ns += 100n * MS;
      await n.fence.guard(() => undefined);
      assert.equal((await n.states())["node-x-vm-001"], "stopped", "stopped again");
    } finally {
      n.fence.close();
    }
  });

  it("pets the watchdog no later than the lease deadline plus a grace, and a restarted agent keeps that deadline", async () => {
    const n = node();
    try {
      const start = n.clock.ns;
      n.fence.configure(1000);
      n.fence.sending(0n);
      await n.fence.guard(() => n.fence.renewed(0n));
      n.clock.ns += 600n * MS;
      await n.fence.guard(() => undefined);
      assert.equal(
        n.watchdog.read()?.deadlineNs,
        start + (1000n + BigInt(watchdogGraceMs(1000))) * MS,
      );
      // A new process on the same node, before any Welcome: the old deadline still holds.
      const again = createSelfFence({
        driver: n.sim.driver,
        isHa: (id) => n.sim.vmInfo(id)?.ha === true,
        watchdog: n.watchdog,
        logger: silentLogger,
        now: () => n.clock.ns,
      });
      try {
        n.clock.ns = start + 1100n * MS;
        await again.guard(() => undefined);
        assert.equal(
          (await n.states())["node-x-vm-001"],
          "stopped",
          "fenced on the inherited deadline",
        );
      } finally {
        again.close();
      }
    } finally {
      n.fence.close();
    }
  });

  it("does not start an HA VM in its lease's last half window, and starts it once a renewal gives it room", async () => {
    const { n, driver } = await leasedNode();
    try {
      await n.sim.driver.stop("node-x-vm-001", { force: true, signal: AbortSignal.timeout(5000) });
      // 400 ms of lease left: a start now would be fenced at once if the next renewal were late.
      n.clock.ns += 600n * MS;
      let started = false;
      const start = driver.start("node-x-vm-001", AbortSignal.timeout(5000)).then(() => {
        started = true;
      });
      await sleep(100);
      assert.equal(started, false, "waits for a renewal");
      assert.equal((await n.states())["node-x-vm-001"], "stopped");
      // Heartbeat 1, sent now, confirmed: a full window again.
      n.fence.sending(1n);
      await n.fence.guard(() => n.fence.renewed(1n));
      await start;
      assert.equal((await n.states())["node-x-vm-001"], "running");
      // Still more than half a window left: at once.
      n.clock.ns += 400n * MS;
      await n.sim.driver.stop("node-x-vm-001", { force: true, signal: AbortSignal.timeout(5000) });
      await driver.start("node-x-vm-001", AbortSignal.timeout(5000));
      assert.equal((await n.states())["node-x-vm-001"], "running");
    } finally {
      n.fence.close();
    }
  });

  it("past the deadline, refuses (FENCED, after waiting the window for a renewal) to start an HA VM it would stop again, starts others, and starts it once a renewal came", async () => {
    const { n, driver } = await leasedNode();
    try {
      // Woken after 2 s: the fence stops the HA VMs; a start queued meanwhile then arrives.
      n.clock.ns += 2000n * MS;
      await n.fence.guard(() => undefined);
      await n.sim.driver.stop("node-x-vm-002", { force: false, signal: AbortSignal.timeout(5000) });
      await assert.rejects(
        n.fence.guard(() => driver.start("node-x-vm-001", AbortSignal.timeout(5000))),
        (err: Error & { reason?: string }) => {
          assert.match(err.message, /no confirmed lease renewal/);
          return true;
        },
      );
      await n.fence.guard(() => driver.start("node-x-vm-002", AbortSignal.timeout(5000)));
      assert.deepEqual(await n.states(), {
        "node-x-vm-001": "stopped",
        "node-x-vm-002": "running",
        "node-x-vm-003": "stopped",
      });
      assert.doesNotMatch(
        n.actions(),
        /start node-x-vm-001/,
        "never started, so never stopped again",
      );
      // A heartbeat sent now is confirmed: the node may run its HA VMs again.
      n.fence.sending(1n);
      await n.fence.guard(() => n.fence.renewed(1n));
      await n.fence.guard(() => driver.start("node-x-vm-001", AbortSignal.timeout(5000)));
      await n.fence.guard(() => undefined);
      assert.equal((await n.states())["node-x-vm-001"], "running");
    } finally {
      n.fence.close();
    }
  });

  /**
   * Past the deadline every check lists the domains, and a libvirt listing
   * can be slow (an HA-flag read that hangs is cut off only at the
   * listing's 30 s). A tick was queued every quarter window whatever was
   * queued already: ticks piled up behind the slow checks, each listing
   * again, and a renewal (or an operation, a heartbeat) waited behind all of
   * them, longer the longer it lasted.
   */
  it("past the deadline, slow checks do not pile up ticks that a renewal must wait behind", async () => {
    const dir = mkdtempSync(join(tmpdir(), "dv-self-fence-"));
    const sim = createLocalSimulation({ nodeId: "node-x", dir, vms: 3, now: 0 });
    let slowMs = 1000;
    let lists = 0;
    const driver = Object.create(sim.driver, {
      list: {
        value: async (signal: AbortSignal) => {
          lists++;
          await sleep(slowMs, undefined, { signal });
          return sim.driver.list(signal);
        },
      },
    }) as typeof sim.driver;
    const clock = { ns: monotonicNs() };
    const fence = createSelfFence({
      driver,
      isHa: (id) => sim.vmInfo(id)?.ha === true,
      logger: silentLogger,
      now: () => clock.ns,
    });
    try {
      fence.configure(1000);
      fence.sending(0n);
      await fence.guard(() => fence.renewed(0n));
      clock.ns += 2000n * MS;
      // Four seconds of slow checks past the deadline (a tick every 250 ms).
      await sleep(4000);
      fence.sending(1n);
      const began = Date.now();
      const renewed = fence.guard(() => fence.renewed(1n)).then(() => Date.now() - began);
      const waited = await Promise.race([renewed, sleep(6000, "more than 6 s")]);
      assert.equal(typeof waited, "number", `the renewal waited ${waited}`);
      assert.ok((waited as number) < 3500, `the renewal waited ${waited} ms behind queued ticks`);
      assert.ok(lists <= 8, `${lists} listings in about 6 s of 1 s checks`);
    } finally {
      slowMs = 0;
      fence.close();
      await fence.guard(() => undefined);
    }
  });
});
