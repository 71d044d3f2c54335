// A node whose id has capitals (the
// upstream contract's hostnames and UUIDs come in any case) reports the VM
// CreateVm placed on it. Its own report must confirm the placement, not be
// refused as a stale copy of a VM "placed elsewhere".
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type * as grpc from "@grpc/grpc-js";
import { type ResolvedContext, resolveContext } from "../src/client/index.js";
import { VmState } from "../src/gen/debvisor/v1/vm_pb.js";
import { type DaemonProcess, startDevDaemon } from "./helpers/daemon-process.js";
import { devClients } from "./helpers/dev-clients.js";

const GIB = 1024n ** 3n;
const nowS = () => BigInt(Math.floor(Date.now() / 1000));

describe("a VM created on a node whose id has capitals", () => {
  let dir: string;
  let daemon: DaemonProcess;
  let admin: ResolvedContext;
  const channels: grpc.Client[] = [];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "dv-case-"));
    daemon = await startDevDaemon(dir, {
      simulation: { nodes: 1, vmsPerNode: 0 },
      cluster: { failover: { enabled: false } },
    });
    admin = resolveContext(join(dir, "hvctl.yaml"), "dev");
  });
  after(() => {
    for (const ch of channels) ch.close();
    daemon?.kill();
  });

  it("shows the VM running on its node once that node reports it", async () => {
    const id = "HV-Node07";
    // Registered through the upstream contract (its hostnames come in any case), as in
    // test/interop.test.ts; enrolled agents' names are lower-case.
    const node = devClients(admin, channels);
    await node.nodes.registerNode({
      id: { id },
      hostname: "hv-node07.example",
      capacity: { cpuCores: 16, memoryBytes: 64n * GIB },
    });
    await node.nodes.heartbeat({ nodeId: { id }, timestamp: { seconds: nowS() } });
    const root = devClients(admin, channels);
    const op = await root.vms.createVm({
      vmId: "db-1",
      nodeId: { id },
      spec: { vcpus: 1, memoryBytes: GIB },
    });
    assert.equal(op.nodeId?.id, id);
    // The node ran the create and reports the VM, twice.
    for (let i = 0; i < 2; i++) {
      await node.nodes.heartbeat({
        nodeId: { id },
        timestamp: { seconds: nowS() + BigInt(i) },
        vms: [{ id: "db-1", name: "db-1", state: VmState.RUNNING, vcpus: 1, memoryBytes: GIB }],
      });
    }
    const vm = await root.vms.getVm({ vmId: "db-1" });
    const conflicts = (await root.vms.listVms({})).vms
      .filter((v) => v.staleCopyNodes.length > 0)
      .map((v) => `${v.id}: stale on ${v.staleCopyNodes.join(",")}`);
    assert.deepEqual(
      { state: VmState[vm.state], conflicts },
      { state: "RUNNING", conflicts: [] },
      `vm get: ${JSON.stringify({ node: vm.nodeId?.id, state: VmState[vm.state], stale: vm.staleCopyNodes })}`,
    );
  });
});
