// A stolen node certificate and another tenant's new VM: CreateVm placed it
// on another node, whose agent has not run the create yet. The thief's
// report of the VM is a conflict, never a placement: the tenant keeps its
// VM where it was placed, and its calls go there. (Found by an adversarial
// review: the report used to move the placement to the thief's node.)
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type * as grpc from "@grpc/grpc-js";
import { type ResolvedContext, resolveContext } from "../src/client/index.js";
import { VmState } from "../src/gen/debvisor/v1/vm_pb.js";
import { enrollAgent } from "./helpers/agent-process.js";
import { type DaemonProcess, startDevDaemon } from "./helpers/daemon-process.js";
import { agentContext, bearerContext, devClients } from "./helpers/dev-clients.js";
import { hvctlInProcess } from "./helpers/hvctl-in-process.js";

const GIB = 1024n ** 3n;
const nowS = () => BigInt(Math.floor(Date.now() / 1000));

describe("a node certificate reporting a VM created on another node", () => {
  let dir: string;
  let daemon: DaemonProcess;
  let admin: ResolvedContext;
  const channels: grpc.Client[] = [];
  const hvctl = (...args: string[]) => hvctlInProcess(join(dir, "hvctl.yaml"), ...args);
  const asNode = (agentDir: string) => devClients(agentContext(admin, agentDir), channels);

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "dv-hijack-"));
    daemon = await startDevDaemon(dir, {
      simulation: { nodes: 3, vmsPerNode: 1 },
      cluster: { failover: { enabled: false } },
    });
    admin = resolveContext(join(dir, "hvctl.yaml"), "dev");
  });
  after(() => {
    for (const ch of channels) ch.close();
    daemon?.kill();
  });

  it("keeps a created VM on the node it was placed on when another node's certificate reports it", async () => {
    const server = daemon.grpcAddress;
    // Two enrolled nodes whose agents are not running (yet): node-07 is the victim's host,
    // node-08 is the attacker's stolen certificate.
    const victimDir = await enrollAgent(hvctl, server, dir, "node-07");
    const thiefDir = await enrollAgent(hvctl, server, dir, "node-08");
    const victimNode = asNode(victimDir);
    const thief = asNode(thiefDir);
    for (const [c, id] of [
      [victimNode, "node-07"],
      [thief, "node-08"],
    ] as const) {
      await c.nodes.registerNode({
        id: { id },
        hostname: `${id}.example`,
        capacity: { cpuCores: 16, memoryBytes: 64n * GIB },
      });
      await c.nodes.heartbeat({ nodeId: { id }, timestamp: { seconds: nowS() } });
    }
    const root = devClients(admin, channels);
    const key = await root.access.createApiKey({
      principal: "acme-ops",
      roles: ["operator"],
      tenant: "acme",
    });
    const acme = devClients(bearerContext(admin, key.token), channels).vms;
    const op = await acme.createVm({
      vmId: "acme-db",
      nodeId: { id: "node-07" },
      spec: {
        vcpus: 1,
        memoryBytes: GIB,
      },
    });
    assert.equal(op.nodeId?.id, "node-07");
    const before = await acme.getVm({ vmId: "acme-db" }).catch((e) => e as Error);
    // The stolen node-08 certificate reports acme's VM as running on node-08.
    await thief.nodes.heartbeat({
      nodeId: { id: "node-08" },
      timestamp: { seconds: nowS() },
      vms: [
        {
          id: "acme-db",
          name: "acme-db",
          state: VmState.RUNNING,
          vcpus: 1,
          memoryBytes: GIB,
        },
      ],
    });
    // The tenant sees what it saw before the report, not the thief's made-up state.
    const seen = await acme.getVm({ vmId: "acme-db" }).catch((e) => e as Error);
    assert.deepEqual(
      seen instanceof Error ? seen.message : `${seen.nodeId?.id} ${VmState[seen.state]}`,
      before instanceof Error ? before.message : `${before.nodeId?.id} ${VmState[before.state]}`,
    );
    const listed = (await root.vms.listVms({})).vms.filter((v) => v.id === "acme-db");
    assert.ok(
      listed.every((v) => v.nodeId?.id !== "node-08"),
      `not placed on the thief's node: ${JSON.stringify(listed.map((v) => v.nodeId?.id))}`,
    );
    // The tenant's own call goes to the node its VM was placed on.
    const stop = await acme.stopVm({ vmId: "acme-db", force: true });
    assert.equal(stop.nodeId?.id, "node-07");
  });
});
