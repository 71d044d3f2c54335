// What a caller sees right after a VM operation on an agent's node: the VM
// as the operation left it, not as the node's last heartbeat had it. The
// heartbeat interval here is a minute, so only the report the agent sends
// before each result can show it.
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { type AgentProcess, enrollAgent, startAgent } from "./helpers/agent-process.js";
import { type DaemonProcess, startDevDaemon } from "./helpers/daemon-process.js";
import { hvctlInProcess } from "./helpers/hvctl-in-process.js";

describe("a VM operation's result on an agent's node", () => {
  let dir: string;
  let daemon: DaemonProcess;
  let agent: AgentProcess;
  const hv = (...args: string[]) => hvctlInProcess(join(dir, "hvctl.yaml"), ...args);
  const ok = async (...args: string[]) => {
    const r = await hv(...args);
    assert.equal(r.code, 0, `hvctl ${args.join(" ")}: ${r.stderr}`);
    return r.stdout;
  };
  /** The VM as `vm get` shows it now: its state, or undefined when it reads as missing. */
  const shown = async (vm: string) => {
    const r = await hv("vm", "get", vm, "-o", "json");
    if (r.code === 5) return undefined;
    assert.equal(r.code, 0, r.stderr);
    const got = JSON.parse(r.stdout) as { state: string; managed: boolean };
    return `${got.state}${got.managed ? "" : " (unmanaged)"}`;
  };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "dv-report-first-"));
    daemon = await startDevDaemon(dir, { cluster: { heartbeatIntervalMs: 60_000 } });
    const hvctl = (...args: string[]) => hvctlInProcess(join(dir, "hvctl.yaml"), ...args);
    const agentDir = await enrollAgent(hvctl, daemon.grpcAddress, dir, "node-04");
    agent = startAgent(["--dir", agentDir, "--server", daemon.grpcAddress, "--driver", "sim"]);
    await agent.waitLog("connected to the control plane");
  });
  after(() => {
    agent?.proc.kill("SIGKILL");
    daemon?.kill();
  });

  it("names an agent enrolled on its own after itself, not after the generated first node", async () => {
    const node = JSON.parse(await ok("node", "get", "node-04", "-o", "json")) as {
      summary: { info: { hostname: string } };
    };
    assert.equal(node.summary.info.hostname, "node-04.sim.debvisor.internal");
  });

  it("shows the VM started, stopped and gone as soon as each operation succeeded", async () => {
    await ok("vm", "create", "fresh-vm", "--cpu", "1", "--memory", "256MiB", "--node", "node-04");
    assert.equal(await shown("fresh-vm"), "VM_STATE_STOPPED");
    await ok("vm", "start", "fresh-vm");
    assert.equal(await shown("fresh-vm"), "VM_STATE_RUNNING");
    await ok("vm", "stop", "fresh-vm", "--force");
    assert.equal(await shown("fresh-vm"), "VM_STATE_STOPPED");
    await ok("vm", "delete", "fresh-vm");
    // Not an unmanaged VM (one an operator might adopt) until the next heartbeat: gone.
    assert.equal(await shown("fresh-vm"), undefined);
    const listed = JSON.parse(await ok("vm", "list", "--node", "node-04", "-o", "json")) as {
      vms: { id: string }[];
    };
    assert.equal(
      listed.vms.some((v) => v.id === "fresh-vm"),
      false,
    );
  });
});
