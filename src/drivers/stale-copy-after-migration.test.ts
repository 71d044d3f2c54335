import assert from "node:assert/strict";
import { join } from "node:path";
import { describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { create } from "@bufbuild/protobuf";
import { sharedSimNodes } from "../../test/helpers/shared-sim-nodes.js";
import { silentLogger } from "../core/index.js";
import {
  OperationDispatchSchema,
  OperationKind,
  OperationOutcome,
  type OperationResult,
} from "../gen/debvisor/v1/agent_pb.js";
import { openCopyGenerations } from "./copy-generations.js";
import { createOperationExecutor } from "./operation-executor.js";
import { createMemoryJournal } from "./operation-journal.js";
import { lockNamesOf, openSimulatedDiskLocks } from "./simulated-disk-locks.js";

/** Waits until `done` (an operation's result came), for at most 15 s: the assertions after it say what was not. */
async function arrived(done: () => boolean): Promise<void> {
  const until = Date.now() + 15_000;
  while (!done() && Date.now() < until) await sleep(20);
}

/**
 * A stale-copy removal decided while node-x held a stale copy (the VM placed
 * on node-p under generation 5) reaches node-x late: meanwhile the VM was
 * migrated from node-p to node-x (its record now at 6, placed on node-x).
 * node-x's agent has no generation recorded for the copy that migrated in
 * (no operation runs there for a migrate-in), so by the numbers the
 * removal's 5 is newer than its copy's 0; but the copy runs and holds its
 * disks, so no start elsewhere took them: it is the VM, and stays.
 */
describe("a stale-copy removal that lands after the VM migrated in", () => {
  it("leaves the copy that migrated in running: it holds its disks", async () => {
    const nodes = sharedSimNodes("dv-stale-migrate-");
    const root = nodes.root;
    const sig = AbortSignal.timeout(20_000);
    const open = (nodeId: string, vms: number) => nodes.open(nodeId, vms, { migrationMs: 100 });
    const p = open("node-p", 1);
    const x = open("node-x", 0);
    try {
      const results = new Map<string, OperationResult>();
      const copies = openCopyGenerations(join(root, "node-x"));
      const executor = createOperationExecutor({
        driver: x.driver,
        journal: createMemoryJournal(),
        logger: silentLogger,
        signal: new AbortController().signal,
        copies,
        send: (m) => {
          if (m.kind?.case === "result") {
            const r = m.kind.value as OperationResult;
            results.set(r.operationId, r);
          }
        },
      });
      const vmId = (await p.driver.list(sig))[0]?.id ?? "";
      await p.driver.migrate(
        vmId,
        { nodeId: "node-x", uri: x.migrationUri },
        { live: true, signal: sig },
      );
      assert.equal((await x.driver.info(vmId, sig))?.state, "running");
      executor.dispatch(
        create(OperationDispatchSchema, {
          operationId: "late-removal",
          kind: OperationKind.REMOVE_STALE_COPY,
          vmId,
          generation: 5n,
        }),
      );
      const removal = async (id: string) => {
        executor.dispatch(
          create(OperationDispatchSchema, {
            operationId: id,
            kind: OperationKind.REMOVE_STALE_COPY,
            vmId,
            generation: 5n,
          }),
        );
        await arrived(() => results.has(id));
        return results.get(id);
      };
      await arrived(() => results.has("late-removal"));
      assert.equal(results.get("late-removal")?.outcome, OperationOutcome.FAILED);
      assert.equal(results.get("late-removal")?.reason, "COPY_NOT_STALE");
      assert.equal((await x.driver.info(vmId, sig))?.state, "running");
      // Stopped at its placement since: still no generation here, still holding its disks: kept.
      await x.driver.stop(vmId, { force: true, signal: sig });
      assert.equal((await removal("late-removal-2"))?.reason, "COPY_NOT_STALE");
      assert.equal((await x.driver.info(vmId, sig))?.state, "stopped");
      // A stopped copy started here under an older generation (4) goes, and frees the disks.
      copies.started(vmId, 4n);
      assert.equal((await removal("removal-3"))?.outcome, OperationOutcome.SUCCEEDED);
      assert.equal(await x.driver.info(vmId, sig), undefined);
      const locks = openSimulatedDiskLocks(join(root, "shared-storage"));
      try {
        const disks = lockNamesOf(locks.definition(vmId) ?? assert.fail("no definition"));
        for (const disk of disks)
          assert.deepEqual(locks.lock(disk), { disk, owner: "", generation: 5n });
      } finally {
        locks.close();
      }
    } finally {
      p.close();
      x.close();
    }
  });
});

/**
 * The same late removal when node-x had a generation recorded for the VM
 * from before: it ran there under 4, was failed over to node-p under 5
 * (node-x's copy fenced, a removal under 5 decided and held on its way),
 * then moved back to node-x stopped (an offline migration, its record now
 * at 6, placed on node-x). The copy that migrated in holds its disks under
 * 5, taken by node-p's start, not under the 4 recorded here: it is not a
 * copy started here under an older generation, it is the VM.
 */
describe("a stale-copy removal that lands after the VM moved back in stopped", () => {
  it("leaves the copy that migrated in: its disks' locks are newer than the generation recorded here", async () => {
    const nodes = sharedSimNodes("dv-stale-back-");
    const root = nodes.root;
    const sig = AbortSignal.timeout(20_000);
    const open = (nodeId: string, vms: number) => nodes.open(nodeId, vms, { migrationMs: 100 });
    const x = open("node-x", 1);
    const p = open("node-p", 0);
    try {
      const results = new Map<string, OperationResult>();
      const executor = createOperationExecutor({
        driver: x.driver,
        journal: createMemoryJournal(),
        logger: silentLogger,
        signal: new AbortController().signal,
        copies: openCopyGenerations(join(root, "node-x")),
        send: (m) => {
          if (m.kind?.case === "result") {
            const r = m.kind.value as OperationResult;
            results.set(r.operationId, r);
          }
        },
      });
      const run = async (id: string, kind: OperationKind, generation: bigint) => {
        executor.dispatch(
          create(OperationDispatchSchema, { operationId: id, kind, vmId, generation }),
        );
        await arrived(() => results.has(id));
        return results.get(id);
      };
      const vmId = (await x.driver.list(sig))[0]?.id ?? "";
      await x.driver.stop(vmId, { force: true, signal: sig });
      // Started on node-x under 4: recorded there.
      assert.equal(
        (await run("start", OperationKind.START_VM, 4n))?.outcome,
        OperationOutcome.SUCCEEDED,
      );
      // Failed over to node-p under 5: node-x's copy loses its disks and stops.
      type Recovering = {
        recover(v: string, f: string, s: AbortSignal, o: { generation: bigint }): Promise<void>;
      };
      await (p.driver as unknown as Recovering).recover(vmId, "node-x", sig, { generation: 5n });
      assert.equal((await x.driver.info(vmId, sig))?.state, "stopped");
      // Stopped at node-p and moved back to node-x offline (placed there under 6).
      await p.driver.stop(vmId, { force: true, signal: sig });
      await p.driver.migrate(
        vmId,
        { nodeId: "node-x", uri: x.migrationUri },
        { live: false, signal: sig },
      );
      assert.equal(await p.driver.info(vmId, sig), undefined);
      assert.equal((await x.driver.info(vmId, sig))?.state, "stopped");
      // The removal decided under 5, while node-x's copy was stale, lands now.
      const late = await run("late-removal", OperationKind.REMOVE_STALE_COPY, 5n);
      assert.equal(late?.reason, "COPY_NOT_STALE", "the VM at its placement is not removed");
      assert.equal((await x.driver.info(vmId, sig))?.state, "stopped");
      // And it starts there under its generation.
      assert.equal(
        (await run("start-6", OperationKind.START_VM, 6n))?.outcome,
        OperationOutcome.SUCCEEDED,
      );
      assert.equal((await x.driver.info(vmId, sig))?.state, "running");
    } finally {
      p.close();
      x.close();
    }
  });
});
