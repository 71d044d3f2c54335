import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, it } from "node:test";
import { create, toBinary } from "@bufbuild/protobuf";
import { createMigrationRecords } from "../src/cluster/index.js";
import { silentLogger, toRpcError } from "../src/core/index.js";
import {
  type MigrationRecord,
  MigrationRecordSchema,
  Untold,
} from "../src/gen/debvisor/store/v1/records_pb.js";
import {
  MigrationPhase,
  MigrationSchema,
  MigrationState,
} from "../src/gen/debvisor/v1/migration_pb.js";
import { VmState } from "../src/gen/debvisor/v1/vm_pb.js";
import { createSqliteStore } from "../src/store/index.js";
import {
  type ClusterHarness,
  onRbd,
  pickVm,
  startClusterHarness,
} from "./helpers/cluster-harness.js";
import { eventually } from "./helpers/eventually.js";

const enc = (r: MigrationRecord) => toBinary(MigrationRecordSchema, r);
const withId = (r: MigrationRecord, id: string) => {
  const m = create(MigrationSchema, r.migration ?? {});
  m.migrationId = id;
  return create(MigrationRecordSchema, { ...r, migration: m });
};

describe("settling an orphaned migration from the truth", () => {
  let h: ClusterHarness;
  afterEach(() => h.close());

  it("V3: a paused runner's migration is not settled while the hypervisor job runs; once it completes the record says SUCCEEDED", async () => {
    h = await startClusterHarness({ nodes: 3, vmsPerNode: 4, migrationMs: 2500 });
    const { vm, source, target, orphan } = await orphanedMigration(h, "preparing");
    const driver = h.sim.driver(source);
    assert.ok(driver);
    const hvJob = driver.migrate(
      vm.id,
      { nodeId: target, uri: "" },
      { live: true, signal: AbortSignal.timeout(30_000) },
    );

    // The other daemon reconciles while the job runs: nothing is settled.
    await h.runtime.engine.reconcile();
    const during = await h.runtime.engine.get(orphan.id, undefined);
    assert.equal(during.state, MigrationState.RUNNING, during.message);
    assert.equal(h.sim.locate(vm.id)?.nodeId, source, "the job is still running");

    await hvJob;
    assert.equal(h.sim.locate(vm.id)?.nodeId, target);
    await h.runtime.engine.reconcile();
    const after = await h.runtime.engine.get(orphan.id, undefined);
    assert.equal(after.state, MigrationState.SUCCEEDED, after.message);
    // The lock is released: the vm can move again.
    const plan = await h.runtime.engine.plan(
      { vmId: vm.id, tenant: undefined, allowDowntime: false, target: source },
      AbortSignal.timeout(5000),
    );
    assert.ok(
      plan.checks.find((c) => c.name === "no_migration_in_flight")?.passed,
      "lock released",
    );
  });

  it("a paused runner's migration whose hypervisor job hangs is aborted by the successor after the bound: FAILED/ROLLED_BACK, the vm runs only on its source, no lock or reservation left", async () => {
    const boundMs = 60_000;
    h = await startClusterHarness({
      nodes: 3,
      vmsPerNode: 4,
      migrationMs: 2500,
      settleJobTimeoutMs: boundMs,
    });
    const { vm, source, target, orphan } = await orphanedMigration(h, "transferring");
    const records = createMigrationRecords(h.store);
    assert.ok((await records.reserved()).byNode.has(target), "the orphan holds room on the target");

    // The job the stalled runner started hangs at 50 % (a hypervisor that stopped progressing).
    h.sim.faults.holdMigration(vm.id, 50);
    const driver = h.sim.driver(source);
    assert.ok(driver);
    let reached!: () => void;
    const held = new Promise<void>((resolve) => {
      reached = resolve;
    });
    const hvJob = driver
      .migrate(
        vm.id,
        { nodeId: target, uri: "" },
        {
          live: true,
          signal: AbortSignal.timeout(30_000),
          onProgress: (p) => {
            if (p.percent >= 50) reached();
          },
        },
      )
      .then(
        () => "completed",
        (err: unknown) => toRpcError(err).reason,
      );
    await held;

    // Within the bound the successor waits: nothing is decided, nothing released.
    assert.equal(await h.runtime.engine.reconcile(), 0);
    h.clock.advance(boundMs - 1000);
    assert.equal(await h.runtime.engine.reconcile(), 0);
    const during = await h.runtime.engine.get(orphan.id, undefined);
    assert.equal(during.state, MigrationState.RUNNING, during.message);
    assert.equal(await records.locked(vm.id), true);
    assert.equal((await driver.info(vm.id, AbortSignal.timeout(5000)))?.migrating, true);

    // Past it, the successor aborts the job, and only then settles.
    h.clock.advance(2000);
    assert.equal(await h.runtime.engine.reconcile(), 1);
    assert.equal(await hvJob, "CANCELLED", "the hypervisor job was aborted");
    const after = await h.runtime.engine.get(orphan.id, undefined);
    assert.equal(after.state, MigrationState.FAILED, after.message);
    assert.equal(after.phase, MigrationPhase.ROLLED_BACK, after.message);
    assert.match(after.message, new RegExp(`rolled back, the vm stays on ${source}`));
    assert.deepEqual(h.sim.locate(vm.id), { nodeId: source, state: "running" });
    assert.equal(await h.sim.driver(target)?.info(vm.id, AbortSignal.timeout(5000)), undefined);
    assert.equal(await records.locked(vm.id), false, "lock released");
    assert.equal((await records.reserved()).byNode.has(target), false, "reservation released");
    assert.deepEqual(h.sim.violations(), []);
  });
});

describe("a settle's audit record, told at least once", () => {
  let h: ClusterHarness;
  let peer: ClusterHarness | undefined;
  afterEach(async () => {
    await peer?.close();
    peer = undefined;
    await h.close();
  });

  it("a settle the trail refused stays marked, and a later pass tells it once and clears the mark", async () => {
    const told: string[] = [];
    let refusals = 0;
    h = await startClusterHarness({
      nodes: 3,
      vmsPerNode: 4,
      onSettled: (m) => {
        // The trail refuses the first record (full, or its disk failing).
        if (refusals++ === 0) throw new Error("the trail refused the record");
        told.push(m.migrationId);
      },
    });
    const { orphan } = await orphanedMigration(h, "preparing");
    const records = createMigrationRecords(h.store);
    assert.equal(await h.runtime.engine.reconcile(), 1);
    const settled = await records.get(orphan.id);
    assert.equal(settled?.migration?.state, MigrationState.FAILED, settled?.migration?.message);
    assert.equal(refusals, 1, "the settle was told once, and refused");
    assert.deepEqual(told, []);

    // Later passes (the daemon's timer, and these) tell it, once.
    await eventually(
      async () => {
        await h.runtime.engine.reconcile();
        assert.deepEqual(told, [orphan.id]);
      },
      { timeoutMs: 15_000 },
    );
    // Cleared once the trail took it (just after).
    await eventually(async () =>
      assert.equal(
        (await records.get(orphan.id))?.untold,
        Untold.UNSPECIFIED,
        "the mark is cleared",
      ),
    );
    for (let i = 0; i < 3; i++) await h.runtime.engine.reconcile();
    assert.deepEqual(told, [orphan.id], "told once, not again");
  });

  it("a settle whose trail hung is not told by other daemons while its process lives, and is told by one once that process is gone", async () => {
    let release!: () => void;
    const hung = new Promise<void>((resolve) => {
      release = resolve;
    });
    const dir = mkdtempSync(join(tmpdir(), "dv-settle-tell-"));
    const store = createSqliteStore({ path: join(dir, "state.db"), logger: silentLogger });
    const first: string[] = [];
    h = await startClusterHarness({
      nodes: 3,
      vmsPerNode: 4,
      store,
      onSettled: async (m) => {
        first.push(m.migrationId);
        await hung;
      },
    });
    const told: string[] = [];
    peer = await startClusterHarness({
      store,
      sim: h.sim,
      clock: h.clock,
      onSettled: (m) => {
        told.push(m.migrationId);
      },
    });
    const other = peer;
    try {
      const { orphan } = await orphanedMigration(h, "preparing");
      const records = createMigrationRecords(store);
      void h.runtime.engine.reconcile();
      await eventually(async () => {
        const rec = await records.get(orphan.id);
        assert.equal(rec?.migration?.state, MigrationState.FAILED);
        assert.equal(rec?.untold, Untold.SETTLED, "settled, marked untold");
        assert.deepEqual(first, [orphan.id]);
      });

      // A slow trail is not a lost record: neither its own passes nor another daemon's
      // tell it again while the process telling it lives.
      for (let i = 0; i < 4; i++) {
        await h.runtime.engine.reconcile();
        await other.runtime.engine.reconcile();
      }
      assert.deepEqual(first, [orphan.id], "not told again by the process telling it");
      assert.deepEqual(told, [], "not told by another daemon while its process lives");

      // That process is gone (its runner key with it): the other daemon tells it.
      await h.close();
      h = other;
      peer = undefined;
      await eventually(
        async () => {
          await other.runtime.engine.reconcile();
          assert.deepEqual(told, [orphan.id]);
        },
        { timeoutMs: 15_000 },
      );
      await eventually(async () =>
        assert.equal((await records.get(orphan.id))?.untold, Untold.UNSPECIFIED),
      );
    } finally {
      release();
      await peer?.close();
      peer = undefined;
      await h.close();
      await store.close();
      h = { close: async () => {} } as ClusterHarness;
    }
  });

  it("a trail that hangs does not stop its daemon settling", async () => {
    let calls = 0;
    h = await startClusterHarness({
      nodes: 3,
      vmsPerNode: 4,
      onSettled: () => {
        // Refused once (left marked, told again by a pass), then hung for good.
        if (calls++ === 0) throw new Error("the trail refused the record");
        return new Promise<void>(() => {});
      },
    });
    const first = await orphanedMigration(h, "preparing");
    assert.equal(await h.runtime.engine.reconcile(), 1);
    await eventually(
      async () => {
        await h.runtime.engine.reconcile();
        assert.ok(calls >= 2, "told again, and hung");
      },
      { timeoutMs: 15_000 },
    );
    const second = await orphanedMigration(h, "preparing");
    await eventually(async () => {
      await h.runtime.engine.reconcile();
      const m = await h.runtime.engine.get(second.orphan.id, undefined);
      assert.equal(m.state, MigrationState.FAILED, m.message);
    });
    assert.notEqual(first.orphan.id, second.orphan.id);
  });

  it("pruning keeps a finished record whose settle is untold", async () => {
    // A trail that refuses every record: the mark stays, whatever the passes do.
    h = await startClusterHarness({
      nodes: 3,
      vmsPerNode: 4,
      onSettled: () => {
        throw new Error("the trail refused the record");
      },
    });
    const records = createMigrationRecords(h.store);
    // The oldest finished record (ids sort by time), marked untold.
    const { orphan } = await orphanedMigration(h, "preparing");
    const marked = await records.get(orphan.id);
    assert.ok(marked?.migration);
    const failed = (r: MigrationRecord, untold = false) => {
      const m = create(MigrationSchema, r.migration ?? {});
      m.state = MigrationState.FAILED;
      return create(MigrationRecordSchema, {
        ...r,
        untold: untold ? Untold.SETTLED : Untold.UNSPECIFIED,
        migration: m,
      });
    };
    await h.store.put(`migrations/${orphan.id}`, enc(failed(marked, true)));
    // 2,000 finished records are kept, older ones pruned once per 50 finishes: 2,100
    // newer finished ones, then 50 finishes.
    for (let i = 0; i < 2100; i++) {
      const id = `m-zzzzzzzzz-a${String(i).padStart(4, "0")}`;
      await h.store.put(`migrations/${id}`, enc(failed(withId(marked, id))));
    }
    for (let i = 0; i < 50; i++) {
      const id = `m-zzzzzzzzz-b${String(i).padStart(4, "0")}`;
      const running = withId(marked, id);
      await h.store.put(`migrations/${id}`, enc(running));
      await records.finish(failed(running));
    }
    assert.equal(
      (await records.get(`m-zzzzzzzzz-a0000`))?.migration?.migrationId,
      undefined,
      "older finished records were pruned",
    );
    assert.equal((await records.get(orphan.id))?.untold, Untold.SETTLED, "kept for its tell");
  });
});

/**
 * A runner that started a live migration and then stalled: its record
 * names it, its runner key is gone (lease lost while paused), and the job
 * it started on the hypervisor (the caller's) goes on without it.
 */
describe("settling an orphaned migration whose vm neither node shows", () => {
  let h: ClusterHarness;
  afterEach(() => h.close());

  it("asks again while a hand-over may be in flight, settles SUCCEEDED once the target has it, and says 'found on neither' only after the wait", async () => {
    h = await startClusterHarness({ nodes: 3, vmsPerNode: 4, migrationMs: 50 });
    const { vm, source, target, orphan } = await orphanedMigration(h, "transferring");
    const elsewhere = ["node-01", "node-02", "node-03"].find((n) => n !== source && n !== target);
    assert.ok(elsewhere);
    const move = (from: string, to: string) =>
      h.sim
        .driver(from)
        ?.migrate(
          vm.id,
          { nodeId: to, uri: "" },
          { live: true, signal: AbortSignal.timeout(10_000) },
        );
    // Out of sight of both nodes (as a simulated hand-over in flight is).
    await move(source, elsewhere);
    await h.runtime.engine.reconcile();
    let now = await h.runtime.engine.get(orphan.id, undefined);
    assert.equal(now.state, MigrationState.RUNNING, `not settled yet: ${now.message}`);
    // The hand-over lands on the target: settled from that.
    await move(elsewhere, target);
    h.clock.advance(30_000);
    await h.runtime.engine.reconcile();
    now = await h.runtime.engine.get(orphan.id, undefined);
    assert.equal(now.state, MigrationState.SUCCEEDED, now.message);
    assert.equal(h.sim.locate(vm.id)?.nodeId, target);

    // A live migration whose vm arrived stopped (its source fenced it mid-transfer) is
    // settled with the vm started on the target: a live migration promised a running vm.
    const third = await orphanedMigration(h, "transferring");
    await h.sim
      .driver(third.source)
      ?.migrate(
        third.vm.id,
        { nodeId: third.target, uri: "" },
        { live: true, signal: AbortSignal.timeout(10_000) },
      );
    await h.sim
      .driver(third.target)
      ?.stop(third.vm.id, { force: true, signal: AbortSignal.timeout(5000) });
    await h.runtime.engine.reconcile();
    const settledThird = await h.runtime.engine.get(third.orphan.id, undefined);
    assert.equal(settledThird.state, MigrationState.SUCCEEDED, settledThird.message);
    assert.deepEqual(h.sim.locate(third.vm.id), { nodeId: third.target, state: "running" });

    // Another orphan whose vm stays out of sight: after the wait the record says so.
    const second = await orphanedMigration(h, "transferring");
    const away = ["node-01", "node-02", "node-03"].find(
      (n) => n !== second.source && n !== second.target,
    );
    assert.ok(away);
    await h.sim
      .driver(second.source)
      ?.migrate(
        second.vm.id,
        { nodeId: away, uri: "" },
        { live: true, signal: AbortSignal.timeout(10_000) },
      );
    await h.runtime.engine.reconcile();
    assert.equal(
      (await h.runtime.engine.get(second.orphan.id, undefined)).state,
      MigrationState.RUNNING,
    );
    h.clock.advance(61_000);
    await h.runtime.engine.reconcile();
    const last = await h.runtime.engine.get(second.orphan.id, undefined);
    assert.equal(last.state, MigrationState.FAILED);
    assert.match(last.message, /found on neither/);
  });
});

async function orphanedMigration(h: ClusterHarness, phase: "preparing" | "transferring") {
  const vm = await pickVm(
    h.inventory,
    (v) =>
      onRbd(v) && v.liveMigratable && v.cpuModel === "host-model" && v.state === VmState.RUNNING,
  );
  const source = vm.nodeId?.id ?? "";
  const target = source === "node-02" ? "node-03" : "node-02";
  const { journal } = h.runtime.failover;
  const orphan = {
    ...journal.newJob({
      vm,
      source,
      target,
      live: true,
      allowDowntime: false,
      kind: "migrate",
      requestedBy: "operator",
    }),
    runner: "runner-paused",
    status: { state: "running", phase },
  } as const;
  assert.ok(await journal.begin(orphan, 0, AbortSignal.timeout(5000)));
  // Written as the stalled process did: not this one's to run.
  journal.disown(orphan.id);
  return { vm, source, target, orphan };
}
