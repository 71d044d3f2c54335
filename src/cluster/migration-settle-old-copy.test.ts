import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { createManualClock, RpcError, silentLogger } from "../core/index.js";
import type { HypervisorDriver } from "../drivers/index.js";
import { HealthSchema, NodeInfoSchema, NodeReadiness } from "../gen/debvisor/v1/node_pb.js";
import { type VmInfo, VmInfoSchema, VmState } from "../gen/debvisor/v1/vm_pb.js";
import { createSqliteStore } from "../store/index.js";
import type { Executors } from "./executors.js";
import { createInventory } from "./inventory.js";
import { createMigrationJournal } from "./migration-journal.js";
import { createMigrationRecords } from "./migration-records.js";
import { createMigrationSettler } from "./migration-settle.js";

/**
 * From the review of the rule that takes a stale copy on a migration's
 * target for the VM arrived there: an OLD stale copy on the target (left
 * by an earlier failover, no cleanup sent yet: the controller is off, or
 * had not run) and a source that is only NOT_READY (partitioned, the VM
 * still running there); the runner died before the hand-over. The copy
 * must not be taken: the migration rolls back, the placement stays on the
 * source, and nothing is started on the target.
 */
describe("settling with an old stale copy on the target", () => {
  for (const live of [true, false])
    it(`does not take an old copy for the arrival (live=${live})`, async () => {
      const dir = mkdtempSync(join(tmpdir(), "dv-oldcopy-"));
      const store = createSqliteStore({ path: join(dir, "state.db"), logger: silentLogger });
      const clock = createManualClock(1_000_000);
      const inventory = createInventory({ store, clock, heartbeatTtlMs: 30_000 });
      try {
        const running = create(VmInfoSchema, {
          id: "v1",
          state: VmState.RUNNING,
          vcpus: 1,
          memoryBytes: 1024n ** 3n,
        });
        const stopped = { ...running, state: VmState.STOPPED };
        let at = 1n;
        const report = async (node: string, vms: VmInfo[]) => {
          await inventory.heartbeat(
            create(HealthSchema, {
              nodeId: { id: node },
              timestamp: { seconds: 900n + at++ },
              vms: vms.map((v) => ({
                id: v.id,
                state: v.state,
                vcpus: v.vcpus,
                memoryBytes: v.memoryBytes,
                nodeId: { id: node },
              })),
            }),
          );
        };
        for (const id of ["src", "dst"])
          await inventory.register(create(NodeInfoSchema, { id: { id } }), "test");
        // The VM runs on src (its placement, after an earlier failover from dst);
        // dst came back with its old stopped copy: a stale copy, no cleanup sent.
        await report("src", [running]);
        await report("dst", [stopped]);
        const before = (await inventory.vmRecords.all()).get("v1")?.rec;
        assert.equal(before?.nodeId, "src");
        assert.equal(before?.staleCopies.length, 1);
        assert.equal(before?.staleCopies[0]?.cleanupSent, false);

        // A migration src -> dst whose runner died before the hand-over.
        const records = createMigrationRecords(store);
        const journal = createMigrationJournal({ records, runnerId: "me", clock });
        const job = {
          ...journal.newJob({
            vm: { ...running, nodeId: { $typeName: "debvisor.v1.NodeId", id: "src" } },
            source: "src",
            target: "dst",
            live,
            allowDowntime: !live,
            kind: "migrate",
            requestedBy: "operator",
          }),
          runner: "dead",
          status: { state: "running", phase: "preparing" },
        } as const;
        assert.ok(await journal.begin(job, 0, AbortSignal.timeout(5000)));
        journal.disown(job.id);

        // src is partitioned (NOT_READY, the VM still running there); dst reports on.
        clock.advance(31_000);
        await report("dst", [stopped]);
        assert.equal((await inventory.getNode("src"))?.summary.readiness, NodeReadiness.NOT_READY);

        const starts: string[] = [];
        // As agents' executors: answers from READY nodes' reports, else BACKEND_UNAVAILABLE.
        const fromReports = (node: string) =>
          ({
            info: async (id: string) => {
              const got = await inventory.getNode(node);
              if (got?.summary.readiness !== NodeReadiness.READY)
                throw new RpcError("BACKEND_UNAVAILABLE");
              const v = got.vms.find((x) => x.id === id);
              return v === undefined
                ? undefined
                : {
                    id,
                    state: v.state === VmState.RUNNING ? "running" : "stopped",
                    vcpus: 1,
                    memoryBytes: 0n,
                    persistent: true,
                  };
            },
            start: async (id: string) => {
              starts.push(`${node}:${id}`);
            },
          }) as unknown as HypervisorDriver;
        const settler = createMigrationSettler({
          inventory,
          executors: {
            forNode: fromReports,
            destination: () => ({ nodeId: "", uri: "" }),
          } as Executors,
          journal,
          runners: { id: "me", isAlive: async () => false, close: async () => {} },
          clock,
          logger: silentLogger,
        });
        assert.equal(await settler.reconcile(), 1);
        const settled = (await journal.list()).find((j) => j.job.id === job.id)?.job;
        const after = (await inventory.vmRecords.all()).get("v1")?.rec;
        console.log(
          `live=${live}: settled ${settled?.status.state}/${settled?.status.phase}: ${settled?.message}; ` +
            `placed on ${after?.nodeId} gen ${before?.generation}->${after?.generation}; starts ${JSON.stringify(starts)}`,
        );
        assert.deepEqual(starts, [], "no start of the old copy");
        assert.equal(after?.nodeId, "src", "placement stays on the source");
        assert.equal(settled?.status.state, "failed", settled?.message);
      } finally {
        inventory.close();
        await store.close();
        rmSync(dir, { recursive: true, force: true });
      }
    });
});
