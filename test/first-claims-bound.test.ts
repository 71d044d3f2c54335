// Found by an adversarial review (8 December 2026): a stolen node certificate
// made the control plane write a VM record (vms/<id>) for every VM id it reports that no node
// holds ("the first node to report an unplaced VM holds it"), 50 per report
// (MAX_CLAIMS). Nothing ever removes a record whose VM no node reports any
// more (only a DeleteVm that succeeded does), so a node that reports fresh
// made-up ids in each heartbeat grows the store, and every replica's
// in-memory copy of the VM records (vmRecords.all()), without bound: at the
// stream's 100 messages a second, 5,000 records a second, each also a
// "Placed" event. A node runs at most the 1,000 VMs one report may list;
// what its word alone writes should stay within that. Each node's claims of
// VMs no record holds now have a budget (first-claims.ts): 1,000 at once, then
// 1,000 a day.
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import type * as grpc from "@grpc/grpc-js";
import { resolveContext } from "../src/client/index.js";
import { silentLogger } from "../src/core/index.js";
import { VmState } from "../src/gen/debvisor/v1/vm_pb.js";
import { createSqliteStore, rangeAll } from "../src/store/index.js";
import { connectInProcess, hubOn } from "./helpers/agent-stream.js";
import { agentContext, bearerContext, callOutcome, devClients } from "./helpers/dev-clients.js";
import { eventually } from "./helpers/eventually.js";
import { daemonWithNode } from "./helpers/node-stream.js";

/** The most VMs one report may list (agent.proto / node.proto rules). */
const MAX_REPORTED = 1000;

describe("VM records a node's reports write on its word alone", () => {
  it("VM records written on a node's word alone stay bounded once it stops reporting them", async () => {
    const store = createSqliteStore({
      path: join(mkdtempSync(join(tmpdir(), "dv-attack-vmrec-")), "state.db"),
      logger: silentLogger,
    });
    const h = hubOn(store);
    const a = connectInProcess(h.hub, "node-x", [], h.clock.now());
    await eventually(() => assert.ok(a.received.some((m) => m.kind.case === "welcome")));
    let seq = 0n;
    const beat = async (ids: string[]) => {
      h.clock.advance(1000);
      const ms = h.clock.now();
      const sequence = ++seq;
      a.send({
        kind: {
          case: "heartbeat",
          value: {
            sequence,
            health: {
              nodeId: { id: "node-x" },
              timestamp: { seconds: BigInt(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1e6 },
              vms: ids.map((id) => ({
                id,
                name: id,
                state: VmState.RUNNING,
                vcpus: 1,
                memoryBytes: 1n << 30n,
                nodeId: { id: "node-x" },
              })),
            },
          },
        },
      });
      await eventually(
        () =>
          assert.ok(
            a.received.some(
              (m) => m.kind.case === "leaseRenewed" && m.kind.value.sequence === sequence,
            ),
          ),
        { timeoutMs: 15_000, intervalMs: 5 },
      );
    };
    // 30 reports of 50 fresh ids each (each fully claimed), 1,500 ids in all,
    // never more than 50 listed at once; then a report with none.
    for (let r = 0; r < 30; r++)
      await beat(Array.from({ length: 50 }, (_, i) => `ghost-${r}-${i}`));
    await beat([]);
    let records = 0;
    for await (const kv of rangeAll(store, "vms/")) if (kv.key.includes("ghost-")) records++;
    await a.close();
    h.close();
    await store.close();
    assert.ok(
      records <= MAX_REPORTED,
      `a node that lists at most 50 VMs at a time (none now) left ${records} VM records written on its word alone (bound: ${MAX_REPORTED})`,
    );
  });
});

// The same records squatted VM ids: a record of an unmanaged VM no node lists
// any more, with no tenant, made every tenant's CreateVm of that id
// VM_EXISTS (vm-locator.ts refuseExisting), and nothing removed it (a
// DeleteVm goes to the node that reported it, the thief). One report of
// likely names ("web-1", "db-1" ...) took them from every tenant for good.
// Such a record now goes with the report that no longer lists it
// (vanished-vms.ts).
describe("a VM id a node reported once", () => {
  it("a tenant may create a VM under an id a node once reported and no longer does", async () => {
    const { dir, daemon } = await daemonWithNode(
      "dv-attack-squat-",
      { cluster: { failover: { enabled: false } } },
      "node-x",
    );
    const channels: grpc.Client[] = [];
    try {
      const admin = resolveContext(join(dir, "hvctl.yaml"), "dev");
      const root = devClients(admin, channels);
      const thief = devClients(agentContext(admin, join(dir, "node-x")), channels);
      const at = (s: number) => ({ seconds: BigInt(Math.floor(Date.now() / 1000) + s) });
      await thief.nodes.registerNode({ id: { id: "node-x" }, hostname: "node-x.example" });
      await thief.nodes.heartbeat({
        nodeId: { id: "node-x" },
        timestamp: at(-1),
        vms: [
          { id: "web-1", name: "web-1", state: VmState.RUNNING, vcpus: 1, memoryBytes: 1n << 30n },
        ],
      });
      await thief.nodes.heartbeat({ nodeId: { id: "node-x" }, timestamp: at(0), vms: [] });
      const key = await root.access.createApiKey({
        principal: "acme-ops",
        roles: ["operator"],
        tenant: "acme",
      });
      const acme = devClients(bearerContext(admin, key.token), channels).vms;
      const create = (vmId: string) =>
        callOutcome(acme.createVm({ vmId, spec: { vcpus: 1, memoryBytes: 1n << 30n } }));
      const fresh = await create("web-2");
      const squatted = await create("web-1");
      const listed = (await root.vms.listVms({})).vms.map((v) => v.id);
      assert.notEqual(
        squatted.reason,
        "VM_EXISTS",
        `acme's CreateVm of web-1, which node-x reported once and no longer does (ListVms: ${JSON.stringify(listed)}), got ${squatted.reason}; of a never reported id: ${fresh.reason || "OK"}`,
      );
    } finally {
      for (const c of channels) c.close();
      daemon.kill();
    }
  });
});
