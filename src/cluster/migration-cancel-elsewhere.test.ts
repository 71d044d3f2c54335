import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, it } from "node:test";
import {
  adminContext,
  type ClusterHarness,
  manageVm,
  startClusterHarness,
} from "../../test/helpers/cluster-harness.js";
import { silentLogger } from "../core/index.js";
import { MigrationKind, MigrationState } from "../gen/debvisor/v1/migration_pb.js";
import { VmState } from "../gen/debvisor/v1/vm_pb.js";
import { createSqliteStore, type KvStore } from "../store/index.js";
import { createCancelRequests } from "./migration-cancel-requests.js";
import { createMigrationRecords } from "./migration-records.js";
import { createVmLifecycle } from "./vm-lifecycle.js";

/**
 * Two control-plane processes on one store and one set of nodes. A client
 * behind a load balancer cannot pick the process that runs a migration, and
 * while it runs the VM takes no start, stop or delete: found by review, a
 * live migration that did not converge could be neither cancelled nor
 * stopped through the other process until its hypervisor job timed out
 * (30 min by default).
 */
/** A live migration of `vmId` to node-02, begun by `h`'s process. */
const liveToNode02 = (h: ClusterHarness, vmId: string) =>
  h.runtime.engine.start({
    vmId,
    target: "node-02",
    allowDowntime: false,
    kind: MigrationKind.MIGRATE,
    requestedBy: "test-operator",
    tenant: undefined,
  });

describe("a migration cancelled through a process that does not run it", () => {
  let a: ClusterHarness;
  let b: ClusterHarness | undefined;
  /** Closed after the harnesses (a store the test made itself). */
  let after: (() => Promise<void>) | undefined;
  afterEach(async () => {
    await b?.close();
    await a.close();
    await after?.();
    after = undefined;
  });

  it("is cancelled by its runner, rolls back, and the VM takes a stop again", async () => {
    a = await startClusterHarness({ nodes: 2, vmsPerNode: 2, migrationMs: 2000 });
    b = await startClusterHarness({ nodes: 2, vmsPerNode: 2, store: a.store, sim: a.sim });
    const vm = (await a.inventory.getNode("node-01"))?.vms.find((v) => v.state === VmState.RUNNING);
    assert.ok(vm);
    await manageVm(a.store, vm, VmState.RUNNING);
    // A live migration by process a that stops progressing at 50% (a hung hypervisor job).
    a.sim.faults.holdMigration(vm.id, 50);
    const started = await liveToNode02(a, vm.id);
    const ctx = adminContext();
    const lifecycle = createVmLifecycle({ inventory: b.inventory, store: a.store, clock: b.clock });
    const stop = () =>
      lifecycle.stopVm({ vmId: vm.id, requestId: "", force: true, timeoutMs: 0 } as never, ctx);
    await assert.rejects(stop(), { reason: "MIGRATION_IN_PROGRESS" });

    const cancelled = await b.runtime.engine.cancel(started.migrationId, undefined);
    assert.equal(cancelled.state, MigrationState.CANCELLED, cancelled.message);
    assert.deepEqual(
      [a.sim.locate(vm.id)?.nodeId, a.sim.locate(vm.id)?.state],
      ["node-01", "running"],
      "rolled back: still running on its source",
    );
    assert.equal(await createMigrationRecords(a.store).locked(vm.id), false, "lock released");
    const op = await stop();
    assert.equal(op.nodeId?.id, "node-01");
    // Cancelling it again, through either process, says it is over.
    await assert.rejects(b.runtime.engine.cancel(started.migrationId, undefined), {
      reason: "MIGRATION_FINISHED",
    });
  });

  it("is refused at once when nothing would act on the request: a failover, or a migration whose process is gone", async () => {
    a = await startClusterHarness({ nodes: 3, vmsPerNode: 2 });
    b = undefined;
    const vm = (await a.inventory.getNode("node-01"))?.vms[0];
    assert.ok(vm);
    // A failover run by a live process (a runner key, as registered), a migration by a dead one.
    await a.store.put("runners/runner-alive", new TextEncoder().encode("x"));
    const { journal } = a.runtime.failover;
    const orphan = async (kind: "failover" | "migrate", vmId: string) => {
      const job = {
        ...journal.newJob({
          vm: { ...vm, id: vmId },
          source: "node-01",
          target: kind === "failover" ? "node-02" : "node-03",
          live: false,
          allowDowntime: true,
          kind,
          requestedBy: "operator",
        }),
        runner: kind === "failover" ? "runner-alive" : "runner-gone",
        status: { state: "running", phase: "transferring" },
      } as const;
      assert.ok(await journal.begin(job, 0, AbortSignal.timeout(5000)));
      journal.disown(job.id);
      return job.id;
    };
    const started = Date.now();
    await assert.rejects(a.runtime.engine.cancel(await orphan("failover", "vm-x"), undefined), {
      reason: "MIGRATION_IN_PROGRESS",
      message: "a failover cannot be cancelled",
    });
    await assert.rejects(a.runtime.engine.cancel(await orphan("migrate", "vm-y"), undefined), {
      reason: "MIGRATION_IN_PROGRESS",
      message: /process that ran this migration is gone/,
    });
    assert.ok(Date.now() - started < 5000, "answered at once, not after the 30 s wait");
  });

  it("does not keep a runner's inventory move from happening when it lands just after the hand-over", async () => {
    // Found by review: the flag changed the record's revision, which the runner's move of the
    // nodes' lists compares as its ownership; every attempt failed, and the lists stayed on
    // the source until the next heartbeat.
    const dir = mkdtempSync(join(tmpdir(), "dv-cancel-move-"));
    const raw = createSqliteStore({ path: join(dir, "state.db"), logger: silentLogger });
    const cancels = createCancelRequests(raw);
    let migrationId = "";
    let injected = 0;
    const store: KvStore = Object.assign(Object.create(raw) as KvStore, {
      txn: async (...args: Parameters<KvStore["txn"]>) => {
        const [req] = args;
        const moves = req.success.some((op) => op.type === "put" && op.key.startsWith("vms/"));
        const guarded = req.compares.some((c) => c.key === `migrations/${migrationId}`);
        if (migrationId !== "" && moves && guarded && injected === 0) {
          injected++;
          assert.equal(await cancels.request(migrationId), true);
        }
        return raw.txn(...args);
      },
    });
    after = () => raw.close();
    a = await startClusterHarness({ nodes: 2, vmsPerNode: 2, store, dir });
    b = undefined;
    const vm = (await a.inventory.getNode("node-01"))?.vms.find((v) => v.state === VmState.RUNNING);
    assert.ok(vm);
    const started = await liveToNode02(a, vm.id);
    migrationId = started.migrationId;
    const done = await a.runtime.engine.wait(migrationId, AbortSignal.timeout(10_000));
    assert.equal(injected, 1, "the cancel landed between the hand-over and the move");
    assert.equal(done.state, MigrationState.SUCCEEDED, "past the hand-over, it finishes");
    const lists = async (node: string) =>
      (await a.inventory.getNode(node))?.vms.some((v) => v.id === vm.id);
    assert.deepEqual([await lists("node-01"), await lists("node-02")], [false, true]);
  });
});
