// A managed VM whose node is gone for good, or whose domain went away
// behind the control plane's back: the operator can always delete it and
// remove the node, and its id is free again. Real daemon (dev mode) and a
// real debvisor-agent process serving node-04, killed with SIGKILL.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type * as grpc from "@grpc/grpc-js";
import { type ResolvedContext, resolveContext } from "../src/client/index.js";
import { NodeReadiness } from "../src/gen/debvisor/v1/node_pb.js";
import { VmOperationState } from "../src/gen/debvisor/v1/vm_pb.js";
import { type AgentProcess, enrollAgent, startAgent } from "./helpers/agent-process.js";
import { type DaemonProcess, HVCTL_BIN, startDevDaemon } from "./helpers/daemon-process.js";
import { callOutcome, devClients } from "./helpers/dev-clients.js";
import { eventually } from "./helpers/eventually.js";
import { hvctlInProcess } from "./helpers/hvctl-in-process.js";

const GIB = 1024n ** 3n;
// The node's fence delay. Between the agent's death and the delete made out of service
// "before it" the test runs hvctl four times; on a busy machine that takes seconds (most of
// it starting processes: all but the followed delete run in this process). The delay
// leaves room for them, and the test checks that the delete was made within it.
const FENCE_MS = 20_000;

describe("a VM whose node is gone, or that no node holds", () => {
  let dir: string;
  let daemon: DaemonProcess;
  let admin: ResolvedContext;
  let agent: AgentProcess | undefined;
  const channels: grpc.Client[] = [];
  const hvctl = (...args: string[]) => hvctlInProcess(join(dir, "hvctl.yaml"), ...args);
  const agentArgs = () => [
    ...["--dir", join(dir, "node-04"), "--server", daemon.grpcAddress, "--driver", "sim"],
    ...["--sim-vms", "0"],
  ];
  const clients = () => devClients(admin, channels);
  const readiness = async (id: string) =>
    (await clients().nodes.getNode({ id: { id } })).summary?.readiness;
  const finished = (id: string) =>
    eventually(
      async () => {
        const op = await clients().vms.getOperation({ operationId: id });
        assert.ok(op.state !== VmOperationState.PENDING && op.state !== VmOperationState.RUNNING);
        return op;
      },
      { timeoutMs: 20_000 },
    );

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "dv-lostnode-"));
    daemon = await startDevDaemon(dir, {
      cluster: { heartbeatIntervalMs: 1000, heartbeatMissedIntervals: 2, fenceDelayMs: FENCE_MS },
    });
    admin = resolveContext(join(dir, "hvctl.yaml"), "dev");
    await enrollAgent(hvctl, daemon.grpcAddress, dir, "node-04");
    agent = startAgent(agentArgs());
    await agent.waitLog("connected to the control plane");
  });
  after(() => {
    for (const ch of channels) ch.close();
    agent?.proc.kill("SIGKILL");
    daemon?.kill();
  });

  it("deletes a managed VM whose domain went away behind the control plane's back", async () => {
    const { vms } = clients();
    const created = await vms.createVm({
      vmId: "lost",
      nodeId: { id: "node-04" },
      spec: { vcpus: 1, memoryBytes: GIB },
    });
    assert.equal((await finished(created.id)).state, VmOperationState.SUCCEEDED);
    // The host is reinstalled: its hypervisor no longer has the domain.
    agent?.proc.kill("SIGKILL");
    await new Promise((r) => agent?.proc.once("exit", r));
    const file = join(dir, "node-04", "sim-world.json");
    const world = JSON.parse(readFileSync(file, "utf8")) as { vms: { info: { id: string } }[] };
    world.vms = world.vms.filter((v) => v.info.id !== "lost");
    writeFileSync(file, JSON.stringify(world));
    agent = startAgent(agentArgs());
    await agent.waitLog("connected to the control plane");

    const deleted = await hvctl("vm", "delete", "lost", "--force");
    // The node says what it found (nothing), and the record goes all the same.
    assert.match(deleted.stdout, /^delete lost on node-04: failed: VM_NOT_FOUND/);
    await eventually(async () =>
      assert.equal((await callOutcome(vms.getVm({ vmId: "lost" }))).reason, "VM_NOT_FOUND"),
    );
    // The id is free again.
    const again = await vms.createVm({
      vmId: "lost",
      nodeId: { id: "node-04" },
      spec: { vcpus: 1, memoryBytes: GIB },
    });
    assert.equal((await finished(again.id)).state, VmOperationState.SUCCEEDED);
    const gone = await hvctl("vm", "delete", "lost");
    assert.equal(gone.code, 0, gone.stderr);
  });

  it("ends nothing when a delete is retried after its VM was created again", async () => {
    const { vms } = clients();
    const spec = { vcpus: 1, memoryBytes: GIB };
    const c1 = await vms.createVm({ vmId: "x", nodeId: { id: "node-04" }, spec });
    assert.equal((await finished(c1.id)).state, VmOperationState.SUCCEEDED);
    const d1 = await vms.deleteVm({ vmId: "x", force: true, requestId: "del-k" });
    assert.equal((await finished(d1.id)).state, VmOperationState.SUCCEEDED);
    await eventually(async () =>
      assert.equal((await callOutcome(vms.getVm({ vmId: "x" }))).reason, "VM_NOT_FOUND"),
    );
    // The agent is slow for a moment: the new create waits while the client retries its delete.
    agent?.proc.kill("SIGSTOP");
    const c2 = await vms.createVm({ vmId: "x", nodeId: { id: "node-04" }, spec });
    const retried = await vms.deleteVm({ vmId: "x", force: true, requestId: "del-k" });
    agent?.proc.kill("SIGCONT");
    assert.equal(retried.id, d1.id, "the retry answers the first delete");
    assert.equal((await finished(c2.id)).state, VmOperationState.SUCCEEDED);
    await eventually(async () => assert.equal((await vms.getVm({ vmId: "x" })).managed, true));
    const gone = await hvctl("vm", "delete", "x");
    assert.equal(gone.code, 0, gone.stderr);
  });

  it("deletes a VM created on a node that died before running it, then removes the node", async () => {
    const { vms, nodes } = clients();
    // node-04 is up and reports no VM any more (the last case's is deleted).
    await eventually(async () => {
      const n = await nodes.getNode({ id: { id: "node-04" } });
      assert.equal(n.summary?.readiness, NodeReadiness.READY);
      assert.deepEqual(n.vms, []);
    });
    // The node's agent freezes (its host hangs) just as a VM is created on it, then dies.
    agent?.proc.kill("SIGSTOP");
    const created = await vms.createVm({
      vmId: "orphan",
      nodeId: { id: "node-04" },
      spec: { vcpus: 1, memoryBytes: GIB },
    });
    agent?.proc.kill("SIGKILL");
    await eventually(
      async () => assert.equal(await readiness("node-04"), NodeReadiness.NOT_READY),
      {
        timeoutMs: 30_000,
      },
    );
    assert.equal((await hvctl("node", "cordon", "node-04")).code, 0);
    // Removing it would leave the VM on no node: refused, saying which and what to do.
    const refused = await hvctl("node", "remove", "node-04");
    assert.equal(refused.code, 1);
    assert.match(
      refused.stderr,
      /node-04 cannot be removed: .*vm\(s\) orphan are placed on it \(fail them over or delete them first; on a node that is off, a delete waits for it until it is cordoned --out-of-service\)/,
    );
    // Cordoned only, the node may come back: a delete waits for it. hvctl following it
    // says why, and what gives up on the node.
    const follow = spawn(
      process.execPath,
      [HVCTL_BIN, "--config", join(dir, "hvctl.yaml"), "vm", "delete", "orphan", "--force"],
      { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, NO_COLOR: "1" } },
    );
    const exited = once(follow, "exit");
    let followed = "";
    follow.stderr.on("data", (d: Buffer) => {
      followed += d.toString();
    });
    await eventually(
      async () =>
        assert.match(
          followed,
          /note: node-04 is not ready: the operation waits until its agent is back .*hvctl node cordon node-04 --out-of-service\n/,
        ),
      { timeoutMs: 15_000 },
    );
    follow.kill("SIGINT");
    await exited;
    const waiting = await vms.deleteVm({ vmId: "orphan", force: true, requestId: "del-1" });
    assert.equal(waiting.state, VmOperationState.PENDING);
    // Said to be off, but not yet past its fence delay (it may be only paused): still waits.
    assert.equal((await hvctl("node", "cordon", "node-04", "--out-of-service")).code, 0);
    const early = await vms.deleteVm({ vmId: "orphan", force: true, requestId: "del-2" });
    // Past the delay it would be decided at once (below): this one was made before it.
    const downFor = Number((await nodes.getNode({ id: { id: "node-04" } })).summary?.notReadyForMs);
    assert.ok(
      downFor < FENCE_MS,
      `delete made only after the fence delay (not ready for ${downFor} ms)`,
    );
    assert.equal(early.state, VmOperationState.PENDING);
    // Past it, a delete is decided at once, nothing sent to the node.
    await eventually(
      async () => {
        const n = (await nodes.getNode({ id: { id: "node-04" } })).summary;
        assert.ok(Number(n?.notReadyForMs ?? 0) > FENCE_MS, `not ready for ${n?.notReadyForMs} ms`);
      },
      { timeoutMs: FENCE_MS + 30_000 },
    );
    const deleted = await hvctl("vm", "delete", "orphan", "--force");
    assert.equal(deleted.code, 0, deleted.stderr);
    assert.match(deleted.stdout, /^delete orphan on node-04: succeeded\n$/);
    await eventually(async () =>
      assert.equal((await callOutcome(vms.getVm({ vmId: "orphan" }))).reason, "VM_NOT_FOUND"),
    );
    // What else waited there for it ended: the create (its capacity freed) and the deletes.
    for (const id of [created.id, waiting.id, early.id]) {
      const op = await finished(id);
      assert.equal(op.state, VmOperationState.CANCELLED, id);
      assert.match(op.message, /orphan was deleted while node-04 was out of service/);
    }
    const removed = await hvctl("node", "remove", "node-04");
    assert.equal(removed.code, 0, removed.stderr);
    assert.equal(removed.stdout, "node node-04 removed\n");
    // The id is free again, on a node that is there.
    const again = await vms.createVm({
      vmId: "orphan",
      nodeId: { id: "node-01" },
      spec: { vcpus: 1, memoryBytes: GIB },
    });
    assert.equal((await finished(again.id)).state, VmOperationState.SUCCEEDED);
  });
});
