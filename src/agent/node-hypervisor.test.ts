import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { silentLogger } from "../core/index.js";
import {
  type CommandRunner,
  createVirshSession,
  monotonicNs,
  runCommand,
} from "../drivers/index.js";
import { agentConfigSchema } from "./agent-config.js";
import { type NodeHypervisor, openNodeHypervisor } from "./node-hypervisor.js";
import { createSelfFence } from "./self-fence.js";

/** An agent's simulated node with `vms` generated (running) domains in a directory of its own. */
function simulatedNode(vms: number) {
  const dir = mkdtempSync(join(tmpdir(), "dv-node-hv-"));
  const config = agentConfigSchema.parse({ dir, driver: { kind: "sim" }, sim: { vms } });
  return openNodeHypervisor(config, "node-x", silentLogger);
}

describe("openNodeHypervisor (sim)", () => {
  it("reports the memory its running VM has, and its vCPUs as load; none once it stops", async () => {
    const hv = simulatedNode(1);
    try {
      const signal = AbortSignal.timeout(5000);
      const capacity = hv.info.capacity;
      assert.ok(capacity !== undefined && capacity.memoryBytes > 0n);
      const { health } = await hv.inventory(signal);
      const [vm] = health.vms;
      assert.ok(vm !== undefined && vm.memoryBytes > 0n && vm.vcpus > 0);
      assert.ok(health.memUsedPct > 0, "the node shows memory in use");
      // What a listing shows as used memory (percent of capacity) is what the VM has.
      assert.equal(
        Math.round((health.memUsedPct / 100) * Number(capacity.memoryBytes)),
        Number(vm.memoryBytes),
      );
      assert.equal(health.cpuLoad, vm.vcpus);

      await hv.driver.stop(vm.id, { force: true, signal });
      const stopped = (await hv.inventory(signal)).health;
      assert.equal(stopped.vms.length, 1, "the stopped VM is still listed");
      assert.equal(stopped.memUsedPct, 0);
      assert.equal(stopped.cpuLoad, 0);
    } finally {
      hv.close();
    }
  });

  it("reports no use on a node without VMs", async () => {
    const hv = simulatedNode(0);
    try {
      const { health } = await hv.inventory(AbortSignal.timeout(5000));
      assert.deepEqual([health.vms.length, health.memUsedPct, health.cpuLoad], [0, 0, 0]);
    } finally {
      hv.close();
    }
  });
});

const hasVirsh = spawnSync("virsh", ["--version"], { encoding: "utf8" }).status === 0;
const VM_XMLNS = "https://debvisor.io/xmlns/vm/1";
const MS = 1_000_000n;

/** One domain of libvirt's test driver; `ha` undefined: no DebVisor metadata (defined by hand). */
function testDomain(name: string, ha: boolean | undefined, running: boolean): string {
  const metadata =
    ha === undefined ? "" : `<metadata><dv:vm xmlns:dv='${VM_XMLNS}' ha='${ha}'/></metadata>`;
  return `<domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>
    <name>${name}</name><memory unit='KiB'>131072</memory><vcpu>1</vcpu>
    <os><type arch='x86_64'>hvm</type></os>${metadata}
    <test:runstate>${running ? 1 : 5}</test:runstate></domain>`;
}

/**
 * A libvirt node (libvirt's test driver, test:///DIR/node.xml) of the
 * domains the control plane and an operator leave: HA running, HA stopped,
 * not HA, and one defined by hand without DebVisor's metadata.
 */
function libvirtNode() {
  const base = /^[A-Za-z0-9._/-]+$/.test(tmpdir()) ? tmpdir() : "/tmp";
  const dir = mkdtempSync(join(base, "dv-node-lv-"));
  writeFileSync(
    join(dir, "node.xml"),
    `<node><cpu><mhz>2400</mhz><nodes>1</nodes><sockets>1</sockets><cores>4</cores><threads>1</threads></cpu>
  <memory>8388608</memory>
  ${testDomain("ha-01", true, true)}
  ${testDomain("ha-02", true, false)}
  ${testDomain("plain-01", false, true)}
  ${testDomain("hand-01", undefined, true)}
</node>\n`,
  );
  const uri = `test://${dir}/node.xml`;
  const config = agentConfigSchema.parse({ dir, driver: { kind: "libvirt", uri } });
  return {
    uri,
    /** A file holding a new running HA domain's XML, for `virsh define` (one arriving by hand). */
    file(name: string): string {
      const path = join(dir, `${name}.xml`);
      writeFileSync(path, testDomain(name, true, true));
      return path;
    },
    open: (virshRunner?: CommandRunner) =>
      openNodeHypervisor(config, "node-lv", silentLogger, { virshRunner }),
  };
}

/** `hv`'s self-fence as the agent wires it, on a manual clock, under a 1 s window with its Hello confirmed. */
async function selfFenceOf(hv: NodeHypervisor) {
  const clock = { ns: monotonicNs() };
  const fenced: string[] = [];
  const fence = createSelfFence({
    driver: hv.driver,
    isHa: (vmId) => hv.isHa(vmId),
    logger: silentLogger,
    now: () => clock.ns,
    onFenced: (vmId) => fenced.push(vmId),
  });
  fence.configure(1000);
  fence.sending(0n);
  await fence.guard(() => fence.renewed(0n));
  return { fence, clock, fenced };
}

describe("openNodeHypervisor (libvirt, virsh -c test:///node.xml)", {
  skip: !hasVirsh && "virsh is not installed",
}, () => {
  it("knows each domain's HA flag from DebVisor's metadata: reported, and what isHa answers", async () => {
    const calls: string[][] = [];
    const counting: CommandRunner = (program, args, options) => {
      calls.push([...args]);
      return runCommand(program, args, options);
    };
    const hv = libvirtNode().open(counting);
    const signal = AbortSignal.timeout(20_000);
    const { health } = await hv.inventory(signal);
    assert.deepEqual(
      Object.fromEntries(health.vms.map((v) => [v.id, v.ha])),
      { "ha-01": true, "ha-02": true, "hand-01": false, "plain-01": false },
      "a domain without the metadata (defined by hand) is not HA",
    );
    assert.deepEqual(
      ["ha-01", "ha-02", "plain-01", "hand-01", "ghost-01"].map((id) => hv.isHa(id)),
      [true, true, false, false, false],
    );
    // Read when a domain appears, not at every report.
    const reads = () => calls.filter((a) => a.includes("metadata")).length;
    assert.equal(reads(), 4);
    await hv.inventory(signal);
    assert.equal(reads(), 4, "known domains' metadata is not read again");
  });

  it("self-fencing hard-stops the running HA domain only once the window lapses", async () => {
    const node = libvirtNode();
    const session = createVirshSession({ uri: node.uri });
    const hv = node.open(session.run);
    // As the agent wires it (agent-runner.ts), before any report was made.
    const { fence, clock, fenced } = await selfFenceOf(hv);
    try {
      clock.ns += 2000n * MS;
      const began = Date.now();
      await fence.guard(() => undefined);
      // The listing's own bound is 30 s; flag reads give up after HA_FLAG_READS_TIMEOUT_MS (5 s).
      const tookMs = Date.now() - began;
      assert.ok(
        tookMs < 20_000,
        `the fence acted after ${tookMs} ms, not within the flag reads' bound`,
      );
      const states = Object.fromEntries(
        (await hv.domains(AbortSignal.timeout(20_000))).map((d) => [d.id, d.state]),
      );
      assert.deepEqual(states, {
        "ha-01": "stopped",
        "ha-02": "stopped",
        "hand-01": "running",
        "plain-01": "running",
      });
      assert.deepEqual(fenced, ["ha-01"]);
    } finally {
      fence.close();
      await session.close();
    }
  });

  /**
   * A domain that appeared since the last report (migrated in, defined by
   * hand) is read when the fence check lists, just before it stops
   * anything. Its `virsh metadata` hung: the read ran out the listing's
   * time, and the listing failed with it, so the check stopped no HA domain,
   * at this tick or any later one (each read the new domain again). Then
   * the check waited out the listing's 30 s before stopping them; the flag
   * reads now give up after 5 s.
   */
  it("a hung metadata read of a new domain does not keep the fence from stopping the known HA domains", async () => {
    const node = libvirtNode();
    const session = createVirshSession({ uri: node.uri });
    let hanging = true;
    const hung: CommandRunner = (program, args, options) =>
      hanging && args[2] === "metadata" && args.includes("late-01")
        ? runCommand("sleep", ["120"], options)
        : session.run(program, args, options);
    const hv = node.open(hung);
    const { fence, clock, fenced } = await selfFenceOf(hv);
    try {
      await hv.inventory(AbortSignal.timeout(20_000));
      assert.equal(hv.isHa("ha-01"), true);
      await session.run("virsh", ["-c", node.uri, "define", node.file("late-01")], {
        timeoutMs: 20_000,
      });
      clock.ns += 2000n * MS;
      const began = Date.now();
      await fence.guard(() => undefined);
      // The listing's own bound is 30 s; flag reads give up after HA_FLAG_READS_TIMEOUT_MS (5 s).
      const tookMs = Date.now() - began;
      assert.ok(
        tookMs < 20_000,
        `the fence acted after ${tookMs} ms, not within the flag reads' bound`,
      );
      const states = Object.fromEntries(
        (
          await session.run(
            "virsh",
            ["-c", node.uri, "list", "--all", "--name", "--state-running"],
            {
              timeoutMs: 20_000,
            },
          )
        ).stdout
          .split("\n")
          .filter((l) => l.trim() !== "")
          .map((l) => [l.trim(), "running"]),
      );
      assert.deepEqual(fenced, ["ha-01"], "the known HA domain hard-stopped");
      assert.equal(states["ha-01"], undefined, "ha-01 no longer runs");
    } finally {
      // The ticks queued meanwhile each list again: let them through before closing.
      hanging = false;
      fence.close();
      await fence.guard(() => undefined);
      await session.close();
    }
  });
});
