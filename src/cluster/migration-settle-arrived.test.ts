import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { createManualClock, msFromTimestamp, RpcError, silentLogger } from "../core/index.js";
import type { HypervisorDriver } from "../drivers/index.js";
import { FailoverRecordSchema } from "../gen/debvisor/store/v1/records_pb.js";
import { HealthSchema, NodeInfoSchema, NodeReadiness } from "../gen/debvisor/v1/node_pb.js";
import { type VmInfo, VmInfoSchema, VmState } from "../gen/debvisor/v1/vm_pb.js";
import { createSqliteStore, getMessage } from "../store/index.js";
import type { Executors } from "./executors.js";
import { createHaRestore, noteSelfFenced } from "./ha-restore.js";
import { createInventory } from "./inventory.js";
import { createMigrationJournal } from "./migration-journal.js";
import { createMigrationRecords } from "./migration-records.js";
import { createMigrationSettler } from "./migration-settle.js";

const running = create(VmInfoSchema, {
  id: "v1",
  state: VmState.RUNNING,
  vcpus: 1,
  memoryBytes: 1024n ** 3n,
});
const stopped = { ...running, state: VmState.STOPPED };

/** After settling: the nodes report again, and HA restore runs over their reports. */
interface Afterwards {
  report(node: string, vms: VmInfo[]): Promise<void>;
  /** HA restore as the failover controller's pass runs it for READY nodes (their stored reports). */
  pass(): Promise<void>;
  /** The node's agent is back: it can be asked again. */
  reachable(node: string): void;
  /** Where v1 is placed now. */
  placed(): Promise<string | undefined>;
  /** Whether v1 is marked lost running (for HA restore). */
  marked(): Promise<boolean>;
  /** The starts sent so far, as node:vm. */
  readonly starts: string[];
}

/**
 * Nodes src and dst on a real store and inventory, a migration of v1 from
 * src to dst whose runner is dead, and a settler that asks the nodes
 * through their reports, as agents' executors do (a node not READY, or one
 * `cut` off, its agent gone, cannot be asked), and marks HA VMs for HA
 * restore as the daemon's does. `run` gets the world and answers nothing;
 * the settled job, where v1 is placed and the starts sent are then checked
 * by the caller, and `after` may go on once it is settled.
 */
async function settling(
  live: boolean,
  run: (w: {
    report(node: string, vms: VmInfo[]): Promise<void>;
    migrate(): Promise<string>;
    advance(ms: number): void;
    cut(node: string): void;
  }) => Promise<void>,
  after?: (w: Afterwards) => Promise<void>,
) {
  const dir = mkdtempSync(join(tmpdir(), "dv-arrived-"));
  const cut = new Set<string>();
  const store = createSqliteStore({ path: join(dir, "state.db"), logger: silentLogger });
  const clock = createManualClock(1_000_000);
  const inventory = createInventory({ store, clock, heartbeatTtlMs: 30_000 });
  const journal = createMigrationJournal({
    records: createMigrationRecords(store),
    runnerId: "me",
    clock,
  });
  try {
    for (const id of ["src", "dst"])
      await inventory.register(create(NodeInfoSchema, { id: { id } }), "test");
    let at = 1n;
    let jobId = "";
    const report = async (node: string, vms: VmInfo[]) => {
      await inventory.heartbeat(
        create(HealthSchema, {
          nodeId: { id: node },
          timestamp: { seconds: BigInt(Math.floor(clock.now() / 1000)) - 100n + at++ },
          vms: vms.map((v) => ({
            id: v.id,
            state: v.state,
            ha: v.ha,
            vcpus: v.vcpus,
            memoryBytes: v.memoryBytes,
            nodeId: { id: node },
          })),
        }),
      );
    };
    await run({
      report,
      async migrate() {
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
          status: { state: "running", phase: "transferring" },
        } as const;
        assert.ok(await journal.begin(job, 0, AbortSignal.timeout(5000)));
        journal.disown(job.id);
        jobId = job.id;
        return job.id;
      },
      advance: (ms) => clock.advance(ms),
      cut: (node) => cut.add(node),
    });
    const starts: string[] = [];
    const fromReports = (node: string) =>
      ({
        info: async (id: string) => {
          const got = await inventory.getNode(node);
          if (cut.has(node) || got?.summary.readiness !== NodeReadiness.READY)
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
          if (cut.has(node)) throw new RpcError("BACKEND_UNAVAILABLE");
          starts.push(`${node}:${id}`);
        },
      }) as unknown as HypervisorDriver;
    const executors: Executors = {
      forNode: fromReports,
      destination: () => ({ nodeId: "", uri: "" }),
    };
    const settler = createMigrationSettler({
      store,
      inventory,
      executors,
      journal,
      runners: {
        id: "me",
        isAlive: async () => false,
        publishServing: () => {},
        close: async () => {},
      },
      clock,
      logger: silentLogger,
      // As the daemon's (cluster-runtime.ts).
      markLostRunning: (nodeId, vmId, reportMs = 0) =>
        noteSelfFenced(store, nodeId, vmId, reportMs),
    });
    const count = await settler.reconcile();
    const settled = (await journal.list()).find((j) => j.job.id === jobId)?.job;
    const rec = (await inventory.vmRecords.all()).get("v1")?.rec;
    if (after !== undefined)
      await afterwards(after, { store, inventory, executors, cut, starts, report });
    return { count, settled, rec, starts, inventory };
  } finally {
    inventory.close();
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Runs `after` over the settled world, with the failover controller's HA restore. */
async function afterwards(
  after: (w: Afterwards) => Promise<void>,
  world: {
    store: ReturnType<typeof createSqliteStore>;
    inventory: ReturnType<typeof createInventory>;
    executors: Executors;
    cut: Set<string>;
    starts: string[];
    report: Afterwards["report"];
  },
) {
  const { store, inventory, cut } = world;
  const restore = createHaRestore({
    store,
    executors: world.executors,
    elected: () => ({ key: "controllers/failover", modRevision: 0 }),
    restartLimit: 3,
    restartWindowMs: 3_600_000,
    decide: () => {},
  });
  try {
    await after({
      report: world.report,
      async pass() {
        const signal = AbortSignal.timeout(5000);
        for (const node of await inventory.listNodes(signal)) {
          if (node.readiness !== NodeReadiness.READY) continue;
          const nodeId = node.info?.id?.id ?? "";
          const report = { nodeId, reportMs: msFromTimestamp(node.health?.timestamp) };
          for (const vm of node.health?.vms ?? [])
            if (vm.ha) await restore.restore(report, vm, 2_000_000, signal);
        }
      },
      reachable: (node) => cut.delete(node),
      placed: async () => (await inventory.vmRecords.all()).get("v1")?.rec.nodeId,
      marked: async () =>
        (await getMessage(store, FailoverRecordSchema, "failover/v1"))?.message.lostRunning ===
        true,
      starts: world.starts,
    });
  } finally {
    restore.close();
  }
}

describe("settling a migration whose vm the target's report leaves out", () => {
  /**
   * Seen twice by the chaos test (seed 7): the runner (a daemon) was killed
   * right before the hand-over. The target reported the arrived VM while its
   * record still placed it on the source, whose last report still listed
   * it: the inventory kept the copy out of the target's report as a
   * conflict, and a stopped one stays one. Settling found the VM on neither
   * node, and left the migration RUNNING and its lock held for a minute,
   * then said "operator action needed"; an HA VM stayed down.
   */
  it("finds the vm that arrived on the target from its record, settles SUCCEEDED and places it there", async () => {
    const out = await settling(false, async (w) => {
      await w.report("src", [stopped]);
      await w.report("dst", []);
      await w.migrate();
      // The hand-over: dst reports the VM before src's next report drops it, then src does.
      await w.report("dst", [stopped]);
      await w.report("src", []);
      await w.report("dst", [stopped]);
    });
    assert.equal(out.count, 1);
    assert.equal(out.settled?.status.state, "succeeded", out.settled?.message);
    assert.match(out.settled?.message ?? "", /the vm is on dst/);
    assert.equal(out.rec?.nodeId, "dst");
    assert.deepEqual(out.rec?.staleCopies, [], "no conflict left");
  });

  /**
   * From the review of that rule: an OLD stale copy on the target (left by
   * an earlier failover, no cleanup sent yet) and a source that is only
   * NOT_READY (partitioned, the VM still running there). The copy must not
   * be taken: the migration rolls back, the placement stays on the source,
   * and nothing is started on the target.
   */
  for (const live of [true, false])
    it(`takes no old copy for the vm when the source cannot be asked (live: ${live})`, async () => {
      const out = await settling(live, async (w) => {
        await w.report("src", [running]);
        await w.report("dst", [stopped]);
        await w.migrate();
        w.advance(31_000);
        await w.report("dst", [stopped]);
      });
      assert.deepEqual(out.starts, [], "no start of the old copy");
      assert.equal(out.rec?.nodeId, "src", "the placement stays on the source");
      assert.equal(out.settled?.status.state, "failed", out.settled?.message);
    });
});

/**
 * Seen once in 8 chaos runs (seed 42): a live migration of an HA VM whose
 * runner was paused, and whose target's agent was killed after the
 * hand-over, was settled by another daemon as presumed arrived (the source
 * answered without the VM, the target could not be asked). The placement
 * moved to the target, nothing was started (taken to run there) and nothing
 * was left to HA restore. The target's node had been reset by its watchdog,
 * which stopped the VM; its agent came back before the node was seen
 * NOT_READY past the fence delay, so failover never acted either: the HA
 * VM ran on no node for good. Here dst stays READY (its reports within the
 * TTL) while its agent is gone; with src reporting first after the
 * hand-over, dst's last report claimed the placement and shows v1 running:
 * a report from before the loss, which says nothing of how it fared since.
 */
for (const first of ["dst", "src"] as const)
  describe(`settling a vm presumed arrived on a target that cannot be asked (${first} reported first)`, () => {
    /** The hand-over, then dst's agent gone; settled, then `after`. */
    const presumed = (ha: boolean, after: (w: Afterwards) => Promise<void>) =>
      settling(
        true,
        async (w) => {
          await w.report("src", [{ ...running, ha }]);
          await w.report("dst", []);
          await w.migrate();
          if (first === "dst") await w.report("dst", [{ ...running, ha }]);
          await w.report("src", []);
          if (first === "src") await w.report("dst", [{ ...running, ha }]);
          w.cut("dst");
        },
        after,
      );

    it("leaves an HA vm to HA restore: the target back with it stopped (reset) starts it there", async () => {
      const out = await presumed(true, async (w) => {
        assert.equal(await w.placed(), "dst");
        // A pass over dst's report from before the loss (the node still READY): nothing.
        await w.pass();
        assert.deepEqual(w.starts, []);
        // dst's agent is back; the node was reset meanwhile: v1 is stopped there.
        w.reachable("dst");
        await w.report("dst", [{ ...stopped, ha: true }]);
        await w.pass();
        assert.deepEqual(w.starts, ["dst:v1"], "started again where it is placed, once");
        assert.equal(await w.placed(), "dst");
      });
      assert.equal(out.settled?.status.state, "succeeded", out.settled?.message);
    });

    it("takes a report made after the loss that shows the HA vm running for a survivor: started nowhere", async () => {
      await presumed(true, async (w) => {
        assert.equal(await w.marked(), true, "marked lost running on dst");
        // dst was only briefly away: it reports v1 running, and keeps doing so.
        w.reachable("dst");
        await w.report("dst", [{ ...running, ha: true }]);
        await w.pass();
        assert.equal(await w.marked(), false, "it survived: the mark is cleared");
        await w.report("dst", [{ ...running, ha: true }]);
        await w.report("src", []);
        await w.pass();
        assert.deepEqual(w.starts, [], "not started again, here or elsewhere");
        assert.equal(await w.placed(), "dst");
      });
    });

    it("leaves a vm that is not HA as it was: placed on the target, started nowhere", async () => {
      const out = await presumed(false, async (w) => {
        assert.equal(await w.placed(), "dst");
        // Marked or not (no report may show whether it is HA: dst's copy was a conflict
        // until now), a mark is only acted on for a vm its node reports HA.
        w.reachable("dst");
        await w.report("dst", [stopped]);
        await w.pass();
        await w.report("dst", [stopped]);
        await w.pass();
        assert.deepEqual(w.starts, []);
        assert.equal(await w.placed(), "dst");
      });
      assert.equal(out.settled?.status.state, "succeeded", out.settled?.message);
    });
  });
