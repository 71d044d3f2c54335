import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { OperationKind, OperationOutcome } from "../src/gen/debvisor/v1/agent_pb.js";
import { startEtcd } from "./helpers/etcd-server.js";
import { eventually } from "./helpers/eventually.js";
import { type FencingCluster, startFencingCluster } from "./helpers/fencing-cluster.js";

/**
 * A node's host reboots while its agent is down (a hardware watchdog, a
 * kernel panic, an operator's reboot): its VMs stop with it, and the agent
 * starts again before any controller saw the node NOT_READY past the fence
 * delay. Real processes: a daemon on etcd with its failover controller, one
 * agent with a simulated hypervisor whose host boot id is read from a file
 * (the test writes a new one: the reboot).
 */
describe("an agent on a host that rebooted since it last ran", async () => {
  const etcd = await startEtcd().catch(() => undefined);
  if (etcd === undefined) {
    if (process.env.CI === "true") throw new Error("etcd is required under CI=true");
    console.log("!!! etcd is not installed: the host reboot tests are SKIPPED.");
    return;
  }
  const NODE = "node-a";
  /** Generated domains: odd positions are HA. */
  const [HA, PLAIN, HA_STOPPED, PLAIN_2] = [1, 2, 3, 4].map((i) => `${NODE}-vm-00${i}`);
  const bootDir = mkdtempSync(join(tmpdir(), "dv-boot-id-"));
  const bootIdFile = join(bootDir, "boot_id");
  writeFileSync(bootIdFile, `${randomUUID()}\n`);
  let c: FencingCluster;
  /** The agent's storage: with simulated datasets it takes an inventory before it connects. */
  let storage = "none";

  before(async () => {
    c = await startFencingCluster({
      etcd,
      nodes: [NODE],
      vmsPerNode: 4,
      // The fence delay is far longer than the agent is away: no controller sees the node
      // NOT_READY past it, so only the agent can say its HA VMs were lost running.
      cluster: {
        heartbeatIntervalMs: 1000,
        // READY for 30 s after its last heartbeat: an agent away for a few seconds (the third
        // case's cut-off start) is never seen NOT_READY, so no controller marks its VMs lost.
        heartbeatMissedIntervals: 30,
        fenceDelayMs: 60_000,
        runnerLeaseMs: 3000,
        failover: { enabled: true, intervalMs: 500 },
      },
      agentEnv: () => ({
        DEBVISOR_AGENT_BOOT_ID_FILE: bootIdFile,
        DEBVISOR_AGENT_STORAGE: storage,
      }),
    });
  });
  after(async () => {
    await c?.close();
    await etcd.stop();
    rmSync(bootDir, { recursive: true, force: true });
  });

  it("tells the HA VMs the reboot stopped as self-fenced, and the control plane starts them again; not an HA VM stopped on purpose before, nor VMs without HA", async () => {
    // An HA VM stopped on purpose before the reboot.
    await c.submit(NODE, "stop-on-purpose", OperationKind.STOP_VM, HA_STOPPED, 0n, {
      force: "true",
    });
    const stopped = await c.waitDone(NODE, "stop-on-purpose");
    assert.equal(stopped.result?.outcome, OperationOutcome.SUCCEEDED, stopped.result?.message);
    // A report after the stop: the control plane (and the agent) saw which HA VMs run.
    await eventually(
      async () => {
        const r = await c.hvctl("-o", "json", "vm", "list");
        assert.equal(r.code, 0, r.stderr);
        const vms = (JSON.parse(r.stdout) as { vms: { id: string; state: string }[] }).vms;
        assert.match(String(vms.find((v) => v.id === HA_STOPPED)?.state), /STOPPED/i);
        assert.match(String(vms.find((v) => v.id === HA)?.state), /RUNNING/i);
      },
      { timeoutMs: 10_000, intervalMs: 200 },
    );
    const agent = c.agents.get(NODE);
    assert.ok(agent !== undefined);

    // The agent stops; the host reboots: a new boot id, and every VM stopped with it.
    agent.proc.kill("SIGTERM");
    if (agent.proc.exitCode === null) await new Promise((r) => agent.proc.once("exit", r));
    writeFileSync(bootIdFile, `${randomUUID()}\n`);
    const worldFile = join(c.dir, NODE, "sim-world.json");
    const world = JSON.parse(readFileSync(worldFile, "utf8")) as {
      vms: { node: string; state: string }[];
    };
    for (const vm of world.vms) if (vm.node === NODE) vm.state = "stopped";
    writeFileSync(worldFile, JSON.stringify(world));
    const seen = c.daemon().logs.length;
    const back = c.run(NODE);
    await back.waitLog("connected to the control plane");

    // The control plane starts the HA VM again: the node is READY and no controller saw it
    // NOT_READY past the fence delay, so only the agent's word marks it lost running.
    await eventually(async () => assert.equal((await c.domains(NODE))[HA], "running"), {
      timeoutMs: 30_000,
      intervalMs: 250,
    }).catch((err: unknown) => {
      const told = c
        .daemon()
        .logs.slice(seen)
        .filter((l) => /agent event|self-fenced|failover/.test(String(l.msg)))
        .map((l) => `${l.msg} ${l.node ?? ""} ${l.vm ?? ""}`);
      console.log(told.join("\n"));
      throw err;
    });
    const marked = c
      .daemon()
      .logs.slice(seen)
      .filter((l) => l.msg === "self-fenced HA vm marked to start again")
      .map((l) => l.vm);
    assert.deepEqual(marked, [HA], "only the HA VM that ran before the reboot was told");
    const told = back.logs.find(
      (l) => l.msg === "the host rebooted since the agent last ran; its HA vms are to run again",
    );
    assert.deepEqual(told?.vms, [HA]);
    const states = await c.domains(NODE);
    assert.equal(states[HA_STOPPED], "stopped", "stopped on purpose: stays stopped");
    assert.equal(states[PLAIN], "stopped", "no HA: not started by the control plane");
    assert.equal(states[PLAIN_2], "stopped", "no HA: not started by the control plane");
  });
  it("a simulated node's reboot is the boot id alone: the simulation stops every VM, and each HA VM that ran is told once and started again", async () => {
    assert.equal((await c.domains(NODE))[HA], "running");
    const agent = c.agents.get(NODE);
    assert.ok(agent !== undefined);
    agent.proc.kill("SIGTERM");
    if (agent.proc.exitCode === null) await new Promise((r) => agent.proc.once("exit", r));
    const acted = c.actions(NODE).length;
    writeFileSync(bootIdFile, `${randomUUID()}\n`);
    const back = c.run(NODE);
    await back.waitLog("connected to the control plane");
    await eventually(async () => assert.equal((await c.domains(NODE))[HA], "running"), {
      timeoutMs: 30_000,
      intervalMs: 250,
    });
    const actions = c.actions(NODE).slice(acted);
    assert.equal(actions[0], `watchdog-reset ${HA}`, actions.join("\n"));
    assert.ok(actions.includes(`start ${HA}`), actions.join("\n"));
    // Seen by the simulation's reset and by the boot id both: told as one.
    const told = back.logs.filter(
      (l) => l.msg === "the watchdog reset the node; its HA vms are to run again",
    );
    assert.deepEqual(
      told.map((l) => l.vms),
      [[HA]],
    );
  });
  it("an HA VM a reboot stopped is told again when the agent starts again before the control plane took it over (the control plane not reached, and the host rebooting twice)", async () => {
    assert.equal((await c.domains(NODE))[HA], "running");
    const agent = c.agents.get(NODE);
    assert.ok(agent !== undefined);
    agent.proc.kill("SIGTERM");
    if (agent.proc.exitCode === null) await new Promise((r) => agent.proc.once("exit", r));
    // The host reboots; the agent starts but cannot reach the control plane (partitioned: its
    // network, or the control plane, still coming up after a power cut). With simulated
    // storage it takes its first inventory before it connects (other storage: in its Hello).
    storage = "sim";
    const dir = join(c.dir, NODE);
    writeFileSync(join(dir, "faults.json"), `${JSON.stringify({ partitioned: true })}\n`);
    const second = `${randomUUID()}`;
    writeFileSync(bootIdFile, `${second}\n`);
    const cut = c.run(NODE);
    await cut.waitLog("the watchdog reset the node; its HA vms are to run again");
    // Its first inventory kept this boot's HA VMs running: none.
    await eventually(
      () =>
        assert.equal(
          (JSON.parse(readFileSync(join(dir, "host-boot.json"), "utf8")) as { bootId: string })
            .bootId,
          second,
        ),
      { timeoutMs: 10_000, intervalMs: 100 },
    );
    // The power flickers again before the control plane was ever told: the host reboots once
    // more, and the agent comes back reaching the control plane this time.
    cut.proc.kill("SIGTERM");
    if (cut.proc.exitCode === null) await new Promise((r) => cut.proc.once("exit", r));
    rmSync(join(dir, "faults.json"));
    writeFileSync(bootIdFile, `${randomUUID()}\n`);
    const back = c.run(NODE);
    await back.waitLog("connected to the control plane");
    await eventually(async () => assert.equal((await c.domains(NODE))[HA], "running"), {
      timeoutMs: 20_000,
      intervalMs: 250,
    });
  });
});
