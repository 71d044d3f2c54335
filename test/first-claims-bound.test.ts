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
import { silentLogger } from "../src/core/index.js";
import { VmState } from "../src/gen/debvisor/v1/vm_pb.js";
import { createSqliteStore, rangeAll } from "../src/store/index.js";
import { connectInProcess, hubOn } from "./helpers/agent-stream.js";
import { eventually } from "./helpers/eventually.js";

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
